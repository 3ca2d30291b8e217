"""Read everything the report shows from the registry store, into one ``LifecycleReport``.

Sources, all in the registry store (SQLite by default, PostgreSQL by URL):

* versions, statuses and their history, aliases and their history: the store's tables;
* evals per benchmark: the ``evals`` table; the gate's verdict and reasons: the ``slm.candidate.published`` /
  ``slm.gate.failed`` audit event of the version, its intervals from the matching ``gate.decided`` event;
* traffic: ``traffic.split`` audit events (``reporting.timeline``);
* rollouts: the ``rollouts`` table and the prediction log (``reporting.rollouts``);
* drift: ``drift.checked`` and fired drift audit events (``reporting.drift``);
* rollbacks: status changes to ``rolled_back``, with the rollout that caused them, if any;
* the audit chain: ``RegistryStore.verify_audit()``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from lifecycle.audit import AuditEvent
from lifecycle.gate import Interval
from lifecycle.records import ModelVersion
from lifecycle.rollout_state import TERMINAL
from lifecycle.status import Alias, VersionStatus
from registry.store import RegistryStore, is_unreadable
from reporting.drift import drift_points
from reporting.records import (
    AuditStatus,
    BenchmarkScore,
    DriftPoint,
    GateResult,
    LifecycleReport,
    Rollback,
    RolloutReport,
    Summary,
    VersionRow,
)
from reporting.rollouts import rate, rollout_reports
from reporting.timeline import traffic_steps

GATE_ANNOUNCED = ("slm.candidate.published", "slm.gate.failed")


class NothingToReport(LookupError):
    """The registry holds no version of the model: there is no lifecycle to report yet."""


def _mine(events: list[AuditEvent], model: str) -> list[AuditEvent]:
    """The model's events; rows edited past reading are left out here (the report's audit section names them)."""
    return [e for e in events if (e.subject == model or e.subject.startswith(f"{model}:")) and not is_unreadable(e)]


def _scores(version: ModelVersion) -> list[BenchmarkScore]:
    # exact_match is correct / n_items, so the count of correct items is recovered exactly by rounding.
    return [BenchmarkScore(benchmark=r.benchmark, n_items=r.n_items,
                           exact_match=rate(round(r.exact_match * r.n_items), r.n_items),
                           malformed_rate=r.malformed_rate, latency_p95_ms=r.latency_p95_ms)
            for r in version.evals]


def gate_result(version: ModelVersion, events: list[AuditEvent]) -> GateResult:
    """The gate's verdict on one version, from what its retrain announced; None for a version never gated
    (the bootstrap's first version, or one registered by hand)."""
    announced = [e for e in events if e.action in GATE_ANNOUNCED and e.subject == version.ref]
    registered = next((e for e in events if e.action == "version.registered" and e.subject == version.ref), None)
    verdict, against, reasons, intervals = None, None, [version.reason], {}
    if announced:
        event = announced[-1]
        verdict, against = event.payload.get("verdict"), event.payload.get("champion")
        reasons = list(event.payload.get("reasons") or reasons)
        # gate.decided is written before the version's number exists: the retrain run both name identifies it;
        # events from before the run was recorded fall back to the same champion and reasons, word for word.
        run = event.payload.get("run")
        decided = [e for e in events if e.action == "gate.decided" and e.seq < event.seq
                   and (e.payload.get("run") == run if run else
                        e.payload.get("champion") == against and e.payload.get("reasons") == reasons)]
        if decided:
            intervals = {k: Interval.model_validate(v) for k, v in (decided[-1].payload.get("intervals") or {}).items()}
    elif registered is not None and "gate" in registered.payload:
        verdict, against = str(registered.payload["gate"]), registered.payload.get("champion")
    return GateResult(ref=version.ref, status=str(version.status), verdict=verdict, against=against, reasons=reasons,
                      intervals=intervals, scores=_scores(version))


def rollbacks(store: RegistryStore, model: str, versions: list[ModelVersion],
              rollouts: list[RolloutReport]) -> list[Rollback]:
    """Every move to ``rolled_back``: by a rollout (its statistics or a reviewer) or an operator's instant one."""
    rolled_back_by_rollout = {r.candidate: r for r in rollouts if r.phase == "rolled_back"}
    found = []
    for version in versions:
        for change in store.status_history(model, version.number):
            if change["to_status"] != VersionStatus.ROLLED_BACK:
                continue
            rollout = rolled_back_by_rollout.get(version.number)
            found.append(Rollback(ref=version.ref, at=change["at"], actor=change["actor"], reason=change["reason"],
                                  by="rollout" if rollout else "operator",
                                  stage=rollout.stages[-1].stage if rollout and rollout.stages else None))
    return sorted(found, key=lambda r: r.at)


def summary(model: str, versions: list[ModelVersion], aliases: dict[str, int], rollouts: list[RolloutReport],
            drift: list[DriftPoint], now: datetime) -> Summary:
    rows = [VersionRow(number=v.number, ref=v.ref, status=str(v.status), created_at=v.created_at, reason=v.reason,
                       aliases=sorted(a for a, n in aliases.items() if n == v.number)) for v in versions]
    active = next((r for r in rollouts if r.phase not in TERMINAL), None)
    last = drift[-1] if drift else None
    return Summary(
        model=model, generated_at=now, versions=rows, aliases=aliases,
        active_rollout=f"v{active.candidate} ({active.phase}, {active.stages[-1].stage})" if active else None,
        last_drift=(f"{last.verdict} on {last.window_since:%Y-%m-%d %H:%M}..{last.window_until:%Y-%m-%d %H:%M} UTC"
                    if last else None))


def gather(store: RegistryStore, model: str, *, now: datetime | None = None) -> LifecycleReport:
    """Everything the report shows about ``model``; raises :class:`NothingToReport` when it has no version."""
    now = now or datetime.now(UTC)
    listed = store.list_versions(model)
    if not listed:
        known = ", ".join(store.models()) or "none"
        raise NothingToReport(f"model {model!r} has no versions in the registry at "
                              f"{store.engine.url.render_as_string(hide_password=True)} (models there: {known}); "
                              "register one first, e.g. `slm bootstrap`")
    versions = [store.get_version(model, v.number) for v in listed]  # with their evals
    events = _mine(store.audit_events(), model)
    aliases = store.aliases(model)
    rollouts = rollout_reports(store, model, [v.number for v in versions], now)
    drift = drift_points(events, model)
    verified = store.verify_audit()
    return LifecycleReport(
        summary=summary(model, versions, aliases, rollouts, drift, now),
        traffic=traffic_steps(events, store.alias_history(model, Alias.CHAMPION), model),
        rollouts=rollouts, drift=drift, gates=[gate_result(v, events) for v in versions],
        rollbacks=rollbacks(store, model, versions, rollouts),
        audit=AuditStatus(ok=verified.ok, checked=verified.checked, problems=verified.problems))
