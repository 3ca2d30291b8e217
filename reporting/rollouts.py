"""Per-stage champion vs candidate metrics of each rollout, recomputed from the prediction log.

A rollout's stored state (``registry.rollouts``) keeps one ``StageRecord`` per decision that moved it, with its
time and reasons. The stretch between two decisions is a stage window: from the rollout's start (or the previous
decision) up to this decision. Each window is aggregated per arm from the prediction log (``PredictionStore``),
so the report shows all the traffic of the stage — the flow's own looks skipped a settle time after each split
change and count only the requests routed by the stage's own split (a gateway still loading the candidate routes by
the previous one), so their counts can be lower. Holds change nothing and are not recorded, so a stage the
flow looked at ten times is one window here.

Intervals are 95 %: Wilson for rates (``lifecycle.drift_policy.wilson_interval``), and for the latency mean
``mean ± 1.96 · sd / sqrt(n)`` over the ``ok`` answers (normal approximation: fine from a few dozen answers;
fixed-horizon intervals, for reading, not the anytime-valid ones the flow decides with).
"""

from __future__ import annotations

import math
from datetime import datetime

from lifecycle.drift_policy import wilson_interval
from lifecycle.gate import Interval
from lifecycle.predictions import VersionAggregate, as_utc, parse_utc
from lifecycle.rollout_state import RolloutState
from registry.predictions import PredictionStore
from registry.rollouts import get_rollout
from registry.store import RegistryStore
from reporting.records import ArmStats, RolloutReport, StageWindow

CONFIDENCE = 0.95
_Z = 1.959963984540054  # normal quantile of 0.975


def rate(successes: int, n: int) -> Interval | None:
    """``successes / n`` with its Wilson interval; None without data (never a rate of zero)."""
    if n <= 0:
        return None
    low, high = wilson_interval(successes, n, CONFIDENCE)
    return Interval(mean=successes / n, lower=low, upper=high, confidence=CONFIDENCE, n=n)


def latency_mean(agg: VersionAggregate) -> Interval | None:
    """Mean latency of the ``ok`` answers ± its normal interval; None below two answers (no spread to go on)."""
    mean, var = agg.latency_mean_ms, agg.latency_var_ms2
    if mean is None or var is None:
        return None
    half = _Z * math.sqrt(var / agg.ok)
    return Interval(mean=mean, lower=max(0.0, mean - half), upper=mean + half, confidence=CONFIDENCE, n=agg.ok)


def arm_stats(version: int, role: str, agg: VersionAggregate | None) -> ArmStats:
    if agg is None:
        return ArmStats(version=version, role=role, requests=0)
    return ArmStats(version=version, role=role, requests=agg.requests,
                    error_rate=rate(agg.model_errors + agg.infra_errors, agg.requests),
                    feedback_success=rate(agg.feedback_success, agg.feedback_count),
                    latency_mean_ms=latency_mean(agg), latency_p95_ms=agg.latency_p95_ms)


def _window(predictions: PredictionStore, state: RolloutState, stage: str, since: datetime, until: datetime,
            ended_by: str | None, reasons: list[str]) -> StageWindow:
    # As the decisions count: the requests whose caller named a version are not the split's (Prediction.pinned), and
    # a shadow stage compares the requests that have a copy (Prediction.shadow_shed; no row is marked elsewhere).
    found = (predictions.aggregates(state.model, since, until, routed_only=True, mirrored_only=True)
             if until > since else [])
    champion = next((a for a in found if a.version == state.champion and a.role == "champion"), None)
    # The candidate answers as the shadow in a 0 % stage and as the challenger after it.
    candidate = next((a for a in found if a.version == state.candidate and a.role in ("challenger", "shadow")), None)
    return StageWindow(stage=stage, since=since, until=until, ended_by=ended_by, reasons=reasons,
                       champion=arm_stats(state.champion, "champion", champion),
                       candidate=arm_stats(state.candidate, candidate.role if candidate else "challenger", candidate))


def stage_windows(predictions: PredictionStore, state: RolloutState, now: datetime) -> list[StageWindow]:
    """One window per recorded decision, plus the running stage's window up to ``now`` if unfinished."""
    windows, since = [], parse_utc(state.started_at)
    for record in state.history:
        until = parse_utc(record.at)
        windows.append(_window(predictions, state, record.stage, since, until, record.action, record.reasons))
        since = until
    if not state.terminal:
        # The state keeps the stage's index, not its name: the plan that names it may have changed since.
        windows.append(_window(predictions, state, f"stage {state.stage_index} ({state.phase})", since,
                               max(as_utc(now), since), None, []))
    return windows


def rollout_reports(store: RegistryStore, model: str, numbers: list[int], now: datetime) -> list[RolloutReport]:
    """Every stored rollout of the model's versions, oldest first."""
    predictions = PredictionStore(store.engine)
    reports = []
    for number in numbers:
        state = get_rollout(store, model, number)
        if state is None:
            continue
        reports.append(RolloutReport(model=model, candidate=state.candidate, champion=state.champion,
                                     plan=f"{state.plan_name} v{state.plan_version}", phase=state.phase,
                                     started_at=parse_utc(state.started_at),
                                     stages=stage_windows(predictions, state, now)))
    return sorted(reports, key=lambda r: r.started_at)
