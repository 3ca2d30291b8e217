"""``SLM_ARTIFACT_STORE=hub`` chosen by the settings, and the gateway serving the champion it downloads from the Hub
(the Hub TEST DOUBLE on loopback)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from lifecycle.settings import Settings
from registry import operations
from registry.hub import HubArtifactStore
from registry.service import open_registry
from serving.server import BackgroundServer

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def test_the_hub_store_needs_a_namespace(monkeypatch):
    monkeypatch.setenv("SLM_ARTIFACT_STORE", "hub")
    monkeypatch.delenv("SLM_HUB_NAMESPACE", raising=False)
    with pytest.raises(ValidationError, match="SLM_HUB_NAMESPACE"):
        Settings()


def test_the_gateway_serves_the_champion_from_the_hub(hub, kit, hub_adapters, tiny_base_model, tiny_before_pairs,
                                                      tmp_path, monkeypatch):
    from serving.app import build_app, load_serve_config

    home = tmp_path / "home"
    for name, value in {"SLM_HOME": str(home), "SLM_ARTIFACT_STORE": "hub", "SLM_HUB_NAMESPACE": kit.namespace,
                        "SLM_HUB_RETRY_WAIT_S": "0.01", "HF_ENDPOINT": hub.url, "HF_TOKEN": kit.token}.items():
        monkeypatch.setenv(name, value)
    with open_registry() as reg:
        assert isinstance(reg.artifacts, HubArtifactStore) and reg.artifacts.hub.endpoint == hub.url
        lineage = kit.base_lineage(reg, tiny_base_model[0], tiny_before_pairs[:40])
        kit.register(reg, "intent-router", None, lineage)
        kit.register(reg, "intent-router", hub_adapters["a"], lineage.model_copy(update={"parent": "intent-router:v1"}))
        operations.promote(reg, "intent-router", 2, actor="op", reason="adapter")
    assert train_repo(lineage) == "acme/intent-router-data"
    cache = home / "artifacts" / "hub-cache"
    shutil.rmtree(cache, ignore_errors=True)  # the gateway downloads everything it serves

    config = load_serve_config(REPO / "configs/serve.yaml").model_copy(update={"max_wait_ms": 2.0})
    app, state = build_app(config)
    with BackgroundServer(app) as gateway:
        answer = httpx.post(f"{gateway.url}/v1/completions", timeout=30,
                            json={"model": "intent-router", "prompt": "my top up failed"})
    state.registry.close()
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "intent-router:v2"
    assert {p.name for p in cache.iterdir()} >= {"models--acme--intent-router", "models--acme--tiny-base"}


def train_repo(lineage) -> str:
    return lineage.datasets[0].snapshot.removeprefix("hf://datasets/").split("@")[0]
