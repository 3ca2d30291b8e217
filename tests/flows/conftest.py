"""Flows run under the session's Prefect test harness (tests/conftest.py), with their own SLM_HOME and tiny configs."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def slm_project(tmp_path_factory, prefect_harness, write_tiny_configs):
    """SLM_HOME and tiny configs: a 1-layer base model and a short LoRA, so a flow runs in seconds."""
    root = tmp_path_factory.mktemp("slm")
    old = os.environ.get("SLM_HOME")
    os.environ["SLM_HOME"] = str(root / "home")
    configs = write_tiny_configs(root / "configs", model="router")
    yield configs
    if old is None:
        os.environ.pop("SLM_HOME", None)
    else:
        os.environ["SLM_HOME"] = old


def ask_gateway(config, prompt: str, timeout: float = 60.0):
    """One completion through a gateway of ``config`` on loopback (its registry closed afterwards): the response."""
    import httpx

    from serving.app import build_app
    from serving.server import BackgroundServer

    app, state = build_app(config)
    try:
        with BackgroundServer(app) as gateway:
            return httpx.post(f"{gateway.url}/v1/completions", json={"model": config.model, "prompt": prompt},
                              timeout=timeout)
    finally:
        state.registry.close()
