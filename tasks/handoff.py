"""The monitor's hand-off check: announce again a published candidate whose announcement Prefect never received.

The decision is :func:`lifecycle.handoff.decide_handoff` (why a candidate can be stranded, and the rules); this
task gathers its facts from the registry and the Prefect server (its stored events, its rollout runs), and carries
it out: the re-announcement is audited as ``slm.candidate.reannounced`` (appended only if no other run did so within
the grace, in one transaction with that check), then the Prefect event ``slm.candidate.published`` goes out again
with the payload of the first, so the rollout deployment's automation starts the rollout with the plan the retrain
named. A failure to gather the facts (the Prefect API down) is a reason in the summary, never a failed monitor run.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from lifecycle.handoff import HandoffDecision, PublishedCandidate, decide_handoff, newest
from lifecycle.status import Alias, VersionStatus
from registry.rollouts import active_rollout, get_rollout
from registry.store import NotFoundError, RegistryStore
from tasks.connect import open_registry
from tasks.events import prefect_api, resource, server_has_event
from tasks.monitor import MonitorPlan, automations_listen, running_flow_since

ACTOR = "monitor-flow"
PUBLISHED, REANNOUNCED = "slm.candidate.published", "slm.candidate.reannounced"
log = logging.getLogger(__name__)


def stranded_candidates(store: RegistryStore, model: str, since: datetime | None = None
                        ) -> tuple[list[PublishedCandidate], dict[str, dict]]:
    """The model's versions announced as published (from ``since`` on) that are still candidates with no rollout
    row of their own (an aborted one's row stays: an operator stopped it), and each one's announcement payload as
    it was sent (by ref)."""
    events = store.events_about(model, [PUBLISHED, REANNOUNCED])
    published = {e.subject: e for e in events if e.action == PUBLISHED and (since is None or e.at >= since)}
    again: dict[str, list[datetime]] = {}
    for e in events:
        if e.action == REANNOUNCED:
            again.setdefault(e.subject, []).append(e.at)
    stranded = []
    for ref, event in published.items():
        number = int(ref.rsplit(":v", 1)[1])
        try:
            version = store.get_version(model, number)
        except NotFoundError:
            continue
        if version.status is not VersionStatus.CANDIDATE or get_rollout(store, model, number) is not None:
            continue
        stranded.append(PublishedCandidate(ref=ref, number=number, published_at=event.at,
                                           gated_against=event.payload.get("champion"),
                                           announced_to=event.payload.get("prefect_api", ""),
                                           reannounced_at=sorted(again.get(ref, []))))
    sent = {c.ref: {k: v for k, v in published[c.ref].payload.items() if k != "prefect_api"} for c in stranded}
    return stranded, sent


def rollout_busy(store: RegistryStore, model: str, now: datetime) -> str | None:
    """Why the model's rollout cannot start now, or None: an unfinished rollout of the model, or a rollout run of
    it queued or running (one the automation started may not have stored its first state yet). Runs of other
    models' versions do not count."""
    rollout = active_rollout(store, model)
    if rollout is not None:
        return f"the rollout of {model}:v{rollout.candidate} is unfinished ({rollout.phase})"

    def of_model(run) -> bool:
        version = ((run.parameters or {}).get("params") or {}).get("version")
        return not isinstance(version, str) or version.startswith(f"{model}:")

    since = running_flow_since("rollout", now, keep=of_model)
    if since is not None:
        return f"a rollout flow run of {model} is queued or running since {since:%Y-%m-%d %H:%M} UTC"
    return None


def prefect_heard(model: str, ref: str, since: datetime) -> bool:
    """Does the Prefect server hold an ``slm.candidate.published`` event of ``ref`` from ``since`` on?"""
    return server_has_event(PUBLISHED, model, since, version=ref)


@task(name="hand-off-check", cache_policy=NO_CACHE)
def check_handoff(plan: MonitorPlan) -> HandoffDecision:
    """Announce again the candidate :func:`decide_handoff` names, if any; return the decision. Never raises: a
    failure is the decision's reason."""
    try:
        return _check(plan)
    except Exception as exc:  # noqa: BLE001 - the drift check must run whatever happens here
        log.warning("hand-off check of %s failed", plan.model, exc_info=True)
        return HandoffDecision(reannounce=None, reasons=[
            f"the hand-off check failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "the next monitor run tries again"])


def _check(plan: MonitorPlan) -> HandoffDecision:
    now = datetime.now(UTC)
    policy = plan.policy
    grace = timedelta(minutes=policy.handoff_grace_minutes)
    with open_registry() as registry:
        store = registry.store
        stranded, payloads = stranded_candidates(store, plan.model,
                                                 since=now - timedelta(hours=policy.handoff_max_age_hours))
        last = newest(stranded)
        if last is None:
            return HandoffDecision(reannounce=None, reasons=[])
        unheard = automations_listen(PUBLISHED, starts="a rollout",
                                     instead=f"roll it out by hand (slm rollout run {last.ref})")
        if unheard is not None:  # also: no Prefect server at all
            return HandoffDecision(reannounce=None, reasons=[f"{last.ref} was published with no rollout; {unheard}"])
        server, heard = prefect_api() or "", None
        if last.announced_to:
            try:
                heard = prefect_heard(plan.model, last.ref, last.published_at)
            except Exception:  # noqa: BLE001 - cannot tell: the decision says so
                log.warning("could not read the Prefect server's events", exc_info=True)
        champion = store.get_alias(plan.model, Alias.CHAMPION)
        decision = decide_handoff(
            stranded, server=server, heard=heard, champion=None if champion is None else f"{plan.model}:v{champion}",
            rollout_busy=rollout_busy(store, plan.model, now), now=now, grace=grace,
            max_age=timedelta(hours=policy.handoff_max_age_hours), max_attempts=policy.handoff_attempts)
        if decision.reannounce is None:
            return decision
        ref, payload = decision.reannounce, payloads[decision.reannounce]
        appended, earlier = store.append_audit_unless_since(
            actor=ACTOR, action=REANNOUNCED, subject=ref, since=now - grace,
            payload={"reasons": decision.reasons, "announcement": payload, "monitor_run": plan.run_id})
        if not appended:
            return HandoffDecision(reannounce=None, reasons=[
                f"another monitor run announced {ref} again at {earlier.at:%Y-%m-%d %H:%M:%S} UTC"])
    emit_event(event=PUBLISHED, resource=resource(plan.model), payload=payload)
    return decision
