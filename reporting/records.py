"""What the lifecycle report shows, as typed records: gathered from the registry, then rendered.

Keeping the data apart from the HTML lets the tests check the numbers without parsing a page, and lets
another renderer (a Prefect markdown artifact, JSON) reuse the same gathering.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from lifecycle.gate import Interval
from lifecycle.records import Frozen


class AuditStatus(Frozen):
    """``RegistryStore.verify_audit()`` at the time of the report."""

    ok: bool
    checked: int
    problems: list[str] = Field(default_factory=list)


class VersionRow(Frozen):
    number: int
    ref: str
    status: str
    created_at: datetime
    reason: str
    aliases: list[str] = Field(default_factory=list, description="aliases pointing at it now")


class Summary(Frozen):
    """The one screen at the top: every version with its status and aliases, and what is going on now."""

    model: str
    generated_at: datetime
    versions: list[VersionRow]
    aliases: dict[str, int]
    active_rollout: str | None = Field(default=None, description="'vN (phase, stage k)' of an unfinished rollout")
    last_drift: str | None = Field(default=None, description="verdict and window of the newest drift check")


class TrafficStep(Frozen):
    """From ``at`` until the next step, each version's percent of served traffic (a shadow serves 0 %)."""

    at: datetime
    shares: dict[int, float]
    shadow: int | None = None
    source: str = Field(description="what set it: 'split rN: reason' or 'champion alias (no split yet)'")


class ArmStats(Frozen):
    """One arm (champion or candidate) over one stage window of the prediction log.

    Rates carry 95 % Wilson intervals (``lifecycle.drift_policy.wilson_interval``); the latency mean a normal
    interval from the ``ok`` answers' variance. ``None`` when the window holds no data for it: no data is
    never a rate of zero.
    """

    version: int
    role: str
    requests: int
    error_rate: Interval | None = Field(default=None, description="model + infra errors per request")
    feedback_success: Interval | None = Field(default=None, description="successes among answers with feedback")
    latency_mean_ms: Interval | None = None
    latency_p95_ms: float | None = None


class StageWindow(Frozen):
    """A stretch of a rollout between two recorded decisions, and how it ended."""

    stage: str
    since: datetime
    until: datetime
    ended_by: str | None = Field(description="advance, rollback, pause, approve, reject, resume, abort, pin; "
                                 "None while the stage is still running")
    reasons: list[str] = Field(default_factory=list)
    champion: ArmStats
    candidate: ArmStats


class RolloutReport(Frozen):
    model: str
    candidate: int
    champion: int
    plan: str
    phase: str
    started_at: datetime
    stages: list[StageWindow]


class DriftPoint(Frozen):
    """One monitor verdict on one window: per-column scores and the thresholds they were held to."""

    window_since: datetime
    window_until: datetime
    verdict: str
    scores: dict[str, float]
    thresholds: dict[str, float]
    drifted_columns: list[str] = Field(default_factory=list)
    action: str = Field(description="the audit action that recorded it")


class BenchmarkScore(Frozen):
    benchmark: str
    n_items: int
    exact_match: Interval | None = Field(description="accuracy on the golden set with a 95 % Wilson interval")
    malformed_rate: float
    latency_p95_ms: float


class GateResult(Frozen):
    """A version's offline evaluation and the gate's verdict on it (None: it never went through a gate)."""

    ref: str
    status: str
    verdict: str | None
    against: str | None = Field(default=None, description="the champion it was compared with")
    reasons: list[str] = Field(default_factory=list)
    intervals: dict[str, Interval] = Field(default_factory=dict, description="paired bootstrap of the difference")
    scores: list[BenchmarkScore] = Field(default_factory=list)


class Rollback(Frozen):
    ref: str
    at: datetime
    actor: str
    reason: str
    by: str = Field(description="'rollout' (statistics or a reviewer) or 'operator' (instant rollback)")
    stage: str | None = None


class LifecycleReport(Frozen):
    summary: Summary
    traffic: list[TrafficStep]
    rollouts: list[RolloutReport]
    drift: list[DriftPoint]
    gates: list[GateResult]
    rollbacks: list[Rollback]
    audit: AuditStatus
