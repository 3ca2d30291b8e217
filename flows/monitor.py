"""Monitor flow: compare a window of the prediction log with the champion's reference, and call for a
retrain when the world has moved.

Inputs: :class:`lifecycle.drift_policy.MonitorParams` (model, window as ``hours`` or ``since``/``until``,
policy YAML, labelled drop). Thresholds, reference and cooldown come from ``configs/monitor.yaml``.

Steps: Evidently drift on prompt descriptors, routes, outcomes and latency (``data_checks.drift``); the
champion's feedback accuracy against its accuracy at promotion; the pure verdict
(``lifecycle.drift_policy.decide_drift``). On drift or decay, the storm rule (``decide_trigger``: no trigger
while a retrain runs, within the cooldown of the last trigger (unless the server never received it) or retrain or
of an unfinished rollout's start, nor without a Prefect server) decides between emitting ``slm.drift.detected``
— resource ``slm.model.<name>``,
payload with the model, the window, drifted columns, scores and the labelled drop in ``data_path`` (blank: the
retrain config's) for the retrain automation; appended only if no other run fired meanwhile — and recording
``slm.drift.suppressed`` in the audit log only.

Before all that, the hand-off check (``tasks.handoff``, decided by ``lifecycle.handoff``): a candidate announced as
published whose announcement the Prefect server never received (the retrain's process died before it went out) and
that no rollout started is announced again, at most a few times; the storm rule counts its rollout as started.

Outputs: the Evidently HTML report under ``SLM_HOME/reports/<model>/`` (link artifact ``drift-report``), a
markdown summary (artifact ``drift-summary``), and the returned :class:`MonitorOutcome`.

Run it:  ``slm monitor [--hours 24] [--model NAME]``  (ephemeral Prefect), or on a schedule from the
``monitor`` deployment in prefect.yaml.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from lifecycle.drift_policy import MonitorParams
from lifecycle.records import Frozen
from tasks.handoff import check_handoff
from tasks.monitor import (
    act_on_drift,
    check_window,
    feedback_evidence,
    judge,
    plan_monitor,
    publish_summary,
    storm_check,
)
from tasks.report import record_drift_check


class MonitorOutcome(Frozen):
    model: str
    champion: str
    verdict: str
    drifted_columns: list[str]
    reasons: list[str]
    action: str
    event: bool
    report: str | None
    reannounced: str | None = None  # a stranded candidate announced again by the hand-off check
    handoff: list[str] = []  # the hand-off check's reasons; empty when every published candidate rolled out


@flow(name="monitor", log_prints=True)
def monitor(params: MonitorParams = MonitorParams()) -> MonitorOutcome:
    plan = plan_monitor(params, run_id=str(flow_run.get_id() or "local"))
    handoff = check_handoff(plan)  # first: whatever the drift check finds, and the storm rule counts its rollout
    report = check_window(plan)
    feedback = feedback_evidence(plan)
    decision = judge(plan, report, feedback)
    record_drift_check(plan, report, decision)
    trigger = None
    if decision.fire:
        trigger = act_on_drift(plan, report, decision, feedback, storm_check(plan, handoff.reannounce))
    action = publish_summary(plan, report, decision, trigger, handoff)
    return MonitorOutcome(model=plan.model, champion=plan.champion.ref, verdict=str(decision.verdict),
                          drifted_columns=decision.drifted_columns, reasons=decision.reasons(), action=action,
                          event=bool(trigger and trigger.fire), report=str(report.html) if report.html else None,
                          reannounced=handoff.reannounce, handoff=handoff.reasons)
