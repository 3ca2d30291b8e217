"""The monitor's hand-off check against a real registry: a candidate whose announcement Prefect never heard (the
retrain died between the audit event and the Prefect event) is announced again, once, with the retrain's payload."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from lifecycle.status import VersionStatus as S
from registry.artifacts import LocalArtifactStore
from registry.service import Registry
from registry.store import RegistryStore

PUBLISHED, REANNOUNCED = "slm.candidate.published", "slm.candidate.reannounced"


@pytest.fixture
def world(tmp_path, monkeypatch):
    import tasks.handoff

    reg = Registry(RegistryStore.open(f"sqlite:///{tmp_path / 'registry.db'}"),
                   LocalArtifactStore(tmp_path / "artifacts"), "router")
    sent: list[tuple[str, dict]] = []
    facts = SimpleNamespace(listening=None, running_since=None)
    monkeypatch.setattr(tasks.handoff, "open_registry", lambda: contextlib.nullcontext(reg))
    monkeypatch.setattr(tasks.handoff, "emit_event", lambda event, resource, payload: sent.append((event, payload)))
    monkeypatch.setattr(tasks.handoff, "automations_listen", lambda *a, **k: facts.listening)
    monkeypatch.setattr(tasks.handoff, "running_flow_since", lambda flow, now: facts.running_since)
    for _ in range(2):
        reg.store.register_version("router", status=S.CANDIDATE, prompt_format="f", reason="r", actor="t",
                                   publish=lambda n: (f"local://models/router/v{n}", {}))
    reg.store.promote("router", 1, actor="t", reason="first champion")
    payload = {"model": "router", "version": "router:v2", "champion": "router:v1", "verdict": "pass",
               "rollout_plan": "configs/rollout-fast.yaml", "run": "run-7"}
    reg.store.append_audit(actor="retrain-flow", action=PUBLISHED, subject="router:v2", payload=payload)
    yield reg, sent, facts, payload
    reg.close()


def plan(grace_minutes: float, attempts: int = 3) -> SimpleNamespace:
    policy = SimpleNamespace(handoff_grace_minutes=grace_minutes, handoff_attempts=attempts)
    return SimpleNamespace(model="router", policy=policy, run_id="monitor-run-1")


def test_a_stranded_candidate_is_announced_again_once_with_the_retrains_payload(world):
    from tasks.handoff import check_handoff

    reg, sent, _, payload = world
    early = check_handoff.fn(plan(grace_minutes=30))  # just published: its rollout has time to start
    assert early.reannounce is None and "its rollout has until" in early.reasons[-1] and sent == []

    decision = check_handoff.fn(plan(grace_minutes=0))
    assert decision.reannounce == "router:v2"
    assert sent == [(PUBLISHED, payload)]  # the automation templates version and plan from it, as the first time
    (event,) = reg.store.events_about("router", [REANNOUNCED])
    assert event.subject == "router:v2" and event.payload["announcement"] == payload
    assert reg.store.verify_audit().ok

    again = check_handoff.fn(plan(grace_minutes=30))  # the next monitor run, within the grace of the first
    assert again.reannounce is None and "announced again at" in again.reasons[-1] and len(sent) == 1


def test_nothing_is_sent_while_the_rollout_side_is_busy_or_nobody_listens(world):
    from tasks.handoff import check_handoff

    reg, sent, facts, _ = world
    facts.listening = "no enabled automation on the Prefect server waits for slm.candidate.published"
    quiet = check_handoff.fn(plan(grace_minutes=0))
    assert quiet.reannounce is None and "router:v2 published with no rollout; no enabled automation" in quiet.reasons[0]
    facts.listening = None
    facts.running_since = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    busy = check_handoff.fn(plan(grace_minutes=0))
    assert busy.reasons == ["router:v2 waits: a rollout flow run is queued or running since 2026-11-29 09:00 UTC"]
    assert sent == [] and not reg.store.events_about("router", [REANNOUNCED])


def test_a_candidate_that_rolled_out_or_was_promoted_is_not_stranded(world):
    from tasks.handoff import check_handoff

    reg, sent, _, _ = world
    reg.store.promote("router", 2, actor="t", reason="rolled out")
    decision = check_handoff.fn(plan(grace_minutes=0))
    assert decision.reannounce is None and decision.reasons == [] and sent == []


def test_a_candidate_gated_against_an_older_champion_is_left_for_a_person(world):
    from tasks.handoff import check_handoff

    reg, sent, _, _ = world
    reg.store.register_version("router", status=S.CANDIDATE, prompt_format="f", reason="r", actor="t",
                               publish=lambda n: (f"local://models/router/v{n}", {}))
    reg.store.promote("router", 3, actor="t", reason="promoted by hand")
    decision = check_handoff.fn(plan(grace_minutes=0))
    assert decision.reannounce is None and "compared it with router:v1, and the champion is router:v3" in \
        decision.reasons[-1]
    assert sent == []
