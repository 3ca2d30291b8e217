"""The persisted state of one rollout, and the pure transition from one stage verdict to the next state.

The flow (``flows/rollout.py``) owns no logic: it asks ``next_state`` what to do and hands the result to
``registry.rollout_exec``, which saves the new state WITH its effects in ``pending`` (an outbox, one
compare-and-swap), carries the effects out IN ORDER, then saves again with ``pending`` empty. If the
process dies anywhere in between, the re-run finds the effects still pending and carries them out again
before deciding anything, so every effect must be idempotent — and is: ``SetSplit`` writes a whole split,
``Promote`` names the champion it expects (a second promote of the same candidate finds it champion
already and does nothing), ``MarkRejected`` of a version already rolled back changes nothing,
``MoveChallenger`` sets an alias to a value, ``Emit`` carries a deterministic event id.

Why save first: the next stage's window opens at the decision (``stage_started_at``). Carrying out a
split change and dying before the save would leave the stored stage looking at traffic already routed
with the next stage's shares — a sample-ratio mismatch, a false rollback. Saved first, the decision and
its window are never lost.

Phases: ``running`` -> (``awaiting_approval`` | ``paused``) -> ``running`` ... -> one terminal phase:
``promoted``, ``rolled_back`` or ``aborted``. A terminal state accepts nothing: applying anything to it
returns it unchanged with no effects, so a re-run can never promote twice or roll back twice.

The split of each stage (``split_for``):

* shadow (share 0): the champion serves everything, the candidate is the shadow;
* canary share p: the candidate is the challenger at p %;
* 100 %: the OLD champion stays ``champion`` in the split with the candidate as challenger at 100 %.
  Why: the old champion stays loaded, so a rollback at 100 % is one split write, and the stage's
  decision still has the old champion's reference window. Only ``Promote`` makes the candidate champion;
  the split that follows names the candidate alone.

Rollback (a ``rollback`` verdict, or a person rejecting) always restores the champion's full traffic
FIRST, then marks the candidate rejected with the reasons, then emits ``slm.rollout.rolled_back``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from lifecycle.records import Frozen
from lifecycle.rollout_plan import Action, RolloutPlan, StageVerdict
from lifecycle.routing import TrafficSplit

Phase = Literal["running", "awaiting_approval", "paused", "promoted", "rolled_back", "aborted"]
TERMINAL: frozenset[str] = frozenset({"promoted", "rolled_back", "aborted"})


# -- effects: what the flow must do, in order ------------------------------------------------------------

class SetSplit(Frozen):
    kind: Literal["set_split"] = "set_split"
    split: TrafficSplit


class Promote(Frozen):
    kind: Literal["promote"] = "promote"
    model: str
    version: int
    expected_champion: int


class MarkRejected(Frozen):
    kind: Literal["mark_rejected"] = "mark_rejected"
    model: str
    version: int
    reasons: list[str]


class RequestApproval(Frozen):
    kind: Literal["request_approval"] = "request_approval"
    model: str
    version: int
    next_stage: str


class MoveChallenger(Frozen):
    """Point the ``challenger`` alias at the candidate while it is rolled out, clear it when it ends."""

    kind: Literal["move_challenger"] = "move_challenger"
    model: str
    version: int | None


class Emit(Frozen):
    kind: Literal["emit"] = "emit"
    event: str
    stage: str


Effect = Annotated[SetSplit | Promote | MarkRejected | RequestApproval | MoveChallenger | Emit,
                   Field(discriminator="kind")]



class StageRecord(Frozen):
    """One decided look that changed the rollout (holds are not recorded: they change nothing)."""

    stage: str
    action: Action | Literal["approve", "reject", "resume", "abort", "pin"]
    reasons: list[str] = Field(default_factory=list)
    at: str = Field(description="ISO-8601 time of the decision")


class RolloutState(Frozen):
    model: str = Field(min_length=1)
    candidate: int = Field(ge=1)
    champion: int = Field(ge=1, description="champion when the rollout started; restored on rollback")
    plan_name: str
    plan_version: int = Field(ge=1)
    stage_index: int = Field(ge=0)
    phase: Phase = "running"
    stage_started_at: str = Field(description="ISO-8601 start of the current stage's window")
    started_at: str = Field(description="ISO-8601 start of the rollout: the champion's reference window opens here")
    pending: list[Effect] = Field(default_factory=list, description=(
        "effects decided but not yet confirmed carried out: saved WITH the decision (an outbox), carried "
        "out in order, then cleared; a re-run after a crash carries out what is still here first"))
    flow_run_id: str | None = Field(default=None, description="the Prefect flow run driving it (approvals resume it)")
    applied_at: str | None = Field(default=None, description=(
        "ISO-8601 time the last decision's effects were all carried out: the stage's window opens here, so "
        "traffic routed by the old split while a crashed run left the new one unapplied never counts"))
    split_revision: int | None = Field(default=None, ge=0, description=(
        "revision of the traffic split when those effects were carried out: the stage's window counts only the "
        "requests routed by it or a later one, whenever the gateways adopt it (None: a state saved before the "
        "field, whose window counts by time alone)"))
    history: list[StageRecord] = Field(default_factory=list)
    revision: int = Field(default=0, ge=0, description="set by the store; compare-and-swap on save")

    @model_validator(mode="after")
    def _distinct(self) -> RolloutState:
        if self.candidate == self.champion:
            raise ValueError(f"{self.model}:v{self.candidate} is the champion already; roll out another version")
        return self

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL


def split_for(state: RolloutState, plan: RolloutPlan, index: int) -> TrafficSplit:
    """The traffic split of stage ``index`` (see the module docstring for the 100 % stage)."""
    share = plan.stages[index].share
    if share == 0:
        return TrafficSplit(model=state.model, champion=state.champion, shadow=state.candidate)
    return TrafficSplit(model=state.model, champion=state.champion, challenger=state.candidate,
                        challenger_percent=float(share))


def champion_only(state: RolloutState) -> TrafficSplit:
    return TrafficSplit(model=state.model, champion=state.champion)


def start(model: str, candidate: int, champion: int, plan: RolloutPlan, now: str) -> tuple[RolloutState,
                                                                                          list[Effect]]:
    state = RolloutState(model=model, candidate=candidate, champion=champion, plan_name=plan.name,
                         plan_version=plan.version, stage_index=0, stage_started_at=now, started_at=now)
    return state, [SetSplit(split=split_for(state, plan, 0)), MoveChallenger(model=model, version=candidate),
                   Emit(event="slm.rollout.stage", stage=plan.stages[0].name)]


def _check_plan(state: RolloutState, plan: RolloutPlan) -> None:
    if (plan.name, plan.version) != (state.plan_name, state.plan_version):
        raise ValueError(f"rollout of {state.model}:v{state.candidate} runs plan {state.plan_name} "
                         f"v{state.plan_version}, not {plan.name} v{plan.version}; resume it with the plan it "
                         "started with, or abort it")
    if state.stage_index >= len(plan.stages):
        raise ValueError(f"rollout is at stage {state.stage_index} but plan {plan.name} has {len(plan.stages)}")


def _rolled_back(state: RolloutState, stage: str, action: str, reasons: list[str],
                 now: str) -> tuple[RolloutState, list[Effect]]:
    new = _with_entry(state, stage, action, reasons, now, phase="rolled_back")
    return new, [SetSplit(split=champion_only(state)),
                 MarkRejected(model=state.model, version=state.candidate, reasons=reasons),
                 MoveChallenger(model=state.model, version=None),
                 Emit(event="slm.rollout.rolled_back", stage=stage)]


def _with_entry(state: RolloutState, stage: str, action: str, reasons: list[str], now: str,
                **update: object) -> RolloutState:
    entry = StageRecord(stage=stage, action=action, reasons=reasons, at=now)
    return state.model_copy(update={**update, "history": [*state.history, entry]})


def _enter(state: RolloutState, plan: RolloutPlan, index: int, stage: str, action: str, reasons: list[str],
           now: str) -> tuple[RolloutState, list[Effect]]:
    new = _with_entry(state, stage, action, reasons, now, phase="running", stage_index=index,
                      stage_started_at=now)
    return new, [SetSplit(split=split_for(new, plan, index)),
                 Emit(event="slm.rollout.stage", stage=plan.stages[index].name)]


def next_state(state: RolloutState, verdict: StageVerdict, plan: RolloutPlan,
               now: str) -> tuple[RolloutState, list[Effect]]:
    """Apply one stage verdict. Only a ``running`` state moves; any other phase is returned unchanged
    with no effects (terminal phases forever; paused / awaiting approval until a person decides)."""
    if state.phase != "running":
        return state, []
    _check_plan(state, plan)
    stage = plan.stages[state.stage_index]
    if verdict.stage != stage.name:
        raise ValueError(f"verdict is for stage {verdict.stage!r} but the rollout is at {stage.name!r}; "
                         "a stale look must not move the rollout")
    reasons = verdict.reasons()
    last = len(plan.stages) - 1
    if verdict.action == "hold":
        return state, []
    if verdict.action == "rollback":
        return _rolled_back(state, stage.name, "rollback", reasons, now)
    if verdict.action == "pause":
        return (_with_entry(state, stage.name, "pause", reasons, now, phase="paused"),
                [Emit(event="slm.rollout.paused", stage=stage.name)])
    # advance
    if state.stage_index == last:
        new = _with_entry(state, stage.name, "advance", reasons, now, phase="promoted")
        return new, [Promote(model=state.model, version=state.candidate, expected_champion=state.champion),
                     SetSplit(split=TrafficSplit(model=state.model, champion=state.candidate)),
                     Emit(event="slm.rollout.promoted", stage=stage.name)]
    if state.stage_index + 1 == last and plan.approval_before_last_stage:
        new = _with_entry(state, stage.name, "advance", reasons, now, phase="awaiting_approval")
        return new, [RequestApproval(model=state.model, version=state.candidate, next_stage=plan.stages[last].name),
                     Emit(event="slm.rollout.awaiting_approval", stage=stage.name)]
    return _enter(state, plan, state.stage_index + 1, stage.name, "advance", reasons, now)


def decide_by_person(state: RolloutState, plan: RolloutPlan, *, approve: bool, reason: str,
                     now: str) -> tuple[RolloutState, list[Effect]]:
    """A person answers a paused rollout or an approval request.

    Approve: from ``awaiting_approval`` enter the next stage; from ``paused`` restart the same stage's
    window. Reject: roll back (champion's full traffic first). Any other phase is returned unchanged.
    """
    if state.phase not in ("paused", "awaiting_approval"):
        return state, []
    _check_plan(state, plan)
    stage = plan.stages[state.stage_index].name
    if not approve:
        return _rolled_back(state, stage, "reject", [reason], now)
    index = state.stage_index + (1 if state.phase == "awaiting_approval" else 0)
    return _enter(state, plan, index, stage, "approve" if state.phase == "awaiting_approval" else "resume",
                  [reason], now)


def abort(state: RolloutState, plan: RolloutPlan | None, *, reason: str,
          now: str) -> tuple[RolloutState, list[Effect]]:
    """An operator stops the rollout: champion's full traffic first; the candidate is NOT marked rejected.

    ``plan`` only names the stage; without it the stage is named by its index, as :func:`pin` does: stopping must
    not depend on finding the plan file the rollout started with."""
    if state.terminal:
        return state, []
    if plan is None:
        stage = f"stage-{state.stage_index}"
    else:
        _check_plan(state, plan)
        stage = plan.stages[state.stage_index].name
    new = _with_entry(state, stage, "abort", [reason], now, phase="aborted")
    return new, [SetSplit(split=champion_only(state)), MoveChallenger(model=state.model, version=None),
                 Emit(event="slm.rollout.aborted", stage=stage)]


def pin(state: RolloutState, *, reason: str, now: str) -> tuple[RolloutState, list[Effect]]:
    """An operator pins all traffic to the champion mid-rollout (``slm traffic pin``): the rollout pauses
    until a person resumes it (the stage restarts with its own split) or rejects it.

    Needs no plan on purpose: at 3 a.m. the pin must work whatever plan file is at hand, so the stage is
    named by its index."""
    if state.terminal:
        return state, []
    stage = f"stage-{state.stage_index}"
    new = _with_entry(state, stage, "pin", [reason], now, phase="paused")
    return new, [SetSplit(split=champion_only(state)), Emit(event="slm.rollout.paused", stage=stage)]
