"""Decommission flow: retire what the retention policy says, refuse what it must.

Plans with ``lifecycle.retention.plan_retention`` (pure): aliased versions (champion, previous, challenger),
versions the traffic split names and the versions of a running rollout always stay; of the rest, the
``keep_recent`` most recent resting versions and everything younger than ``retire_after_days`` stay.
Each version to retire is then retired by ``registry.retire.retire_version``, which re-checks those holds
under the registry lock (refusing, and auditing the refusal, if the plan went stale), unloads it from every
gateway replica (split revision bump), writes its tombstone, archives or deletes its weights, and marks it
``decommissioned``. A run killed midway is completed by the next run. Then the prediction log: the answers logged
before the policy's cutoff (``prediction_log_days``, held back to a running rollout's start and to the drift
monitor's pinned reference window; ``plan_log_purge``) are deleted with the feedback on them, in batches: the
intent audited first (``predictions.purge_started``), the count after (``predictions.purged``).

Inputs: ``model`` (default: SLM_MODEL_NAME), ``policy_path`` (``configs/retention.yaml``, relative to the
project root), ``dry_run`` (plan and report only: nothing changes, nothing is audited), ``monitor_policy``
(``configs/monitor.yaml``: a ``reference: {kind: window}`` there is kept from its ``since``; empty: none).

Outputs: :class:`DecommissionOutcome`; a table artifact ``decommission-<model>`` listing every version with
its action (keep, retire(d), refused, done) and reasons, plus a summary; the event
``slm.version.decommissioned`` (resource ``slm.model.<model>``, payload ``version: MODEL:vN``) per retired
version; audit events ``retention.planned`` (with the log's cutoff and the rows due), each retirement step,
``predictions.purge_started`` and ``predictions.purged``.

Run it:  ``slm decommission [--model NAME] [--policy FILE] [--dry-run] [--json]``, or deploy with
``prefect --no-prompt deploy --all`` (scheduled deployment ``decommission/decommission``).
"""

from __future__ import annotations

from prefect import flow

from lifecycle.records import Frozen
from lifecycle.retention import LogPurge, RetentionDecision
from tasks.decommission import PurgeOutcome, RetireOutcome, plan_decommission, purge_log, report, retire
from tasks.report import publish_report


class DecommissionOutcome(Frozen):
    model: str
    dry_run: bool
    decisions: list[RetentionDecision]
    outcomes: list[RetireOutcome]
    log_plan: LogPurge  # the prediction log's cutoff and why
    log_rows_due: int  # answers logged before the cutoff when planned
    log_purge: PurgeOutcome | None = None  # what was deleted; None: a dry run, or a policy that keeps the log for ever

    @property
    def retired(self) -> list[str]:
        return [o.ref for o in self.outcomes if o.outcome == "retired"]

    @property
    def refused(self) -> list[str]:
        return [o.ref for o in self.outcomes if o.outcome == "refused"]


@flow(name="decommission", log_prints=True)
def decommission(model: str | None = None, policy_path: str = "configs/retention.yaml",
                 dry_run: bool = False, monitor_policy: str | None = "configs/monitor.yaml") -> DecommissionOutcome:
    """Retire the versions the retention policy lets go; never an aliased, split or rollout version.

    Args:
        model: registry model; empty: SLM_MODEL_NAME
        policy_path: retention policy YAML (lifecycle.retention.RetentionPolicy), relative to the project root
        dry_run: plan and report only: nothing changes, nothing is audited
        monitor_policy: the drift monitor's policy YAML, whose pinned reference window (if any) the log purge
            keeps; empty: none
    """
    plan = plan_decommission(model, policy_path, dry_run, monitor_policy)
    to_retire = [d for d in plan.decisions if d.action == "retire"]
    outcomes = [] if dry_run else [retire(plan, d) for d in to_retire]
    purged = None if dry_run else purge_log(plan)
    report(plan, outcomes, dry_run, purged)
    if not dry_run:
        publish_report(plan.model)
    print(f"{plan.model}: {len(to_retire)} to retire"
          + ("" if dry_run else f", {sum(o.outcome == 'retired' for o in outcomes)} retired, "
             f"{sum(o.outcome == 'refused' for o in outcomes)} refused")
          + f"; prediction log: {plan.log_rows_due} answers "
          + ("due" if dry_run or purged is None else f"due, {purged.rows} deleted"))
    return DecommissionOutcome(model=plan.model, dry_run=dry_run, decisions=plan.decisions, outcomes=outcomes,
                               log_plan=plan.log_purge, log_rows_due=plan.log_rows_due, log_purge=purged)
