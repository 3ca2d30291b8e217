"""Drift scores over time: each monitor verdict as recorded in the audit log.

The monitor flow audits a window only when its verdict fires (``slm.drift.detected``, or ``slm.drift.suppressed``
under the storm rule); a quiet window left no trace, so a plot of those alone would show drift and nothing
between. ``drift.checked`` fills the gap: one audit event per monitor run, whatever the verdict, with the same
field names as the fired events' payloads so one record reads all three (``DriftCheck``). The monitor flow writes
it with the task ``tasks.report.record_drift_check``; where a run wrote both (a fired verdict), the
``drift.checked`` event is the one kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from lifecycle.audit import AuditEvent
from lifecycle.drift_policy import ColumnResult, DriftDecision
from lifecycle.predictions import as_utc
from reporting.records import DriftPoint

DRIFT_CHECKED = "drift.checked"
FIRED = ("slm.drift.detected", "slm.drift.suppressed")


class DriftCheck(BaseModel):
    """The payload of ``drift.checked``; also reads the payloads of the fired events (their extra keys ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str
    champion: str = Field(description="MODEL:vN whose traffic and reference were compared")
    window_since: datetime
    window_until: datetime
    rows: int = Field(ge=0, description="served answers in the window that the verdict rests on (with text when "
                      "text columns are compared)")
    # A fired event is written only for a failed verdict, and its payload does not repeat it.
    verdict: str = "fail"
    scores: dict[str, float] = Field(default_factory=dict)
    thresholds: dict[str, float] = Field(default_factory=dict)
    drifted_columns: list[str] = Field(default_factory=list)
    monitor_run: str | None = None


def drift_check(*, model: str, champion: str, since: datetime, until: datetime, rows: int,
                decision: DriftDecision, columns: Sequence[ColumnResult], monitor_run: str | None) -> DriftCheck:
    """What one monitor run found, in the form ``drift.checked`` stores. Thresholds of compared columns only."""
    return DriftCheck(model=model, champion=champion, window_since=since, window_until=until, rows=rows,
                      verdict=str(decision.verdict), scores=decision.scores,
                      thresholds={c.column: c.threshold for c in columns if c.score is not None},
                      drifted_columns=decision.drifted_columns, monitor_run=monitor_run)


def drift_points(events: list[AuditEvent], model: str) -> list[DriftPoint]:
    """The model's drift verdicts, oldest window first; one per monitor run."""
    checked = [e for e in events if e.action == DRIFT_CHECKED and e.subject == model]
    seen_runs = {e.payload.get("monitor_run") for e in checked} - {None}
    fired = [e for e in events if e.action in FIRED and e.subject == model
             and (e.payload.get("monitor_run") is None or e.payload.get("monitor_run") not in seen_runs)]
    points = []
    for event in checked + fired:
        check = DriftCheck.model_validate(event.payload)
        points.append(DriftPoint(window_since=as_utc(check.window_since), window_until=as_utc(check.window_until),
                                 verdict=check.verdict, scores=check.scores, thresholds=check.thresholds,
                                 drifted_columns=check.drifted_columns, action=event.action))
    return sorted(points, key=lambda p: p.window_until)
