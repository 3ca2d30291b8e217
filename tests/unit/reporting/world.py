"""A registry with a whole lifecycle in it, built through the real code paths (fixtures in conftest.py).

``intent-router``: v1 bootstrapped and champion; v2 passes the gate and is promoted through shadow and two canaries
on synthetic traffic (tests/conftest.py); v3 fails the gate; v4 passes it and is rolled back in shadow (it gets
every other answer wrong); then an operator rolls v2 back to v1. Two monitor runs leave drift records.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from lifecycle.drift_policy import ColumnResult, DriftDecision
from lifecycle.records import EvalReport
from lifecycle.rollout_plan import RolloutPlan
from lifecycle.routing import TrafficSplit
from lifecycle.status import VersionStatus
from lifecycle.verdict import Verdict
from registry import operations, rollout_exec
from registry.artifacts import LocalArtifactStore
from registry.predictions import PredictionStore
from registry.service import Registry
from registry.store import RegistryStore
from registry.traffic import set_split
from reporting.drift import DRIFT_CHECKED, drift_check

MODEL = "intent-router"
GUARD = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.3},
         {"metric": "feedback_success_rate", "direction": "higher_is_better", "regression": 0.3}]
PLAN = RolloutPlan.model_validate({
    "name": "report-test", "version": 1, "approval_before_last_stage": False,
    "stage_defaults": {"min_requests_per_arm": 30, "max_duration_s": 36_000, "guardrails": GUARD},
    "stages": [{"name": "shadow", "share": 0, "guardrails": GUARD[:1]}, {"name": "canary-20", "share": 20},
               {"name": "canary-50", "share": 50}, {"name": "full", "share": 100}]})
V3_GATE_REASON = "[fail] golden-before: non-inferior: diff -0.140, 95% CI [-0.195, -0.090] over 200 items"
OPERATOR_REASON = "error spike <after> the 3 a.m. deploy"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def evals(version: str, before: float, drifted: float) -> list[EvalReport]:
    return [EvalReport(version=version, benchmark=name, benchmark_sha256="0" * 64, n_items=200, exact_match=score,
                       per_route_accuracy={}, malformed_rate=0.01, latency_p50_ms=4.0, latency_p95_ms=9.0,
                       latency_p99_ms=12.0, tokens_per_s=100.0, peak_memory_mb=50.0)
            for name, score in (("golden-before", before), ("golden-drifted", drifted))]


def _register(store: RegistryStore, status: VersionStatus, reports: list[EvalReport], verdict: str | None,
              reasons: list[str]) -> int:
    champion = f"{MODEL}:v{store.get_alias(MODEL, 'champion')}" if verdict else None
    if verdict:  # what tasks/gate.py records before the number exists
        store.append_audit(actor="retrain-flow", action="gate.decided", subject=MODEL, payload={
            "verdict": verdict, "champion": champion, "reasons": reasons,
            "intervals": {"golden-before": {"mean": 0.01, "lower": -0.02, "upper": 0.04, "confidence": 0.95,
                                            "n": 200}}})
    reason = f"gate {verdict} against {champion}" if verdict else "bootstrap: the first champion"
    version = store.register_version(MODEL, status=status, prompt_format="f", reason=reason,
                                     actor="retrain-flow", evals=reports,
                                     publish=lambda k: (f"local://models/{MODEL}/v{k}", {}),
                                     audit_payload={"gate": verdict, "champion": champion} if verdict else None)
    if verdict:  # what tasks/register.py announces
        event = "slm.candidate.published" if verdict == "pass" else "slm.gate.failed"
        store.append_audit(actor="retrain-flow", action=event, subject=version.ref, payload={
            "model": MODEL, "version": version.ref, "champion": champion, "verdict": verdict, "reasons": reasons})
    return version.number


def _roll_out(store, predictions, clock, candidate: int, send, *, bad: bool):
    """What the rollout flow does, without Prefect: a look after each minute of routed traffic."""
    state = rollout_exec.begin(store, MODEL, candidate, PLAN, actor="rollout-flow", emit=lambda *a: None)
    for _ in range(20):
        if state.terminal:
            return state
        start = clock.now
        clock.now += timedelta(seconds=60)
        send(store, predictions, start, clock.now, bad=bad, model=MODEL, candidate=candidate)
        state, _ = rollout_exec.step(store, predictions, state, PLAN, actor="rollout-flow", emit=lambda *a: None,
                                     settle_s=0)
    raise AssertionError(f"rollout of v{candidate} did not finish: {state}")


def _drift(store: RegistryStore, clock: Clock) -> None:
    """A quiet monitor run and a fired one, each audited as ``drift.checked``; the fired one also as detected."""
    for run, score in (("run-quiet", 0.02), ("run-fired", 0.3)):
        drifted = score > 0.1
        columns = [ColumnResult(column="prompt_oov_share", method="wasserstein", threshold=0.1, score=score,
                                drifted=drifted),
                   ColumnResult(column="outcome", method="jensenshannon", threshold=0.1, skipped="training reference")]
        decision = DriftDecision(verdict=Verdict.FAIL if drifted else Verdict.PASS, findings=[],
                                 drifted_columns=["prompt_oov_share"] if drifted else [],
                                 scores={"prompt_oov_share": score})
        since, clock.now = clock.now, clock.now + timedelta(hours=1)
        check = drift_check(model=MODEL, champion=f"{MODEL}:v2", since=since, until=clock.now, rows=1500,
                            decision=decision, columns=columns, monitor_run=run)
        store.append_audit(actor="monitor-flow", action=DRIFT_CHECKED, subject=MODEL,
                           payload=check.model_dump(mode="json"))
    # What tasks/monitor.py announces for the fired run: the report must count that run once, not twice.
    store.append_audit(actor="monitor-flow", action="slm.drift.detected", subject=MODEL, payload={
        **check.model_dump(mode="json", exclude={"verdict"}), "reason": "drift", "findings": []})


def build_world(db: Path, artifacts: Path, send) -> None:
    clock = Clock()
    store = RegistryStore.open(f"sqlite:///{db}", clock=clock)
    predictions = PredictionStore(store.engine)
    v1 = _register(store, VersionStatus.CANDIDATE, evals(f"{MODEL}:v1", 0.90, 0.10), None, [])
    store.promote(MODEL, v1, actor="bootstrap", reason="first champion")
    clock.now += timedelta(minutes=5)
    set_split(store, TrafficSplit(model=MODEL, champion=v1), actor="gateway", reason="first start")
    v2 = _register(store, VersionStatus.CANDIDATE, evals(f"{MODEL}:v2", 0.91, 0.85), "pass",
                   ["[pass] golden-before: non-inferior: lower bound -0.020 > -0.040"])
    assert _roll_out(store, predictions, clock, v2, send, bad=False).phase == "promoted"
    _register(store, VersionStatus.REJECTED, evals(f"{MODEL}:v3", 0.77, 0.90), "fail", [V3_GATE_REASON])
    v4 = _register(store, VersionStatus.CANDIDATE, evals(f"{MODEL}:v4", 0.0, 0.95), "pass",
                   ["[pass] golden-drifted: superior"])
    assert _roll_out(store, predictions, clock, v4, send, bad=True).phase == "rolled_back"
    _drift(store, clock)
    clock.now += timedelta(minutes=10)
    registry = Registry(store, LocalArtifactStore(artifacts), MODEL)
    operations.rollback(registry, MODEL, actor="operator:night-shift", reason=OPERATOR_REASON)
    store.close()
