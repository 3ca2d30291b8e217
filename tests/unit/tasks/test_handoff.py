"""The monitor's hand-off check against a real registry: a candidate whose announcement the Prefect server never
received (the retrain died between the audit event and the Prefect event) is announced again, once, with the
retrain's payload; anything a person or a rollout holds is left alone."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from lifecycle.rollout_state import RolloutState
from lifecycle.status import VersionStatus as S
from registry.artifacts import LocalArtifactStore
from registry.rollouts import save_rollout, start_rollout
from registry.service import Registry
from registry.store import RegistryStore

PUBLISHED, REANNOUNCED = "slm.candidate.published", "slm.candidate.reannounced"
SERVER = "http://127.0.0.1:4200/api"


@pytest.fixture
def world(tmp_path, monkeypatch):
    import tasks.handoff

    reg = Registry(RegistryStore.open(f"sqlite:///{tmp_path / 'registry.db'}"),
                   LocalArtifactStore(tmp_path / "artifacts"), "router")
    sent: list[tuple[str, dict]] = []
    facts = SimpleNamespace(listening=None, running_since=None, heard=False, kept=[])

    def running(flow, now, keep):
        facts.kept = [keep(SimpleNamespace(parameters=p)) for p in (
            {"params": {"version": "router:v9"}}, {"params": {"version": "other:v2"}}, {})]
        return facts.running_since

    def heard(model, ref, since):
        if isinstance(facts.heard, Exception):
            raise facts.heard
        return facts.heard

    monkeypatch.setattr(tasks.handoff, "open_registry", lambda: contextlib.nullcontext(reg))
    monkeypatch.setattr(tasks.handoff, "emit_event", lambda event, resource, payload: sent.append((event, payload)))
    monkeypatch.setattr(tasks.handoff, "automations_listen", lambda *a, **k: facts.listening)
    monkeypatch.setattr(tasks.handoff, "running_flow_since", running)
    monkeypatch.setattr(tasks.handoff, "prefect_heard", heard)
    monkeypatch.setattr(tasks.handoff, "prefect_api", lambda: SERVER)
    for _ in range(2):
        reg.store.register_version("router", status=S.CANDIDATE, prompt_format="f", reason="r", actor="t",
                                   publish=lambda n: (f"local://models/router/v{n}", {}))
    reg.store.promote("router", 1, actor="t", reason="first champion")
    payload = {"model": "router", "version": "router:v2", "champion": "router:v1", "verdict": "pass",
               "rollout_plan": "configs/rollout-fast.yaml", "run": "run-7"}
    an_hour_ago = RegistryStore(reg.store.engine, clock=lambda: datetime.now(UTC) - timedelta(hours=1))
    an_hour_ago.append_audit(actor="retrain-flow", action=PUBLISHED, subject="router:v2",
                             payload={**payload, "prefect_api": SERVER})  # as tasks.events.announce records it
    yield reg, sent, facts, payload
    reg.close()


def plan(grace_minutes: float = 0, attempts: int = 3) -> SimpleNamespace:
    policy = SimpleNamespace(handoff_grace_minutes=grace_minutes, handoff_attempts=attempts, handoff_max_age_hours=24)
    return SimpleNamespace(model="router", policy=policy, run_id="monitor-run-1")


def check(**kw):
    from tasks.handoff import check_handoff

    return check_handoff.fn(plan(**kw))


def rollout_of(reg, candidate: int) -> RolloutState:
    now = datetime.now(UTC).isoformat()
    return start_rollout(reg.store, RolloutState(model="router", candidate=candidate, champion=1, plan_name="p",
                                                 plan_version=1, stage_index=0, stage_started_at=now,
                                                 started_at=now), actor="t")


def test_a_lost_announcement_is_sent_again_once_with_the_retrains_payload(world):
    reg, sent, facts, payload = world
    early = check(grace_minutes=120)  # published an hour ago: its rollout has time to start yet
    assert early.reannounce is None and "its rollout has until" in early.reasons[-1] and sent == []

    decision = check()
    assert decision.reannounce == "router:v2"
    assert sent == [(PUBLISHED, payload)]  # as the retrain sent it: the automation templates version and plan
    (event,) = reg.store.events_about("router", [REANNOUNCED])
    assert event.subject == "router:v2" and event.payload["announcement"] == payload
    assert reg.store.verify_audit().ok
    assert facts.kept == [True, False, True]  # the model's rollout runs count, and runs that name no version

    again = check(grace_minutes=30)  # the next monitor run, within the grace of the first
    assert again.reannounce is None and "announced again at" in again.reasons[-1] and len(sent) == 1


def test_a_monitor_run_that_decided_on_a_stale_read_does_not_send_it_twice(world, monkeypatch):
    import tasks.handoff

    reg, sent, _, _ = world
    read = tasks.handoff.stranded_candidates

    def stale(store, model, **kw):
        found = read(store, model, **kw)  # ... and meanwhile another monitor run announces it again
        store.append_audit(actor="monitor-flow", action=REANNOUNCED, subject="router:v2", payload={})
        return found

    monkeypatch.setattr(tasks.handoff, "stranded_candidates", stale)
    decision = check(grace_minutes=30)
    assert decision.reannounce is None and "another monitor run announced router:v2 again" in decision.reasons[0]
    assert sent == []


def test_nothing_is_sent_when_the_server_got_it_cannot_say_nobody_listens_or_a_rollout_run_is_queued(world):
    reg, sent, facts, _ = world
    facts.heard = True
    assert "received router:v2's announcement, yet no rollout" in check().reasons[0]
    facts.heard = ConnectionError("server gone")
    assert "could not say whether it received" in check().reasons[0]
    facts.heard = False
    facts.listening = "no enabled automation on the Prefect server waits for slm.candidate.published"
    assert "router:v2 was published with no rollout; no enabled automation" in check().reasons[0]
    facts.listening = None
    facts.running_since = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    assert check().reasons == ["router:v2 waits: a rollout flow run of router is queued or running since "
                               "2026-11-29 09:00 UTC"]
    assert sent == [] and not reg.store.events_about("router", [REANNOUNCED])


def test_a_failing_check_is_a_reason_not_a_failed_monitor_run(world, monkeypatch):
    import tasks.handoff

    def broken(store, model, **kw):
        raise RuntimeError("database gone")

    monkeypatch.setattr(tasks.handoff, "stranded_candidates", broken)
    decision = check()
    assert decision.reannounce is None and "hand-off check failed (RuntimeError: database gone)" in decision.reasons[0]


@pytest.mark.parametrize("fate", ["promoted", "rolled back", "archived", "aborted rollout", "rolling out"])
def test_a_candidate_a_rollout_or_a_person_has_dealt_with_is_left_alone(world, fate):
    reg, sent, _, _ = world
    if fate == "promoted":
        reg.store.promote("router", 2, actor="t", reason="rolled out")
    elif fate == "rolled back":
        reg.store.set_status("router", 2, S.ROLLED_BACK, actor="t", reason="regressed")
    elif fate == "archived":
        reg.store.set_status("router", 2, S.ARCHIVED, actor="t", reason="retired")
    else:
        state = rollout_of(reg, 2)
        if fate == "aborted rollout":  # an operator stopped it: its row stays, the version a candidate
            save_rollout(reg.store, state.model_copy(update={"phase": "aborted"}), actor="t",
                         expected_revision=state.revision)
    if "rollout" in fate:
        assert reg.store.get_version("router", 2).status is S.CANDIDATE  # only its rollout row tells
    decision = check()
    assert decision.reannounce is None and decision.reasons == [] and sent == []


def test_another_candidates_unfinished_rollout_holds_the_newest_back(world):
    reg, sent, _, _ = world
    reg.store.register_version("router", status=S.CANDIDATE, prompt_format="f", reason="r", actor="t",
                               publish=lambda n: (f"local://models/router/v{n}", {}))
    rollout_of(reg, 3)  # v3 is rolling out by hand; v2's announcement was lost
    assert check().reasons == ["router:v2 waits: the rollout of router:v3 is unfinished (running)"]
    assert sent == []


def test_a_candidate_gated_against_an_older_champion_is_left_for_a_person(world):
    reg, sent, _, _ = world
    reg.store.register_version("router", status=S.CANDIDATE, prompt_format="f", reason="r", actor="t",
                               publish=lambda n: (f"local://models/router/v{n}", {}))
    reg.store.promote("router", 3, actor="t", reason="promoted by hand")
    assert "compared it with router:v1, and the champion is router:v3" in check().reasons[-1]
    assert sent == []
