"""Real servers on loopback: a registry with a tiny champion (v1, the base) and a LoRA challenger (v2),
and the gateway started with uvicorn on a free port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, Lineage
from lifecycle.status import VersionStatus
from serving.server import BackgroundServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def slm_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("slm-home")
    old = os.environ.get("SLM_HOME")
    os.environ["SLM_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("SLM_HOME", None)
    else:
        os.environ["SLM_HOME"] = old


@pytest.fixture(scope="module")
def tiny_registry(slm_home, tiny_base_model, tiny_drifted_pairs, tiny_before_pairs, tmp_path_factory):
    """v1: the tiny base, champion. v2: a LoRA adapter on it, candidate."""
    from registry.service import open_registry
    from training.lora import LoraRecipe, train_lora

    base_dir, _info = tiny_base_model
    with open_registry() as reg:
        uri, revision = reg.artifacts.put_base("tiny", base_dir)
        lineage = Lineage(base_model=BaseModelRef(model_id=uri, revision=revision), prompt_format=INTENT_V1.identity)
        v1 = reg.register("intent-router", staged=None, status=VersionStatus.CANDIDATE, reason="test base",
                          actor="test", lineage=lineage, evals=[], task="banking77")
        reg.store.promote("intent-router", v1.number, actor="test", reason="test champion")
        adapter = tmp_path_factory.mktemp("adapter") / "a"
        recipe = LoraRecipe(r=4, alpha=8, max_steps=30, batch_size=16, log_every=5)
        train_lora(reg.base_dir(v1), tiny_drifted_pairs + tiny_before_pairs[:50], recipe, adapter, threads=1)
        reg.register("intent-router", staged=adapter, status=VersionStatus.CANDIDATE, reason="test adapter",
                     actor="test", lineage=lineage.model_copy(update={"parent": "intent-router:v1"}), evals=[],
                     task="banking77")
    return slm_home


class RunningGateway(BackgroundServer):
    def __init__(self, app, state):
        super().__init__(app)
        self.state = state


def start_gateway(**overrides) -> RunningGateway:
    from serving.app import build_app, load_serve_config

    config = load_serve_config(REPO / "configs/serve.yaml").model_copy(update=overrides)
    app, state = build_app(config)
    return RunningGateway(app, state)


@pytest.fixture
def launch_gateway(tiny_registry):
    return start_gateway


@pytest.fixture(scope="module")
def gateway(tiny_registry):
    os.environ["SLM_ADMIN_TOKEN"] = "admin-secret-for-tests"
    try:
        with start_gateway(max_wait_ms=2.0, split_poll_s=0.1, price_per_hour=3.6) as running:
            yield running
    finally:
        os.environ.pop("SLM_ADMIN_TOKEN", None)
