"""Assemble a gateway from the registry and a serve config: the one place the pieces are chosen."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from lifecycle.config import load_yaml_config
from lifecycle.pii import redact_pii
from lifecycle.prompting import format_by_identity
from lifecycle.records import ModelVersion
from lifecycle.settings import project_root
from lifecycle.task import load_task
from registry.predictions import PredictionStore, PredictionWriter
from registry.service import Registry, open_registry
from serving.batcher import MicroBatcher
from serving.config import ServeConfig
from serving.gateway import create_app
from serving.guardrails import Guardrails
from serving.live import LiveModel
from serving.loader import open_backend
from serving.resilience import CircuitBreakers
from serving.state import GatewayState
from serving.upstream import UpstreamBackend


def load_serve_config(path: Path | None = None) -> ServeConfig:
    root = project_root()
    config = load_yaml_config(ServeConfig, path or root / "configs/serve.yaml")
    task = config.task if config.task.is_absolute() else root / config.task
    return config.model_copy(update={"task": task})


def build_state(config: ServeConfig, registry: Registry | None = None) -> GatewayState:
    """Open the registry, load the champion's base and the split's versions, start the workers.

    Secrets are read here, at the edge: ``SLM_ADMIN_TOKEN`` enables the admin API, ``SLM_API_KEYS``
    (comma-separated) turns on API keys for ``/v1``.
    """
    registry = registry or open_registry()
    champion = registry.get(f"{config.model}:champion")
    backend = _backend(config, registry, champion)
    store = PredictionStore(registry.store.engine, store_text=config.store_text)
    keys = frozenset(k.strip() for k in os.environ.get("SLM_API_KEYS", "").split(",") if k.strip())
    state = GatewayState(
        config=config, registry=registry, live=LiveModel(registry, config.model, backend, config.split_poll_s),
        batcher=MicroBatcher(backend.generate, max_batch=config.max_batch, max_wait_s=config.max_wait_ms / 1000,
                             rejoin_share=config.rejoin_share, rejoin_max_s=config.rejoin_max_ms / 1000,
                             rejoin_gap_s=config.rejoin_gap_ms / 1000),
        # put_timeout_s=0: called on the event loop, a full queue (the database down for minutes) must drop and
        # count the row at once, never stall every request (and the health probes) for the writer's wait.
        writer=PredictionWriter(store, store_text=config.store_text, put_timeout_s=0,
                                redact_prompt=redact_pii if config.log_prompt_pii == "redact" else None),
        predictions=store,
        guardrails=Guardrails(config.guardrails),
        breakers=CircuitBreakers("upstream" if config.upstream else "in-process",
                                 failure_threshold=config.breaker_failures, reset_after_s=config.breaker_reset_s),
        allowed=frozenset(load_task(config.task, project_root()).labels),
        admin_token=os.environ.get("SLM_ADMIN_TOKEN") or None, api_keys=keys)
    state.batcher.on_batch = state.account_batch
    return state


def _backend(config: ServeConfig, registry: Registry, champion: ModelVersion):
    if config.upstream is None:
        return open_backend(registry, champion, threads=config.torch_threads)
    key_env = config.upstream.api_key_env
    return UpstreamBackend(config.upstream, format_by_identity(champion.prompt_format),
                           api_key=os.environ.get(key_env) if key_env else None,
                           shadow_workers=config.shadow_max_in_flight)


def build_app(config: ServeConfig, registry: Registry | None = None) -> tuple[FastAPI, GatewayState]:
    state = build_state(config, registry)
    return create_app(state), state
