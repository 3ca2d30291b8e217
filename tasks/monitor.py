"""Tasks of the monitor flow: plan the window, check drift, weigh the feedback, apply the storm rule, announce."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from data_checks.drift import DriftReport, check_drift, frame_from_columns, frame_from_pairs
from data_checks.readers import read_jsonl
from lifecycle.config import load_yaml_config
from lifecycle.drift_policy import (
    COLUMNS,
    DriftDecision,
    DriftPolicy,
    FeedbackEvidence,
    MonitorParams,
    TriggerDecision,
    decide_drift,
    decide_trigger,
)
from lifecycle.handoff import HandoffDecision, same_server
from lifecycle.predictions import as_utc, parse_utc
from lifecycle.records import Frozen, ModelVersion
from lifecycle.settings import get_settings, in_project
from registry.predictions import PredictionStore
from registry.rollouts import active_rollout
from registry.service import Registry
from tasks.connect import open_registry
from tasks.events import prefect_api, resource, server_has_event
from training.loop import torch_threads

ACTOR = "monitor-flow"
DETECTED, SUPPRESSED = "slm.drift.detected", "slm.drift.suppressed"
# What a finished retrain leaves in the audit log (tasks/register.py, tasks/data.py).
log = logging.getLogger(__name__)
RETRAIN_DONE = frozenset({"slm.candidate.published", "slm.gate.failed", "slm.data.rejected"})


class MonitorPlan(Frozen):
    model: str
    policy: DriftPolicy
    policy_path: str
    champion: ModelVersion
    since: datetime
    until: datetime
    data_path: str | None  # the labelled drop the event names; None: the retrain config's
    report_path: Path
    run_id: str


@task(name="plan-monitor", cache_policy=NO_CACHE)
def plan_monitor(params: MonitorParams, run_id: str) -> MonitorPlan:
    settings = get_settings()
    policy = load_yaml_config(DriftPolicy, in_project(params.policy), rollout_plan=params.rollout_plan)
    model = params.model or settings.model_name
    since, until = params.window(datetime.now(UTC))
    with open_registry() as registry:
        champion = registry.get(f"{model}:champion")
    drop = params.data or policy.labelled_drop
    data_path = str(in_project(drop)) if drop else None  # the retrain config's drop (its own default when unset)
    report = settings.home / "reports" / model / f"drift-{until:%Y%m%dT%H%M%SZ}-{run_id[:8]}.html"
    return MonitorPlan(model=model, policy=policy, policy_path=params.policy, champion=champion, since=since,
                       until=until, data_path=data_path, report_path=report, run_id=run_id)


def _reference(registry: Registry, store: PredictionStore, plan: MonitorPlan):
    ref = plan.policy.reference
    if ref.kind == "window":
        return frame_from_columns(store.served_columns(plan.model, ref.since, ref.until))
    lineage = plan.champion.lineage
    train = next((d for d in lineage.datasets if d.name == "train"), None) if lineage else None
    if train is None or train.snapshot is None:
        raise ValueError(f"{plan.champion.ref} records no training-data snapshot to compare with; use a "
                         "`window` reference in the policy")
    return frame_from_pairs(read_jsonl(registry.artifacts.dataset_path(train.snapshot)))


@task(name="check-drift", cache_policy=NO_CACHE)
def check_window(plan: MonitorPlan) -> DriftReport:
    with open_registry() as registry:
        store = PredictionStore(registry.store.engine)
        reference = _reference(registry, store, plan)
        current = frame_from_columns(store.served_columns(plan.model, plan.since, plan.until))
    settings = get_settings()
    encodes = any(COLUMNS[c] == "embedding" for c in plan.policy.columns)  # a sentence encoder runs: set threads
    with torch_threads(settings.torch_threads) if encodes else contextlib.nullcontext():
        report = check_drift(reference, current, plan.policy, html_path=plan.report_path,
                             embedding_cache=settings.home / "cache" / "embeddings")
    if report.html is not None:
        create_link_artifact(key="drift-report", link=report.html.as_uri(), link_text=report.html.name,
                             description=f"Evidently drift report, {plan.model} {plan.since:%Y-%m-%d %H:%M} to "
                             f"{plan.until:%Y-%m-%d %H:%M} UTC")
        prune_reports(plan.report_path.parent, plan.policy.reports_kept)
    return report


def prune_reports(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` drift reports in ``folder`` (a report is ~4 MB, a run every 15 minutes
    is ~400 MB a day); returns what it deleted. The audit log keeps every check's scores whatever is deleted."""
    reports = sorted(folder.glob("drift-*.html"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    for old in reports[keep:]:
        old.unlink(missing_ok=True)
    return reports[keep:]


@task(name="feedback-evidence", cache_policy=NO_CACHE)
def feedback_evidence(plan: MonitorPlan) -> FeedbackEvidence:
    """The champion's served answers with feedback in the window, and its eval at promotion."""
    with open_registry() as registry:
        rows = PredictionStore(registry.store.engine).aggregates(plan.model, plan.since, plan.until)
    mine = [a for a in rows if a.version == plan.champion.number and a.role == "champion"]
    baseline = next((r.exact_match for r in plan.champion.evals if r.benchmark == plan.policy.feedback.benchmark),
                    None)
    return FeedbackEvidence(n=sum(a.feedback_count for a in mine), successes=sum(a.feedback_success for a in mine),
                            baseline=baseline)


@task(name="judge-drift", cache_policy=NO_CACHE)
def judge(plan: MonitorPlan, report: DriftReport, feedback: FeedbackEvidence) -> DriftDecision:
    return decide_drift(report.columns, feedback, plan.policy, rows=report.rows_for_decision)


def running_retrain_since(now: datetime) -> datetime | None:
    """Earliest start of a retrain flow run that is scheduled (due), pending, running or paused.

    Any running retrain counts, whichever model it is for (a run started by hand may not name one): with several
    models in one workspace this suppresses conservatively.
    """
    return running_flow_since("retrain", now)


def running_flow_since(flow: str, now: datetime, keep: Callable[[object], bool] = lambda run: True
                       ) -> datetime | None:
    """Earliest start of a run of the flow named ``flow`` that is scheduled (due), pending, running or paused, among
    the runs ``keep`` accepts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    active = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
                                     flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                                         type=FlowRunFilterStateType(any_=active))))
    starts = [as_utc(r.start_time or r.expected_start_time or r.created) for r in runs
              if (r.start_time or r.expected_start_time or r.created) and keep(r)]
    due = [s for s in starts if s <= now]  # a run scheduled for later (a cron) is not running yet
    return min(due, default=None)


def automations_listen(event: str = DETECTED, starts: str = "a retrain", instead: str = "run slm retrain"
                       ) -> str | None:
    """None when an enabled automation of a Prefect server (PREFECT_API_URL) waits for ``event`` (the drift event by
    default); else why not. Without one the event would start nothing (``starts``), yet a recorded trigger would hold
    off the real monitor's for the whole cooldown. Without PREFECT_API_URL the flow runs on a temporary server of its
    own, whose automations are not the stack's. A server that cannot list its automations is trusted to have them
    (the event is sent)."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return (f"no Prefect server (PREFECT_API_URL is unset): no automation would start {starts}; start the stack "
                f"(slm up) and monitor there, or {instead}")
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            automations = client.read_automations()
    except Exception as exc:  # noqa: BLE001 - any failure to list: do not silence the event on a guess
        log.warning("could not list the Prefect server's automations (%s): assuming the one for %s is there",
                    exc, event)
        return None
    if any(a.enabled and event in _expected(a.trigger) for a in automations):
        return None
    return (f"no enabled automation on the Prefect server at {PREFECT_API_URL.value()} waits for {event}: the "
            f"event would start no {starts.removeprefix('a ')}; deploy prefect.yaml's (slm up) or enable it, or "
            f"{instead}")


def _expected(trigger) -> set[str]:
    """The event names a trigger waits for, compound triggers' included."""
    names = set(getattr(trigger, "expect", None) or ())
    for inner in getattr(trigger, "triggers", None) or ():
        names |= _expected(inner)
    return names


@task(name="storm-check", cache_policy=NO_CACHE)
def storm_check(plan: MonitorPlan, reannounced: str | None = None) -> TriggerDecision:
    """The storm rule's facts, then :func:`decide_trigger`. ``reannounced``: a candidate this run's hand-off check
    just announced again; its rollout is about to start, and counts as started now."""
    if (unheard := automations_listen()) is not None:
        return TriggerDecision(fire=False, reason=unheard)
    now = datetime.now(UTC)
    with open_registry() as registry:
        last = registry.store.last_event([DETECTED], plan.model)
        last_retrain = registry.store.last_event_at(list(RETRAIN_DONE), plan.model)
        rollout = active_rollout(registry.store, plan.model)
    last_trigger = None if last is None else last.at
    candidate, started = ((rollout.candidate, parse_utc(rollout.started_at)) if rollout is not None
                          else (int(reannounced.rsplit(":v", 1)[1]), now) if reannounced else (None, None))
    running = running_retrain_since(now)
    return decide_trigger(now=now, cooldown=plan.policy.cooldown, running_retrain_since=running,
                          last_retrain_at=last_retrain, last_trigger_at=last_trigger,
                          rollout_candidate=candidate, rollout_started_at=started,
                          last_trigger_lost=running is None and trigger_lost(plan, last, now))


def trigger_lost(plan: MonitorPlan, last, now: datetime) -> bool:
    """Did the last trigger (an audit event) never reach the Prefect server? Only asked of one that could hold the
    next off (within the cooldown), announced to this server (``prefect_api``), older than ``trigger_grace_minutes``
    (the event leaves from a background queue); matched on its ``monitor_run``. A server that cannot be read: not lost
    (the cooldown stands, as before the check)."""
    if last is None or not last.payload.get("prefect_api") or not last.payload.get("monitor_run"):
        return False
    at = last.at
    grace = timedelta(minutes=plan.policy.trigger_grace_minutes)
    if not at + grace <= now < at + plan.policy.cooldown:
        return False
    if not same_server(str(last.payload["prefect_api"]), prefect_api()):
        return False
    try:
        return not server_has_event(DETECTED, plan.model, at, monitor_run=last.payload["monitor_run"])
    except Exception:  # noqa: BLE001 - cannot tell: the recorded trigger holds, as before the check
        log.warning("could not read the Prefect server's events; the last trigger is taken as received", exc_info=True)
        return False


def drift_payload(plan: MonitorPlan, report: DriftReport, decision: DriftDecision,
                  feedback: FeedbackEvidence) -> dict[str, object]:
    """The ``slm.drift.detected`` payload. ``data_path``, ``retrain_config``, ``reason`` and ``rollout_plan`` are
    what the retrain deployment templates into RetrainParams ``data``, ``config``, ``reason`` and
    ``rollout_plan``."""
    drifted = ", ".join(decision.drifted_columns) or "no column"
    reason = (f"drift on {plan.model} {plan.since:%Y-%m-%dT%H:%MZ}..{plan.until:%Y-%m-%dT%H:%MZ}: {drifted}"
              + (" + feedback accuracy decay" if decision.decay else ""))
    return {
        "model": plan.model, "champion": plan.champion.ref,
        "window_since": plan.since.isoformat(), "window_until": plan.until.isoformat(),
        "rows": report.current_rows, "drifted_columns": decision.drifted_columns, "scores": decision.scores,
        "thresholds": {c.column: c.threshold for c in report.columns if c.score is not None},
        "decay": decision.decay, "feedback": feedback.model_dump(),
        "findings": decision.reasons(), "reason": reason,
        # "" when unset: the automation templates it into the retrain's parameters, where blank means "the
        # config's" (None would be templated as the text "None").
        "data_path": plan.data_path or "", "retrain_config": plan.policy.retrain_config,
        "rollout_plan": plan.policy.rollout_plan or "",
        "report": str(report.html) if report.html else None, "policy": plan.policy_path,
        "monitor_run": plan.run_id,
    }


@task(name="act-on-drift", cache_policy=NO_CACHE)
def act_on_drift(plan: MonitorPlan, report: DriftReport, decision: DriftDecision, feedback: FeedbackEvidence,
                 trigger: TriggerDecision) -> TriggerDecision:
    """Emit ``slm.drift.detected`` (audited), or, under the storm rule, only audit ``slm.drift.suppressed``.
    Returns the trigger as it finally stood.

    The storm check read the log a moment ago; another monitor run (a manual one, or late runs started together
    after a worker outage) may have fired since. So the detected event is appended only if none came within the
    cooldown, in one transaction with that check (``append_audit_unless_since``): one drift, one retrain."""
    payload = drift_payload(plan, report, decision, feedback)
    with open_registry() as registry:
        if trigger.fire:
            since = datetime.now(UTC) - plan.policy.cooldown
            if trigger.replaces is not None:  # a lost trigger holds nothing off; another run's since it does
                since = max(since, trigger.replaces + timedelta(microseconds=1))
            appended, event = registry.store.append_audit_unless_since(
                actor=ACTOR, action=DETECTED, subject=plan.model, payload={**payload, "prefect_api": prefect_api()},
                since=since)
            if appended:
                emit_event(event=DETECTED, resource=resource(plan.model), payload=payload)
                return trigger
            at = event.at
            trigger = TriggerDecision(fire=False, retry_after=at + plan.policy.cooldown, reason=(
                f"another monitor run fired for {plan.model} at {at:%Y-%m-%d %H:%M:%S} UTC, after this run's storm "
                "check: its retrain answers this drift"))
        retry = trigger.retry_after.isoformat() if trigger.retry_after else None
        registry.store.append_audit(actor=ACTOR, action=SUPPRESSED, subject=plan.model,
                                    payload={**payload, "suppressed": trigger.reason, "retry_after": retry})
    return trigger


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary(plan: MonitorPlan, report: DriftReport, decision: DriftDecision,
                    trigger: TriggerDecision | None, handoff: HandoffDecision | None = None) -> str:
    action = ("no action" if trigger is None else f"`{DETECTED}` emitted" if trigger.fire
              else f"trigger suppressed: {trigger.reason}")
    markdown = (f"### {plan.model}: champion {plan.champion.ref}, window {plan.since:%Y-%m-%d %H:%M} to "
                f"{plan.until:%Y-%m-%d %H:%M} UTC\n\n{report.summary_markdown(decision)}\n\n**Action:** {action}")
    if handoff is not None and handoff.reasons:
        markdown += "\n\n**Hand-off:** " + "; ".join(handoff.reasons)
    create_markdown_artifact(key="drift-summary", markdown=markdown, description="drift monitor verdict")
    return action
