"""Decommission tasks: plan by the retention policy (pure, lifecycle.retention), retire (registry.retire), purge the
prediction log (registry.predictions), report."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Literal

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from lifecycle.config import load_yaml_config
from lifecycle.drift_policy import DriftPolicy
from lifecycle.predictions import as_utc
from lifecycle.records import Frozen
from lifecycle.retention import LogPurge, RetentionDecision, RetentionPolicy, plan_log_purge, plan_retention
from lifecycle.settings import in_project
from registry.locks import LockBusy
from registry.predictions import PredictionStore
from registry.retire import Retirement, RetirementRefused, retention_inputs, retire_version
from tasks.connect import open_registry
from tasks.events import announce

ACTOR = "decommission-flow"


class DecommissionPlan(Frozen):
    model: str
    policy: RetentionPolicy
    policy_path: str
    decided_at: datetime
    decisions: list[RetentionDecision]
    log_purge: LogPurge
    log_rows_due: int = 0  # logged rows (served and shadow) before the cutoff when planned


class RetireOutcome(Frozen):
    ref: str
    outcome: Literal["retired", "refused"]
    reasons: list[str]
    tombstone_uri: str | None = None
    archive_uri: str | None = None
    answers_dropped: int = 0  # stored benchmark answers of its weights deleted (evaluation.answers)


class PurgeOutcome(Frozen):
    cutoff: datetime
    rows: int  # logged answers deleted (served and shadow rows)
    feedback: int  # feedback records of their requests deleted


def load_policy(policy_path: str) -> tuple[RetentionPolicy, Path]:
    path = in_project(policy_path)
    return load_yaml_config(RetentionPolicy, path), path


def log_readers(monitor_policy: str | None) -> list[tuple[str, datetime]]:
    """Who else reads the prediction log, and since when: the drift monitor's pinned reference window, when its
    policy (``configs/monitor.yaml``; None: none) compares against one (``reference: {kind: window}``)."""
    if not monitor_policy:
        return []
    reference = load_yaml_config(DriftPolicy, in_project(monitor_policy)).reference
    if reference.kind != "window":
        return []
    return [(f"the drift monitor's reference window ({monitor_policy})", as_utc(reference.since))]


@task(name="plan-decommission", cache_policy=NO_CACHE)
def plan_decommission(model: str | None, policy_path: str, dry_run: bool,
                      monitor_policy: str | None = None) -> DecommissionPlan:
    policy, path = load_policy(policy_path)
    readers = log_readers(monitor_policy)
    with open_registry() as registry:
        model = model or registry.default_model
        inputs = retention_inputs(registry, model)
        now = registry.store.clock()
        decisions = plan_retention(model, inputs.versions, aliases=inputs.aliases, split=inputs.split,
                                   rollout=inputs.rollout, policy=policy, now=now)
        purge = plan_log_purge(model, policy=policy, rollout=inputs.rollout, now=now, readers=readers)
        due = 0 if purge.cutoff is None else PredictionStore(registry.store.engine).count(model, before=purge.cutoff)
        if not dry_run:
            registry.store.append_audit(actor=ACTOR, action="retention.planned", subject=model, payload={
                "policy": policy.model_dump(mode="json"), "policy_path": str(path),
                "decisions": [{"version": d.ref, "status": d.status.value, "action": d.action, "reasons": d.reasons}
                              for d in decisions],
                "prediction_log": {"cutoff": purge.cutoff.isoformat() if purge.cutoff else None,
                                   "reasons": purge.reasons, "rows_due": due}})
    return DecommissionPlan(model=model, policy=policy, policy_path=str(path), decided_at=now, decisions=decisions,
                            log_purge=purge, log_rows_due=due)


@task(name="purge-prediction-log", cache_policy=NO_CACHE)
def purge_log(plan: DecommissionPlan) -> PurgeOutcome | None:
    """Delete the answers the policy no longer keeps (and the feedback on them); audited with the counts.

    The purge deletes in batches, each its own transaction: so its intent is audited first
    (``predictions.purge_started``, with the cutoff and the rows due), and a purge cut short by a crash is on
    record even though its ``predictions.purged`` never comes (the next run's covers what is left)."""
    cutoff = plan.log_purge.cutoff
    if cutoff is None:
        return None
    with open_registry() as registry:
        predictions = PredictionStore(registry.store.engine)
        due = predictions.count(plan.model, before=cutoff)
        policy = {"reasons": plan.log_purge.reasons, "policy": plan.policy.name,
                  "policy_version": plan.policy.version}
        if due:
            registry.store.append_audit(actor=ACTOR, action="predictions.purge_started", subject=plan.model,
                                        payload={"cutoff": cutoff.isoformat(), "rows_due": due, **policy})
        rows, feedback = predictions.purge_before(plan.model, cutoff)
        if rows or feedback:
            registry.store.append_audit(actor=ACTOR, action="predictions.purged", subject=plan.model, payload={
                "cutoff": cutoff.isoformat(), "rows": rows, "feedback": feedback, **policy})
    return PurgeOutcome(cutoff=cutoff, rows=rows, feedback=feedback)


@task(name="retire-version", cache_policy=NO_CACHE)
def retire(plan: DecommissionPlan, decision: RetentionDecision) -> RetireOutcome:
    """Retire one version; a refusal (the plan went stale) is an outcome, not a failure of the run."""
    # Imported here: the benchmark module (and its serving imports) is needed by this step only.
    from tasks.evaluation import answer_store, forget_answers

    dropped: list = []
    with open_registry() as registry:
        def close(done: Retirement) -> None:
            """Before the retirement's closing audit event: redone by the next run if this one dies in it."""
            dropped.extend(forget_answers(answer_store(), registry.store.list_versions(plan.model), decision.number))
            if not registry.store.has_event("slm.version.decommissioned", done.ref):  # once, whatever the re-runs
                announce(registry, "slm.version.decommissioned", plan.model, {
                    "model": plan.model, "version": done.ref, "artifacts": done.artifacts,
                    "archive_uri": done.archive_uri, "tombstone_uri": done.tombstone_uri,
                    "policy": plan.policy.name, "policy_version": plan.policy.version, "reasons": decision.reasons,
                }, actor=ACTOR, subject=done.ref)

        try:
            done = retire_version(registry, plan.model, decision.number, policy=plan.policy, actor=ACTOR,
                                  reason="; ".join(decision.reasons), before_close=close)
        except RetirementRefused as exc:
            return RetireOutcome(ref=decision.ref, outcome="refused", reasons=exc.holds)
        except LockBusy as exc:  # another run holds it (the schedule and a manual run): the next run finishes
            return RetireOutcome(ref=decision.ref, outcome="refused", reasons=[str(exc)])
    return RetireOutcome(ref=done.ref, outcome="retired", reasons=decision.reasons, tombstone_uri=done.tombstone_uri,
                         archive_uri=done.archive_uri, answers_dropped=len(dropped))


def report_rows(decisions: list[RetentionDecision], outcomes: list[RetireOutcome],
                dry_run: bool) -> list[dict[str, str]]:
    """One row per version: the plan's action, or what retiring it came to (retired, refused)."""
    by_ref = {o.ref: o for o in outcomes}
    rows = []
    for d in decisions:
        outcome = by_ref.get(d.ref)
        action = outcome.outcome if outcome else ("would retire" if dry_run and d.action == "retire" else d.action)
        reasons = outcome.reasons if outcome else d.reasons
        rows.append({"version": d.ref, "status": d.status.value, "action": action, "reasons": "; ".join(reasons)})
    return rows


def purge_line(plan: LogPurge, due: int, purge: PurgeOutcome | None) -> str:
    """One sentence on the prediction log, for the report and the CLI: what went, or would go."""
    if plan.cutoff is None:
        return "Prediction log: kept for ever (the policy sets no prediction_log_days)."
    when = f"{plan.cutoff:%Y-%m-%d %H:%M} UTC"
    if purge is None:
        return f"Prediction log: {due} answers logged before {when} would be deleted ({'; '.join(plan.reasons)})."
    return (f"Prediction log: {purge.rows} answers logged before {when} deleted, with {purge.feedback} feedback "
            f"records ({'; '.join(plan.reasons)}).")


@task(name="report-decommission", cache_policy=NO_CACHE)
def report(plan: DecommissionPlan, outcomes: list[RetireOutcome], dry_run: bool,
           purge: PurgeOutcome | None = None) -> list[dict[str, str]]:
    rows = report_rows(plan.decisions, outcomes, dry_run)
    key = "decommission-" + re.sub(r"[^a-z0-9-]+", "-", plan.model.lower())
    p = plan.policy
    create_table_artifact(key=key, table=rows, description=f"{plan.model}: kept and retired versions, with reasons")
    counts = {a: sum(r["action"] == a for r in rows) for a in dict.fromkeys(r["action"] for r in rows)}
    create_markdown_artifact(key=f"{key}-summary", description="retention policy and outcome", markdown=(
        f"**{plan.model}** — policy `{p.name}` v{p.version} from `{plan.policy_path}`: keep the {p.keep_recent} most "
        f"recent resting versions, retire the rest after {p.retire_after_days:g} days, weights: {p.artifacts}."
        f"{' **Dry run: nothing changed.**' if dry_run else ''}\n\n"
        + ", ".join(f"{n} {a}" for a, n in counts.items())
        + "\n\n" + purge_line(plan.log_purge, plan.log_rows_due, purge)))
    return rows
