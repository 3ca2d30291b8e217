"""``SLM_ARTIFACT_STORE=hub`` chosen by the settings, and the gateway serving the champion it downloads from the Hub
(the Hub TEST DOUBLE on loopback)."""

from __future__ import annotations

import json
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


def two_versions_on_the_hub(hub, kit, hub_adapters, tiny_base_model, tiny_before_pairs, tmp_path, monkeypatch):
    """A home on the Hub store (the double): intent-router v1 (the base) champion, v2 (an adapter) a candidate;
    returns v1's lineage."""
    for name, value in {"SLM_HOME": str(tmp_path / "home"), "SLM_ARTIFACT_STORE": "hub",
                        "SLM_HUB_NAMESPACE": kit.namespace, "SLM_HUB_RETRY_WAIT_S": "0.01", "HF_ENDPOINT": hub.url,
                        "HF_TOKEN": kit.token}.items():
        monkeypatch.setenv(name, value)
    with open_registry() as reg:
        lineage = kit.base_lineage(reg, tiny_base_model[0], tiny_before_pairs[:40])
        kit.register(reg, "intent-router", None, lineage)
        kit.register(reg, "intent-router", hub_adapters["a"], lineage.model_copy(update={"parent": "intent-router:v1"}))
        operations.promote(reg, "intent-router", 1, actor="op", reason="first")
    return lineage


def train_repo(lineage) -> str:
    return lineage.datasets[0].snapshot.removeprefix("hf://datasets/").split("@")[0]


def test_a_promote_whose_hub_call_failed_says_so_and_sync_champion_catches_the_hub_up(
        hub, kit, hub_adapters, tiny_base_model, tiny_before_pairs, tmp_path, monkeypatch):
    """The registry and the traffic move in one commit; the Hub's champion branch follows after it. When the Hub
    fails there, `slm promote` exits 1 saying the version IS champion and what to run; `slm registry sync-champion`
    then moves the branch (audited), and again moves nothing."""
    from typer.testing import CliRunner

    from slm_cli.main import app

    monkeypatch.setenv("SLM_OPERATOR", "night-shift")
    two_versions_on_the_hub(hub, kit, hub_adapters, tiny_base_model, tiny_before_pairs, tmp_path, monkeypatch)
    git = hub.repo("acme/intent-router")
    tags = git.refs("tags")
    assert git.refs("heads")["champion"] == tags["v1"]

    hub.faults.fail("branch", times=10)  # the Hub refuses to create branches for longer than the store retries
    promoted = CliRunner().invoke(app, ["promote", "intent-router:v2", "--reason", "better"])
    assert promoted.exit_code == 1, promoted.output
    said = " ".join(promoted.stderr.split())
    assert "intent-router:v2 is champion with all traffic, but" in said
    assert "slm registry sync-champion --model intent-router" in said
    assert "champion" not in git.refs("heads")  # moving a branch is delete + create: the create failed
    still_down = CliRunner().invoke(app, ["registry", "sync-champion", "--model", "intent-router"])
    assert still_down.exit_code == 1 and "the Hub failed, nothing moved" in " ".join(still_down.stderr.split())
    hub.faults.pending.clear()

    synced = CliRunner().invoke(app, ["registry", "sync-champion", "--model", "intent-router"])
    assert synced.exit_code == 0, synced.output
    assert "branch champion moved to v2" in " ".join(synced.stdout.split())
    assert git.refs("heads")["champion"] == tags["v2"]
    with open_registry() as reg:
        [moved] = [e for e in reg.store.audit_events() if e.action == "artifacts.champion.moved"][-1:]
        assert (moved.actor, moved.payload["to_commit"]) == ("operator:night-shift", tags["v2"])
        assert reg.store.get_alias("intent-router", "champion") == 2
    again = CliRunner().invoke(app, ["registry", "sync-champion", "--model", "intent-router"])
    assert again.exit_code == 0 and "nothing moved" in again.stdout


def test_with_the_hub_unreachable_show_still_shows_and_promote_says_so_in_one_line(
        hub, kit, hub_adapters, tiny_base_model, tiny_before_pairs, tmp_path, monkeypatch):
    """`slm registry show` reads the registry, not the Hub (a Hub snapshot is named by its URI, not downloaded to be
    shown); an action that needs the Hub before it changes anything fails with one line and exit 2, not a traceback."""
    from typer.testing import CliRunner

    from slm_cli.main import app

    lineage = two_versions_on_the_hub(hub, kit, hub_adapters, tiny_base_model, tiny_before_pairs, tmp_path,
                                      monkeypatch)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    shown = CliRunner().invoke(app, ["registry", "show", "intent-router:v1"])
    assert shown.exit_code == 0, shown.output
    as_json = CliRunner().invoke(app, ["registry", "show", "intent-router:v1", "--json"])
    assert as_json.exit_code == 0, as_json.output
    [(name, place)] = json.loads(as_json.stdout)["dataset_paths"].items()
    assert place.startswith(f"hf://datasets/{train_repo(lineage)}@")  # where the rows are, not a download
    promoted = CliRunner().invoke(app, ["promote", "intent-router:v2", "--reason", "better"])
    assert promoted.exit_code == 2, promoted.output
    said = " ".join(promoted.stderr.split())
    assert "the artifact store failed" in said and "Traceback" not in promoted.output
    with open_registry() as reg:
        assert reg.store.get_alias("intent-router", "champion") == 1  # nothing moved
