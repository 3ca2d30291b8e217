"""Rollout flow: shadow → canary stages → 100 % → promote, or roll back the moment live traffic says worse.

Inputs: :class:`tasks.rollout.RolloutParams` — the candidate (``MODEL:vN``, filled from the
``slm.candidate.published`` event by the deployment's trigger), the plan (``configs/rollout.yaml``) and the
look interval. Every look reads the stage's window of the prediction log and decides with
``lifecycle.rollout_plan.decide_stage``; ``lifecycle.rollout_state`` turns verdicts into ordered effects,
``registry.rollout_exec`` saves them and carries them out (traffic first on a rollback).

Outputs: the candidate promoted (champion alias moved, the old champion kept as ``previous``) or rolled
back (champion at 100 %, status ``rolled_back`` with the reasons); events ``slm.rollout.stage``,
``slm.rollout.promoted`` / ``slm.rollout.rolled_back``; an audit event per decision with its statistics;
a progress artifact and a table artifact per decided stage. A pause (approval before the last stage, or an
inconclusive stage at its maximum duration) waits for a person: the Prefect UI's resume form, or
``slm rollout approve|reject``.

Killed at any point, running it again for the same candidate resumes where it was (the state and its
pending effects are in the registry). A second candidate of the same model is refused while one runs.

Run it:  ``slm rollout run MODEL:vN [--plan FILE]``  (ephemeral Prefect), or from the deployment
``rollout/rollout`` that ``slm.candidate.published`` starts.
"""

from __future__ import annotations

from prefect import flow
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.runtime import flow_run

from lifecycle.records import Frozen
from tasks.report import publish_report
from tasks.rollout import (
    Approval,
    RolloutParams,
    begin,
    load_plan,
    look,
    record_answer,
    show_progress,
    start_progress,
)


class RolloutOutcome(Frozen):
    version: str
    champion: str
    phase: str
    stage: str
    reasons: list[str]


@flow(name="rollout", log_prints=True)
def rollout(params: RolloutParams) -> RolloutOutcome:
    plan = load_plan(params)
    run_id = flow_run.get_id()
    state = begin(params, plan, str(run_id) if run_id else None)
    progress = start_progress(state, plan)
    while not state.terminal:
        if state.phase == "running":
            state, verdict = look(params, plan, state)
            show_progress(progress, state, plan, verdict)
            continue
        print(f"{state.model}:v{state.candidate} is {state.phase} at stage {plan.stages[state.stage_index].name}: "
              "waiting for a person (resume form in the UI, or `slm rollout approve|reject`)")
        try:
            answer = pause_flow_run(wait_for_input=Approval, timeout=params.approval_timeout_s,
                                    poll_interval=params.approval_poll_s, key=f"answer-{state.revision}")
        except FlowPauseTimeout:
            raise RuntimeError(f"nobody answered within {params.approval_timeout_s} s; the rollout stays "
                               f"{state.phase}: answer with `slm rollout approve|reject`, then run it again") from None
        state = record_answer(params, plan, state, answer)
        show_progress(progress, state, plan, None)
    publish_report(state.model)
    last = state.history[-1] if state.history else None
    return RolloutOutcome(version=f"{state.model}:v{state.candidate}", champion=f"{state.model}:v{state.champion}",
                          phase=state.phase, stage=plan.stages[state.stage_index].name,
                          reasons=last.reasons if last else [])
