"""What the report gathers from a registry that went through a whole lifecycle (see conftest.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from lifecycle.audit import AuditEvent
from registry.store import RegistryStore
from reporting.drift import drift_points
from reporting.gather import NothingToReport, gather
from reporting.rollouts import rate
from tests.unit.reporting.world import MODEL, OPERATOR_REASON, V3_GATE_REASON


def test_traffic_steps_replay_every_split_from_the_first_champion(store):
    steps = gather(store, MODEL).traffic
    assert steps[0].shares == {1: 100.0} and steps[0].source == "champion alias (no split yet)"
    assert [s.shares for s in steps if s.shares.get(2, 0) not in (0.0, 100.0)] == [{1: 80.0, 2: 20.0},
                                                                                 {1: 50.0, 2: 50.0}]
    assert [s.shadow for s in steps if s.shadow] == [2, 4]  # each candidate shadowed first
    assert steps[-1].shares == {1: 100.0} and OPERATOR_REASON in steps[-1].source  # the operator's rollback
    assert all(sum(s.shares.values()) == 100.0 for s in steps)
    assert [s.at for s in steps] == sorted(s.at for s in steps)


def test_stage_windows_hold_each_arm_of_the_prediction_log(store):
    promoted, rolled_back = gather(store, MODEL).rollouts
    assert (promoted.candidate, promoted.champion, promoted.phase) == (2, 1, "promoted")
    assert [(w.stage, w.ended_by) for w in promoted.stages] == [
        ("shadow", "advance"), ("canary-20", "advance"), ("canary-50", "advance"), ("full", "advance")]
    canary = promoted.stages[1]
    # 200 requests a minute, the challenger answering exactly its 20 % of them (synthetic_traffic).
    assert (canary.champion.requests, canary.candidate.requests, canary.candidate.role) == (160, 40, "challenger")
    assert promoted.stages[0].candidate.role == "shadow"
    assert promoted.stages[-1].champion.requests == 0 and promoted.stages[-1].champion.error_rate is None

    assert (rolled_back.candidate, rolled_back.phase, len(rolled_back.stages)) == (4, "rolled_back", 1)
    shadow = rolled_back.stages[0]
    assert shadow.ended_by == "rollback"
    assert any(r.startswith("[fail] model_error_rate") for r in shadow.reasons)
    wrong = shadow.candidate.error_rate  # every other answer of v4 is a model error
    assert (wrong.mean, wrong.n) == (0.5, 200) and wrong.lower < 0.5 < wrong.upper
    assert shadow.candidate.feedback_success is None  # a shadow's answers are never served, so never judged
    assert shadow.champion.error_rate.mean == 0 and shadow.champion.error_rate.upper > 0


def test_stage_windows_leave_out_what_callers_pinned_as_the_decisions_do(store):
    """A tester naming the challenger (model MODEL:v2) during its canary: not in the report's arms either."""
    from datetime import timedelta

    from lifecycle.predictions import Prediction
    from registry.predictions import PredictionStore

    canary = gather(store, MODEL).rollouts[0].stages[1]
    PredictionStore(store.engine).insert_many([
        Prediction(ts=canary.since + timedelta(seconds=1), request_id=f"qa-{k}", model=MODEL, version=2,
                   role="challenger", user_hash="tester", prompt="p", completion="c", latency_ms=5.0,
                   outcome="model_error", served=True, pinned=True) for k in range(30)])
    again = gather(store, MODEL).rollouts[0].stages[1]
    assert (again.candidate.requests, again.candidate.error_rate.mean) == (40, canary.candidate.error_rate.mean)


@pytest.mark.parametrize(("successes", "n", "lower", "upper"), [
    (60, 100, 0.5020, 0.6906), (84, 100, 0.7558, 0.8990), (50, 50, 0.9287, 1.0)])
def test_rates_carry_the_wilson_interval(successes, n, lower, upper):
    interval = rate(successes, n)
    assert (interval.lower, interval.upper) == (pytest.approx(lower, abs=1e-4), pytest.approx(upper, abs=1e-4))
    assert interval.mean == successes / n


def test_no_data_is_no_rate():
    assert rate(0, 0) is None


def test_gate_results_name_verdict_reasons_and_intervals(store):
    gates = {g.ref: g for g in gather(store, MODEL).gates}
    assert gates[f"{MODEL}:v1"].verdict is None  # bootstrapped, never gated
    assert (gates[f"{MODEL}:v2"].verdict, gates[f"{MODEL}:v2"].against) == ("pass", f"{MODEL}:v1")
    assert gates[f"{MODEL}:v2"].intervals["golden-before"].n == 200
    v3 = gates[f"{MODEL}:v3"]
    assert (v3.verdict, v3.status, v3.reasons, v3.against) == ("fail", "rejected", [V3_GATE_REASON], f"{MODEL}:v2")
    scores = {s.benchmark: s.exact_match for s in v3.scores}
    assert scores["golden-before"].mean == pytest.approx(0.77) and scores["golden-before"].n == 200


