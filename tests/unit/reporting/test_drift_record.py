"""``record_drift_check``: every monitor run leaves its scores in the audit log, and the report reads them back."""

from __future__ import annotations

from datetime import UTC, datetime

from data_checks.drift import DriftReport
from lifecycle.config import load_yaml_config
from lifecycle.drift_policy import ColumnResult, DriftDecision, DriftPolicy
from lifecycle.settings import project_root
from lifecycle.verdict import Verdict
from reporting.drift import drift_points
from tasks.monitor import MonitorPlan
from tasks.report import record_drift_check
from tests.unit.reporting.world import MODEL


def test_a_quiet_window_is_recorded_and_read_back(home, store):
    since, until = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    plan = MonitorPlan(model=MODEL, policy=load_yaml_config(DriftPolicy, project_root() / "configs/monitor.yaml"),
                       policy_path="configs/monitor.yaml", champion=store.get_version(MODEL, 1), since=since,
                       until=until, data_path="drop.jsonl", report_path=home / "drift.html", run_id="run-3")
    columns = [ColumnResult(column="route", method="jensenshannon", threshold=0.2, score=0.05),
               ColumnResult(column="latency_ms", method="wasserstein", threshold=0.3, skipped="training reference")]
    report = DriftReport(columns=columns, reference_rows=5000, current_rows=1800, compared_reference=5000,
                         compared_current=1800, seconds=0.5)
    decision = DriftDecision(verdict=Verdict.PASS, findings=[], drifted_columns=[], scores={"route": 0.05})
    record_drift_check.fn(plan, report, decision)

    (event,) = [e for e in store.audit_events() if e.payload.get("monitor_run") == "run-3"]
    assert (event.action, event.subject, event.actor) == ("drift.checked", MODEL, "monitor-flow")
    newest = drift_points(store.audit_events(), MODEL)[-1]
    assert (newest.window_since, newest.window_until, newest.verdict) == (since, until, "pass")
    assert (newest.scores, newest.thresholds) == ({"route": 0.05}, {"route": 0.2})
