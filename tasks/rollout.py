"""Rollout tasks: thin wrappers over ``registry.rollout_exec`` that add Prefect events and artifacts."""

from __future__ import annotations

import time
import uuid
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.input import RunInput
from pydantic import Field, field_validator

from lifecycle.config import load_yaml_config
from lifecycle.records import Frozen
from lifecycle.rollout_plan import RolloutPlan, StageVerdict
from lifecycle.rollout_state import RolloutState
from lifecycle.settings import in_project
from lifecycle.verdict import Verdict
from registry import rollout_exec
from registry.predictions import PredictionStore
from registry.rollouts import get_rollout
from registry.store import ConcurrentChangeError
from tasks.connect import open_registry
from tasks.events import resource


class RolloutParams(Frozen):
    # Plain text, no rST markup: the Prefect UI shows this docstring above the deployment's run form.
    """What the rollout deployment takes; the slm.candidate.published trigger fills the version and the plan."""

    version: str = Field(description="the candidate to roll out, MODEL:vN (as in the published event's payload)")
    plan: str = Field(default="configs/rollout.yaml", description="the rollout plan (YAML), relative to the repo")
    look_interval_s: float | None = Field(default=None, gt=0, description=(
        "seconds between two looks at a stage; empty: the plan's look_interval_s"))
    settle_s: float | None = Field(default=None, ge=0, description=(
        "seconds after a split change before the stage's window opens; empty: the plan's settle_s"))
    approval_timeout_s: int = Field(default=86_400, ge=1, description="how long a pause waits for a person")
    approval_poll_s: int = Field(default=10, ge=1, description="how often a paused run checks for an answer")
    actor: str = Field(default="flow:rollout", description="who the audit log names")

    @field_validator("plan", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        # The trigger templates "{{ event.payload.rollout_plan }}" to "" for an event that names no plan.
        return cls.model_fields["plan"].default if isinstance(value, str) and not value.strip() else value


class Approval(RunInput):
    """The form a person fills in the Prefect UI (or `slm rollout approve|reject`) to answer a pause."""

    approve: bool = Field(description="true: go on (next stage, or resume the paused one); false: roll back")
    reviewer: str = Field(min_length=1, description="who decides: recorded in the audit log")
    comment: str = Field(default="", description="why")


def emit_rollout_event(event: str, payload: dict[str, Any], event_id: uuid.UUID) -> None:
    emit_event(event=event, resource=resource(payload["model"]), payload=payload, id=event_id)


def read_plan(plan: str) -> RolloutPlan:
    """The rollout plan YAML, relative to the repository unless absolute."""
    return load_yaml_config(RolloutPlan, in_project(plan))


@task(name="load-rollout-plan", cache_policy=NO_CACHE)
def load_plan(params: RolloutParams) -> RolloutPlan:
    """The plan, with this run's cadence where the run gives one."""
    cadence = {"look_interval_s": params.look_interval_s, "settle_s": params.settle_s}
    return read_plan(params.plan).model_copy(update={k: v for k, v in cadence.items() if v is not None})


@task(name="begin-rollout", cache_policy=NO_CACHE)
def begin(params: RolloutParams, plan: RolloutPlan, flow_run_id: str | None) -> RolloutState:
    with open_registry() as registry:
        model, number = registry.resolve(params.version)
        before = get_rollout(registry.store, model, number)
        # Before the pending effects are carried out: this run may die there too, and the next must see it drove.
        if (before is not None and (not before.terminal or before.pending)
                and before.flow_run_id not in (None, flow_run_id)):
            _supersede(before.flow_run_id, flow_run_id)
        return rollout_exec.begin(registry.store, model, number, plan, actor=params.actor, emit=emit_rollout_event,
                                  flow_run_id=flow_run_id)


def _supersede(old_run_id: str, new_run_id: str | None) -> None:
    """Mark the flow run that drove the rollout before this one Crashed, if Prefect still shows it running or
    paused: it was killed (nothing reports a SIGKILL), and left so the UI would show two runs driving one rollout."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            old = client.read_flow_run(uuid.UUID(old_run_id))
            if old.state is not None and not old.state.is_final():
                client.set_flow_run_state(old.id, Crashed(message=(
                    f"superseded: flow run {new_run_id} resumed this rollout from the registry; this run had "
                    "stopped without reporting (killed?)")), force=True)
    except (ObjectNotFound, httpx.HTTPError, OSError, ValueError):  # another Prefect API, or gone: nothing to mark
        pass


@task(name="look", cache_policy=NO_CACHE)
def look(params: RolloutParams, plan: RolloutPlan, state: RolloutState) -> tuple[RolloutState, StageVerdict | None]:
    """Wait one look interval, then decide the current stage on its live window."""
    time.sleep(plan.look_interval_s)
    with open_registry() as registry:
        predictions = PredictionStore(registry.store.engine)
        try:
            state, verdict = rollout_exec.step(registry.store, predictions, state, plan, actor=params.actor,
                                               emit=emit_rollout_event, settle_s=plan.settle_s)
        except ConcurrentChangeError:  # an operator paused, pinned or aborted it meanwhile: go on from there
            return rollout_exec.current(registry.store, state.model, state.candidate), None
    stuck = verdict.unadopted_split if verdict is not None and verdict.action == "hold" else None
    if stuck is not None and verdict.elapsed_s >= plan.settle_s + 2 * plan.look_interval_s:
        # A hold is otherwise silent. This one, past the first looks (a gateway loading the candidate is normal
        # there), is an operator's to fix: a gateway that cannot load a version the split names.
        get_run_logger().warning("%s:v%s still holds at %s after %.0f s: %s", state.model, state.candidate,
                                 verdict.stage, verdict.elapsed_s, stuck.reason)
    return state, verdict


@task(name="record-answer", cache_policy=NO_CACHE)
def record_answer(params: RolloutParams, plan: RolloutPlan, state: RolloutState, answer: Approval) -> RolloutState:
    """Apply a person's answer to the stored state (re-read: the CLI may have answered while nobody waited)."""
    with open_registry() as registry:
        fresh = rollout_exec.current(registry.store, state.model, state.candidate)
        return rollout_exec.answer(registry.store, fresh, plan, approve=answer.approve, reviewer=answer.reviewer,
                                   comment=answer.comment, actor=f"person:{answer.reviewer}", emit=emit_rollout_event)


def progress_key(state: RolloutState) -> str:
    return f"rollout-{state.model}-v{state.candidate}".lower()


def start_progress(state: RolloutState, plan: RolloutPlan) -> uuid.UUID:
    return create_progress_artifact(progress=_percent(state, plan), key=progress_key(state),
                                    description=describe_progress(state, plan))


def show_progress(artifact_id: uuid.UUID, state: RolloutState, plan: RolloutPlan,
                  verdict: StageVerdict | None) -> None:
    update_progress_artifact(artifact_id, progress=_percent(state, plan),
                             description=describe_progress(state, plan, verdict))
    if verdict is not None and verdict.action != "hold":
        rows = [{"check": f.check, "verdict": str(f.verdict), "observed": f.observed, "threshold": f.threshold,
                 "reason": f.reason} for f in verdict.findings]
        create_table_artifact(table=rows, key=f"{progress_key(state)}-{verdict.stage}".lower(),
                              description=f"{state.model}:v{state.candidate} at {verdict.stage}: {verdict.action} "
                                          f"(plan {plan.name} v{plan.version})")


def _percent(state: RolloutState, plan: RolloutPlan) -> float:
    if state.phase == "promoted":
        return 100.0
    return round(100.0 * state.stage_index / len(plan.stages), 1)


def describe_progress(state: RolloutState, plan: RolloutPlan, verdict: StageVerdict | None = None) -> str:
    """The progress artifact's line: where the rollout is and, while a stage holds, what it waits for (a hold is
    saved nowhere else: the UI shows why a stage has not moved, e.g. too few answers yet or a gateway that has
    not adopted the split)."""
    line = (f"{state.model}:v{state.candidate} vs champion v{state.champion}: {state.phase} at stage "
            f"{plan.stages[state.stage_index].name} ({state.stage_index + 1}/{len(plan.stages)})")
    if verdict is not None and verdict.action == "hold":
        waiting = [f"{f.check}: {_clip(f.reason, 200)}" for f in verdict.findings
                   if f.verdict is Verdict.INCONCLUSIVE]
        line += _clip(f"; after {verdict.elapsed_s:.0f} s it waits on " + "; ".join(waiting), 600)
    return line


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _driving_run(flow_run_id: str, wait_s: float):
    """The flow run driving the rollout, once it has paused (it saves the state just before pausing, so
    give it ``wait_s`` to get there); None when no Prefect API knows it."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + wait_s
    try:
        with get_client(sync_client=True) as client:
            while True:
                run = client.read_flow_run(uuid.UUID(flow_run_id))
                if run.state is None or not run.state.is_running() or time.monotonic() >= deadline:
                    return run
                time.sleep(0.5)
    except (ObjectNotFound, httpx.HTTPError, OSError):  # another Prefect API, or gone: record it here
        return None


def send_answer(model: str, candidate: int, answer: Approval, plan: RolloutPlan, *,
                pause_wait_s: float = 30.0) -> str:
    """Answer a rollout waiting for a person: resume its paused flow run with the answer when one is waiting
    (the run records it and goes on); otherwise record the answer now, and the next run carries on."""
    from prefect.flow_runs import resume_flow_run

    with open_registry() as registry:
        state = rollout_exec.current(registry.store, model, candidate)
        if state.phase not in ("paused", "awaiting_approval"):
            raise ValueError(f"the rollout of {model}:v{candidate} is {state.phase}: nothing waits for an answer")
        run = _driving_run(state.flow_run_id, wait_s=pause_wait_s) if state.flow_run_id else None
        if run is not None and run.state is not None and run.state.is_paused():
            resume_flow_run(run.id, run_input=answer.model_dump())
            return f"resumed flow run {run.name} ({run.id}) with the answer"
        if run is not None and run.state is not None and run.state.is_running():
            raise ValueError(f"flow run {run.name} drives this rollout and has not paused for the answer within "
                             f"{pause_wait_s:g} s; try again in a moment")
        rollout_exec.answer(registry.store, state, plan, approve=answer.approve, reviewer=answer.reviewer,
                            comment=answer.comment, actor=f"person:{answer.reviewer}", emit=emit_rollout_event)
        return "recorded; no flow run was waiting, so run the rollout again to carry on"
