import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.rollout_plan import RolloutPlan, StageVerdict
from lifecycle.rollout_state import (
    TERMINAL,
    Emit,
    MarkRejected,
    MoveChallenger,
    Promote,
    RequestApproval,
    RolloutState,
    SetSplit,
    abort,
    decide_by_person,
    next_state,
    split_for,
    start,
)
from lifecycle.routing import TrafficSplit
from lifecycle.verdict import Finding, Verdict

GUARD = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.04}]
T0, T1 = "2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+00:00"
ACTIONS = {"advance": Verdict.PASS, "hold": Verdict.INCONCLUSIVE, "pause": Verdict.INCONCLUSIVE,
           "rollback": Verdict.FAIL}


def make_plan(approval=True, shares=(0, 5, 25, 50, 100)) -> RolloutPlan:
    return RolloutPlan(name="default", version=1, approval_before_last_stage=approval, stages=[
        {"name": f"s{share}", "share": share, "min_requests_per_arm": 10, "max_duration_s": 60,
         "guardrails": GUARD} for share in shares])


def verdict(state, plan, action):
    return StageVerdict(stage=plan.stages[state.stage_index].name, verdict=ACTIONS[action], action=action,
                        findings=[Finding(check="model_error_rate", verdict=ACTIONS[action], reason=f"{action}!")],
                        elapsed_s=1.0)


def started(plan=None):
    return start("router", 2, 1, plan or make_plan(), T0)[0]


def test_start_sets_the_shadow_split():
    state, effects = start("router", 2, 1, make_plan(), T0)
    assert (state.phase, state.stage_index, state.stage_started_at, state.revision) == ("running", 0, T0, 0)
    assert state.started_at == T0 and state.pending == []
    assert effects == [SetSplit(split=TrafficSplit(model="router", champion=1, shadow=2)),
                       MoveChallenger(model="router", version=2), Emit(event="slm.rollout.stage", stage="s0")]


def test_candidate_cannot_be_the_champion():
    with pytest.raises(ValueError, match="champion already"):
        start("router", 1, 1, make_plan(), T0)


@pytest.mark.parametrize(("index", "challenger", "percent", "shadow"), [
    (0, None, 0.0, 2), (1, 2, 5.0, None), (2, 2, 25.0, None), (4, 2, 100.0, None)])
def test_split_per_stage(index, challenger, percent, shadow):
    split = split_for(started(), make_plan(), index)
    assert (split.champion, split.challenger, split.challenger_percent, split.shadow) == (1, challenger, percent,
                                                                                           shadow)


def test_good_candidate_walks_every_stage_to_promotion_with_approval():
    plan = make_plan()
    state = started(plan)
    for expected in (1, 2, 3):
        state, effects = next_state(state, verdict(state, plan, "advance"), plan, T1)
        assert (state.phase, state.stage_index, state.stage_started_at) == ("running", expected, T1)
        assert effects[0] == SetSplit(split=split_for(state, plan, expected))
        assert effects[1] == Emit(event="slm.rollout.stage", stage=plan.stages[expected].name)
    state, effects = next_state(state, verdict(state, plan, "advance"), plan, T1)
    assert (state.phase, state.stage_index) == ("awaiting_approval", 3)
    assert effects == [RequestApproval(model="router", version=2, next_stage="s100"),
                       Emit(event="slm.rollout.awaiting_approval", stage="s50")]
    assert next_state(state, verdict(state, plan, "advance"), plan, T1) == (state, [])  # waits for a person
    state, effects = decide_by_person(state, plan, approve=True, reason="lgtm", now=T1)
    assert (state.phase, state.stage_index) == ("running", 4)
    assert effects[0].split.challenger_percent == 100.0 and effects[0].split.champion == 1
    state, effects = next_state(state, verdict(state, plan, "advance"), plan, T1)
    assert state.phase == "promoted"
    assert effects == [Promote(model="router", version=2, expected_champion=1),
                       SetSplit(split=TrafficSplit(model="router", champion=2)),
                       Emit(event="slm.rollout.promoted", stage="s100")]
    assert [h.action for h in state.history] == ["advance"] * 4 + ["approve", "advance"]


def test_without_approval_the_last_stage_follows_directly():
    plan = make_plan(approval=False, shares=(5, 100))
    state = started(plan)
    state, effects = next_state(state, verdict(state, plan, "advance"), plan, T1)
    assert (state.phase, state.stage_index) == ("running", 1)