def test_each_rollback_is_listed_with_its_reason_and_cause(store):
    rollbacks = gather(store, MODEL).rollbacks
    assert [(r.ref, r.by, r.stage) for r in rollbacks] == [(f"{MODEL}:v4", "rollout", "shadow"),
                                                          (f"{MODEL}:v2", "operator", None)]
    assert "model_error_rate" in rollbacks[0].reason
    assert (rollbacks[1].reason, rollbacks[1].actor) == (OPERATOR_REASON, "operator:night-shift")


def test_drift_is_one_point_per_monitor_run(store):
    points = gather(store, MODEL).drift
    # Two runs; the fired one was audited twice (drift.checked and slm.drift.detected) and counts once.
    assert [(p.verdict, p.scores, p.action) for p in points] == [
        ("pass", {"prompt_oov_share": 0.02}, "drift.checked"), ("fail", {"prompt_oov_share": 0.3}, "drift.checked")]
    assert points[1].thresholds == {"prompt_oov_share": 0.1}  # skipped columns carry no threshold
    assert points[1].drifted_columns == ["prompt_oov_share"]


def test_fired_drift_events_alone_are_read_too():
    """A registry from before ``drift.checked`` existed still shows the windows that fired."""
    payload = {"model": MODEL, "champion": f"{MODEL}:v1", "window_since": "2026-01-01T00:00:00+00:00",
               "window_until": "2026-01-01T01:00:00+00:00", "rows": 1200, "drifted_columns": ["route"],
               "scores": {"route": 0.5}, "thresholds": {"route": 0.2}, "decay": False, "reason": "drift on ..."}
    event = AuditEvent(seq=1, ts="2026-01-01T01:00:00+00:00", actor="monitor-flow", action="slm.drift.suppressed",
                       subject=MODEL, payload=payload, prev_hash="0" * 64, hash="0" * 64)
    (point,) = drift_points([event], MODEL)
    assert (point.verdict, point.scores, point.action) == ("fail", {"route": 0.5}, "slm.drift.suppressed")


def test_summary_and_audit_status(store):
    report = gather(store, MODEL)
    assert report.summary.aliases == {"champion": 1}
    assert [(v.ref, v.status) for v in report.summary.versions] == [
        (f"{MODEL}:v1", "promoted"), (f"{MODEL}:v2", "rolled_back"), (f"{MODEL}:v3", "rejected"),
        (f"{MODEL}:v4", "rolled_back")]
    assert report.summary.versions[0].aliases == ["champion"]
    assert report.summary.active_rollout is None
    assert report.summary.last_drift.startswith("fail on 2026-01-01 01:10")
    assert report.audit.ok and report.audit.checked == len(store.audit_events())


def test_a_tampered_chain_is_reported_broken(store):
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'someone-else' WHERE seq = 3"))
    audit = gather(store, MODEL).audit
    assert not audit.ok and any("seq 3" in p and "edited" in p for p in audit.problems)


def test_a_model_without_versions_is_a_clear_error(tmp_path):
    store = RegistryStore.open(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(NothingToReport, match=r"'intent-router' has no versions .* `slm bootstrap`"):
            gather(store, MODEL)
    finally:
        store.close()


def test_a_gate_decision_is_matched_to_its_version_by_the_retrain_run():
    """Two retrains against the same champion can fail with the same reasons, word for word: the run both events
    name tells their intervals apart (events from before runs were recorded fall back to the latest match)."""
    from datetime import UTC, datetime

    from lifecycle.records import ModelVersion
    from lifecycle.status import VersionStatus
    from reporting.gather import gate_result

    def event(seq, action, subject, **payload):
        return AuditEvent(seq=seq, ts="2026-11-27T00:00:00+00:00", actor="retrain-flow", action=action,
                          subject=subject, payload=payload, prev_hash="0" * 64, hash=f"{seq:064d}")

    def interval(n):
        return {"golden-before": {"mean": 0.0, "lower": -0.1, "upper": 0.1, "confidence": 0.95, "n": n}}

    same = {"champion": "m:v1", "reasons": ["golden-before: no better"], "verdict": "fail"}
    events = [event(1, "gate.decided", "m", run="run-a", intervals=interval(100), **same),
              event(2, "gate.decided", "m", run="run-b", intervals=interval(200), **same),
              event(3, "slm.gate.failed", "m:v3", run="run-a", version="m:v3", **same),
              event(4, "slm.gate.failed", "m:v4", run="run-b", version="m:v4", **same)]
    v3, v4 = (ModelVersion(model="m", number=n, status=VersionStatus.REJECTED, created_at=datetime.now(UTC),
                           artifact_uri=f"local://models/m/v{n}", prompt_format="f") for n in (3, 4))
    assert gate_result(v3, events).intervals["golden-before"].n == 100  # run-a's, though run-b's came later
    assert gate_result(v4, events).intervals["golden-before"].n == 200
    unnamed = [e.model_copy(update={"payload": {k: v for k, v in e.payload.items() if k != "run"}}) for e in events]
    assert gate_result(v3, unnamed).intervals["golden-before"].n == 200  # the old heuristic: the latest match
