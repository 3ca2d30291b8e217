"""A retired version leaves the gateway: LiveModel unloads it at the split revision bump that retiring writes,
keeps the former champion (``previous``) loaded for an instant rollback, and waits for in-flight requests.
Real tiny model, real adapters, real SQLite registry; the watcher is parked so each refresh is explicit."""

from __future__ import annotations

import pytest

from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, Lineage
from lifecycle.retention import RetentionPolicy
from lifecycle.routing import TrafficSplit
from lifecycle.status import VersionStatus as S
from registry import operations
from registry.artifacts import LocalArtifactStore
from registry.retire import VersionDecommissioned, retire_version
from registry.service import Registry
from registry.store import RegistryStore
from registry.traffic import set_split
from serving.backend import InProcessBackend
from serving.live import LiveModel

POLICY = RetentionPolicy(keep_recent=0, retire_after_days=30)


@pytest.fixture
def live(tmp_path, tiny_base_model, adapters):
    """v1 the base (champion), v2 and v3 LoRA adapters; v2 was a challenger, then v3 won and became champion."""
    reg = Registry(RegistryStore.open(f"sqlite:///{tmp_path / 'registry.db'}"),
                   LocalArtifactStore(tmp_path / "artifacts"), "router")
    uri, revision = reg.artifacts.put_base("tiny", tiny_base_model[0])
    lineage = Lineage(base_model=BaseModelRef(model_id=uri, revision=revision), prompt_format=INTENT_V1.identity)
    for staged in (None, adapters["drift"], adapters["mixed"]):
        reg.register("router", staged=staged, status=S.CANDIDATE, reason="t", actor="t", lineage=lineage, evals=[],
                     task="banking77")
    reg.store.promote("router", 1, actor="t", reason="first")
    backend = InProcessBackend(reg.base_dir(reg.get("router:v1")), INTENT_V1, threads=1, device="cpu")
    model = LiveModel(reg, "router", backend, poll_s=3600)
    for challenger in (2, 3):
        set_split(reg.store, TrafficSplit(model="router", champion=1, challenger=challenger, challenger_percent=10),
                  actor="t", reason="canary")
        assert model.refresh()
    reg.store.set_status("router", 2, S.ROLLED_BACK, actor="t", reason="canary failed")
    operations.promote(reg, "router", 3, actor="t", reason="won")
    assert model.refresh()
    yield model, reg
    model.close()
    reg.close()


def test_a_retired_version_is_unloaded_and_previous_stays(live):
    model, reg = live
    assert sorted(model.live()) == [1, 2, 3]  # v2 out of the split but merely rolled_back: it stays
    assert model.refresh() is False
    assert sorted(model.live()) == [1, 2, 3]
    retire_version(reg, "router", 2, policy=POLICY, actor="t", reason="old")
    assert model.refresh()  # retiring bumped the split revision
    assert sorted(model.live()) == [1, 3]  # v1 is `previous`: kept for an instant rollback
    assert model.backend.loaded() == ["router:v3"]
    unloaded = [e for e in reg.store.audit_events() if e.action == "gateway.unloaded"]
    assert [(e.subject, e.payload["reason"]) for e in unloaded] == [("router:v2", "retired")]


def test_in_flight_requests_finish_first_then_the_next_poll_unloads(live):
    model, reg = live
    with model.in_flight(2):
        retire_version(reg, "router", 2, policy=POLICY, actor="t", reason="old")
        assert model.refresh()
        assert 2 in model.live()  # a request is still running on it
    assert model.refresh() is False  # no new revision; the pending unload is retried
    assert 2 not in model.live()


def test_a_decommissioned_version_cannot_be_loaded_again(live):
    model, reg = live
    retire_version(reg, "router", 2, policy=POLICY, actor="t", reason="old")
    model.refresh()
    with pytest.raises(VersionDecommissioned, match="router:v2 is decommissioned"):
        model.load(2)