@pytest.mark.parametrize("index", [0, 2, 4])
def test_rollback_restores_the_champion_first(index):
    plan = make_plan()
    state = started(plan).model_copy(update={"stage_index": index})
    new, effects = next_state(state, verdict(state, plan, "rollback"), plan, T1)
    assert new.phase == "rolled_back" and new.stage_index == index
    assert effects == [SetSplit(split=TrafficSplit(model="router", champion=1)),
                       MarkRejected(model="router", version=2, reasons=["[fail] model_error_rate: rollback!"]),
                       MoveChallenger(model="router", version=None),
                       Emit(event="slm.rollout.rolled_back", stage=plan.stages[index].name)]
    assert new.history[-1].reasons == ["[fail] model_error_rate: rollback!"]


def test_hold_changes_nothing_and_pause_waits_for_a_person():
    plan = make_plan()
    state = started(plan)
    assert next_state(state, verdict(state, plan, "hold"), plan, T1) == (state, [])
    paused, effects = next_state(state, verdict(state, plan, "pause"), plan, T1)
    assert paused.phase == "paused" and effects == [Emit(event="slm.rollout.paused", stage="s0")]
    resumed, effects = decide_by_person(paused, plan, approve=True, reason="looked, fine", now=T1)
    assert (resumed.phase, resumed.stage_index, resumed.stage_started_at) == ("running", 0, T1)
    assert effects[0] == SetSplit(split=split_for(state, plan, 0))
    rejected, effects = decide_by_person(paused, plan, approve=False, reason="no", now=T1)
    assert rejected.phase == "rolled_back" and effects[0] == SetSplit(split=TrafficSplit(model="router", champion=1))


def test_abort_restores_the_champion_without_rejecting():
    plan = make_plan()
    state, effects = abort(started(plan), plan, reason="3 a.m. pin", now=T1)
    assert state.phase == "aborted"
    assert effects == [SetSplit(split=TrafficSplit(model="router", champion=1)),
                       MoveChallenger(model="router", version=None), Emit(event="slm.rollout.aborted", stage="s0")]


def test_stale_verdict_and_other_plan_are_refused():
    plan = make_plan()
    state = started(plan)
    stale = verdict(state.model_copy(update={"stage_index": 1}), plan, "advance")
    with pytest.raises(ValueError, match="stale"):
        next_state(state, stale, plan, T1)
    other = plan.model_copy(update={"version": 2})
    with pytest.raises(ValueError, match="resume it with the plan"):
        next_state(state, verdict(state, plan, "advance"), other, T1)


def test_state_round_trips_as_json():
    plan = make_plan()
    state = started(plan)
    state, _ = next_state(state, verdict(state, plan, "advance"), plan, T1)
    assert RolloutState.model_validate_json(state.model_dump_json()) == state


# -- properties ----------------------------------------------------------------------------------------

STEP = st.one_of(st.sampled_from(["advance", "hold", "pause", "rollback"]),
                 st.sampled_from([("person", True), ("person", False), ("abort", None)]))


def apply(state, plan, step):
    if isinstance(step, str):
        if state.phase == "running":
            return next_state(state, verdict(state, plan, step), plan, T1)
        return next_state(state, StageVerdict(stage="whatever", verdict=ACTIONS[step], action=step, findings=[],
                                              elapsed_s=0), plan, T1)
    if step[0] == "person":
        return decide_by_person(state, plan, approve=step[1], reason="r", now=T1)
    return abort(state, plan, reason="r", now=T1)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(STEP, max_size=20), approval=st.booleans())
def test_properties_over_any_sequence(steps, approval):
    plan = make_plan(approval=approval)
    state = started(plan)
    promotions = 0
    for step in steps:
        new, effects = apply(state, plan, step)
        if state.terminal:  # a terminal state never changes, and does nothing
            assert (new, effects) == (state, [])
        assert new.stage_index >= state.stage_index  # never goes back a stage
        if new.phase in ("rolled_back", "aborted") and not state.terminal:
            assert effects[0] == SetSplit(split=TrafficSplit(model="router", champion=1))
        promotions += sum(isinstance(e, Promote) for e in effects)
        for e in effects:  # every split names only the two versions of this rollout
            if isinstance(e, SetSplit):
                assert set(e.split.live_versions) <= {1, 2}
                assert sum(e.split.weights.values()) == 100
        state = new
    assert promotions <= 1
    assert (promotions == 1) == (state.phase == "promoted")
    assert state.phase in TERMINAL or state.phase in ("running", "paused", "awaiting_approval")
