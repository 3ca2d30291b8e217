"""The monitor's hand-off check: announce again a published candidate that no rollout ever started.

The decision is :func:`lifecycle.handoff.decide_handoff` (why a candidate can be stranded, and the rules); this
task gathers its facts from the registry and Prefect, and carries it out: the re-announcement is audited as
``slm.candidate.reannounced`` (appended only if no other run did so within the grace, in one transaction with that
check), then the Prefect event ``slm.candidate.published`` goes out again with the payload of the first, so the
rollout deployment's automation starts the rollout with the plan the retrain named.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from lifecycle.handoff import HandoffDecision, PublishedCandidate, decide_handoff
from lifecycle.predictions import as_utc
from lifecycle.status import Alias, VersionStatus
from registry.rollouts import active_rollout, get_rollout
from registry.store import NotFoundError, RegistryStore
from tasks.connect import open_registry
from tasks.events import resource
from tasks.monitor import MonitorPlan, automations_listen, running_flow_since

ACTOR = "monitor-flow"
PUBLISHED, REANNOUNCED = "slm.candidate.published", "slm.candidate.reannounced"


def _ts(value: str) -> datetime:
    return as_utc(datetime.fromisoformat(value))


def stranded_candidates(store: RegistryStore, model: str) -> tuple[list[PublishedCandidate], dict[str, dict]]:
    """The model's versions announced as published that are still candidates with no rollout of their own, and
    each one's announcement payload (by ref)."""
    events = store.events_about(model, [PUBLISHED, REANNOUNCED])
    published = {e.subject: e for e in events if e.action == PUBLISHED}
    again: dict[str, list[datetime]] = {}
    for e in events:
        if e.action == REANNOUNCED:
            again.setdefault(e.subject, []).append(_ts(e.ts))
    stranded = []
    for ref, event in published.items():
        number = int(ref.rsplit(":v", 1)[1])
        try:
            version = store.get_version(model, number)
        except NotFoundError:
            continue
        if version.status is not VersionStatus.CANDIDATE or get_rollout(store, model, number) is not None:
            continue
        stranded.append(PublishedCandidate(ref=ref, number=number, published_at=_ts(event.ts),
                                           gated_against=event.payload.get("champion"),
                                           reannounced_at=sorted(again.get(ref, []))))
    return stranded, {ref: published[ref].payload for ref in (c.ref for c in stranded)}


def rollout_busy(store: RegistryStore, model: str, now: datetime) -> str | None:
    """Why a rollout cannot start now, or None: an unfinished rollout of the model, or a rollout run queued or
    running (of any model: a run the automation started may not have stored its first state yet)."""
    rollout = active_rollout(store, model)
    if rollout is not None:
        return f"the rollout of {model}:v{rollout.candidate} is unfinished ({rollout.phase})"
    since = running_flow_since("rollout", now)
    if since is not None:
        return f"a rollout flow run is queued or running since {since:%Y-%m-%d %H:%M} UTC"
    return None


@task(name="hand-off-check", cache_policy=NO_CACHE)
def check_handoff(plan: MonitorPlan) -> HandoffDecision:
    """Announce again the candidate :func:`decide_handoff` names, if any; return the decision."""
    now = datetime.now(UTC)
    grace = timedelta(minutes=plan.policy.handoff_grace_minutes)
    with open_registry() as registry:
        store = registry.store
        stranded, payloads = stranded_candidates(store, plan.model)
        if not stranded:
            return HandoffDecision(reannounce=None, reasons=[])
        unheard = automations_listen(PUBLISHED, starts="a rollout", instead="roll it out by hand (slm rollout run)")
        if unheard is not None:
            return HandoffDecision(reannounce=None, reasons=[
                f"{', '.join(c.ref for c in stranded)} published with no rollout; {unheard}"])
        champion = store.get_alias(plan.model, Alias.CHAMPION)
        decision = decide_handoff(stranded, champion=None if champion is None else f"{plan.model}:v{champion}",
                                  rollout_busy=rollout_busy(store, plan.model, now), now=now, grace=grace,
                                  max_attempts=plan.policy.handoff_attempts)
        if decision.reannounce is None:
            return decision
        ref, payload = decision.reannounce, payloads[decision.reannounce]
        appended, earlier = store.append_audit_unless_since(
            actor=ACTOR, action=REANNOUNCED, subject=ref, since=now - grace,
            payload={"reasons": decision.reasons, "announcement": payload, "monitor_run": plan.run_id})
        if not appended:
            return HandoffDecision(reannounce=None, reasons=[
                f"another monitor run announced {ref} again at {_ts(earlier.ts):%Y-%m-%d %H:%M:%S} UTC"])
    emit_event(event=PUBLISHED, resource=resource(plan.model), payload=payload)
    return decision
