"""Carrying out rollouts against a real store, with traffic fed into the prediction log the way a gateway
writes it (routed by the stored split), a controllable clock, and a crash injected at every step."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from lifecycle.predictions import Prediction
from lifecycle.rollout_plan import RolloutPlan
from lifecycle.routing import TrafficSplit
from lifecycle.status import Alias, VersionStatus
from lifecycle.verdict import Verdict
from registry import rollout_exec
from registry.predictions import PredictionStore
from registry.rollouts import RolloutInProgress, get_rollout
from registry.store import ConcurrentChangeError, RegistryStore
from registry.traffic import get_split, set_split

GUARD = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.3},
         {"metric": "feedback_success_rate", "direction": "higher_is_better", "regression": 0.3}]
SHADOW_GUARD = GUARD[:1]


def make_plan(approval=True) -> RolloutPlan:
    stages = [{"name": "shadow", "share": 0, "guardrails": SHADOW_GUARD},
              {"name": "canary-20", "share": 20}, {"name": "canary-50", "share": 50}, {"name": "full", "share": 100}]
    return RolloutPlan.model_validate({
        "name": "test", "version": 1, "approval_before_last_stage": approval,
        "stage_defaults": {"min_requests_per_arm": 30, "max_duration_s": 36_000, "guardrails": GUARD},
        "stages": stages})


class Clock:
    def __init__(self):
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self):
        return self.now


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no except clause catches it."""


def _world(url):
    """v1 champion with all traffic, v2 a candidate."""
    clock = Clock()
    store = RegistryStore.open(url, clock=clock)
    for _ in range(2):
        store.register_version("router", status=VersionStatus.CANDIDATE, prompt_format="f", reason="t", actor="a",
                               publish=lambda k: (f"local://models/router/v{k}", {}))
    store.promote("router", 1, actor="t", reason="first champion")
    set_split(store, TrafficSplit(model="router", champion=1), actor="t", reason="start")
    return store, PredictionStore(store.engine), clock


@pytest.fixture
def world(db_url):
    store, preds, clock = _world(db_url)
    yield store, preds, clock
    store.close()


TRAFFIC = {}


@pytest.fixture(autouse=True)
def _traffic(synthetic_traffic):
    TRAFFIC["send"] = synthetic_traffic


def feed(store, preds, clock, *, bad: bool, requests: int = 200):
    """One minute of traffic routed by the stored split (``synthetic_traffic`` in tests/conftest.py)."""
    start = clock.now
    clock.now += timedelta(seconds=60)
    TRAFFIC["send"](store, preds, start, clock.now, bad=bad, requests=requests)


def drive(store, preds, clock, plan, events, *, bad=False, max_looks=40):
    """What the flow does, without Prefect: begin (or resume), look after each minute, answer approvals."""
    def emit(event, payload, event_id):
        events.append((event, payload["stage"], event_id))

    state = rollout_exec.begin(store, "router", 2, plan, actor="flow", emit=emit)
    for _ in range(max_looks):
        if state.terminal:
            return state
        if state.phase != "running":
            state = rollout_exec.answer(store, state, plan, approve=True, reviewer="ann", comment="ok",
                                        actor="person:ann", emit=emit)
            continue
        feed(store, preds, clock, bad=bad)
        state, _ = rollout_exec.step(store, preds, state, plan, actor="flow", emit=emit, settle_s=0)
    raise AssertionError(f"no decision after {max_looks} looks: {state}")


def test_good_candidate_is_promoted_through_every_stage(world):
    store, preds, clock = world
    events = []
    state = drive(store, preds, clock, make_plan(), events)
    assert state.phase == "promoted" and state.pending == []
    assert [h.action for h in state.history] == ["advance", "advance", "advance", "approve", "advance"]
    assert store.aliases("router") == {"champion": 2, "previous": 1}
    assert get_split(store, "router") == TrafficSplit(model="router", champion=2, revision=6)  # start + 5 stage moves
    assert store.get_version("router", 2).status is VersionStatus.PROMOTED
    assert [(e, s) for e, s, _ in events] == [
        ("slm.rollout.stage", "shadow"), ("slm.rollout.stage", "canary-20"), ("slm.rollout.stage", "canary-50"),
        ("slm.rollout.awaiting_approval", "canary-50"), ("slm.rollout.stage", "full"),
        ("slm.rollout.promoted", "full")]
    decisions = [e for e in store.audit_events() if e.action == "rollout.state"]
    assert decisions[0].payload["detail"]["verdict"]["action"] == "advance"
    assert decisions[3].payload["detail"] == {"reviewer": "ann", "approve": True, "comment": "ok"}
    assert store.verify_audit().ok


def test_bad_candidate_is_rolled_back_with_the_champion_restored_first(world):
    store, preds, clock = world
    events = []
    state = drive(store, preds, clock, make_plan(), events, bad=True)
    assert (state.phase, state.stage_index) == ("rolled_back", 0)  # model errors show even in shadow
    assert get_split(store, "router").live_versions == [1]
    assert store.aliases("router") == {"champion": 1}
    version = store.get_version("router", 2)
    assert version.status is VersionStatus.ROLLED_BACK
    history = store.status_history("router", 2)
    assert "model_error_rate" in history[-1]["reason"]
    order = [e.action for e in store.audit_events() if e.seq > _last_decision(store)]
    assert order.index("traffic.split") < order.index("version.status")  # traffic first, then the record
    assert events[-1][:2] == ("slm.rollout.rolled_back", "shadow")


def test_requests_still_routed_by_the_previous_split_never_count_in_the_stage(world):
    """A gateway adopts a new split only once the versions it names are loaded, which on a busy machine can take
    longer than the plan's settle time; meanwhile the champion answers by the previous split, without shadow copies.
    Counted, those requests made a false sample-ratio mismatch (the demo's v3, 2026-11-28: 16 champion requests
    against 0 shadow answers, rolled back in shadow). Counted by split revision, the look holds."""
    store, preds, clock = world
    plan = make_plan()
    state = rollout_exec.begin(store, "router", 2, plan, actor="flow", emit=lambda *_: None)
    shadow_split = get_split(store, "router")
    assert shadow_split.shadow == 2 and state.split_revision == shadow_split.revision
    preds.insert_many([Prediction(ts=clock.now + timedelta(seconds=1 + k), request_id=f"late-{k}", model="router",
                                  version=1, role="champion", user_hash=f"caller-{k}", prompt="p", completion="c",
                                  latency_ms=5.0, outcome="ok", served=True, split_revision=shadow_split.revision - 1)
                       for k in range(40)])
    clock.now += timedelta(seconds=60)
    state, verdict = rollout_exec.step(store, preds, state, plan, actor="flow", emit=lambda *_: None, settle_s=0)
    assert (state.phase, state.stage_index, verdict.action) == ("running", 0, "hold")
    assert not any(f.check == "sample ratio" and f.verdict is Verdict.FAIL for f in verdict.findings)
    # ... and says why: all the window's requests came by the old split (a gateway that never adopts it is named)
    stuck = next(f for f in verdict.findings if f.check == "split adoption")
    assert stuck.verdict is Verdict.INCONCLUSIVE and (stuck.observed, stuck.threshold) == (40, 0)
    assert f"revision {shadow_split.revision}" in stuck.reason
    feed(store, preds, clock, bad=False)  # the gateways on the new split: the shadow answers every request
    state, verdict = rollout_exec.step(store, preds, state, plan, actor="flow", emit=lambda *_: None, settle_s=0)
    assert (state.stage_index, verdict.action) == (1, "advance")
    assert next(f for f in verdict.findings if f.check == "split adoption").verdict is Verdict.PASS
    assert state.split_revision == get_split(store, "router").revision == shadow_split.revision + 1
    decision = next(e for e in store.audit_events() if e.seq == _last_decision(store))
    assert (decision.payload["detail"]["split_revision"], decision.payload["detail"]["stale_requests"]) == (
        shadow_split.revision, 40)


def caller_row(ts: datetime, k: int, version: int, role: str, revision: int, **extra) -> Prediction:
    """Request ``k`` of caller ``k``, answered ok, as the split of ``revision`` routed it (or its shadow copy)."""
    return Prediction(ts=ts, request_id=f"r-{k}", model="router", version=version, role=role,
                      user_hash=f"caller-{k}", prompt="p", completion="c", latency_ms=5.0, outcome="ok",
                      served=role != "shadow", split_revision=revision, **extra)


def test_in_shadow_a_look_leaves_out_the_newest_requests_whose_copies_may_still_be_on_their_way(world):
    """A shadow copy is logged after the served answer, under the request's arrival time: at a look the newest
    requests have no copy in the log yet. 100 new callers a second, copies 2 s behind: counted to the look's
    moment, 700 callers against 500 copies read as a broken mirror; the look's window ends settle_s earlier."""
    store, preds, clock = world
    plan = make_plan()
    state = rollout_exec.begin(store, "router", 2, plan, actor="flow", emit=lambda *_: None)
    start, revision = clock.now, get_split(store, "router").revision

    def row(k: int, version: int, role: str) -> Prediction:
        return caller_row(start + timedelta(milliseconds=10 * k), k, version, role, revision)
    preds.insert_many([row(k, 1, "champion") for k in range(1000)] + [row(k, 2, "shadow") for k in range(800)])
    clock.now = start + timedelta(seconds=10)
    champion, shadow = rollout_exec.arms(preds, state, plan, clock.now, settle_s=3)
    assert (champion.users, shadow.users) == (400, 400)  # [3 s, 7 s): every copy is in
    _, verdict = rollout_exec.step(store, preds, state, plan, actor="flow", emit=lambda *_: None, settle_s=3)
    assert next(f for f in verdict.findings if f.check == "sample ratio").verdict is Verdict.PASS
    canary = state.model_copy(update={"stage_index": 1})  # elsewhere the window runs to the look's moment
    assert rollout_exec.look_window(canary, plan, clock.now, 3) == (start + timedelta(seconds=3), clock.now)


@pytest.mark.parametrize("pinned", [True, False])
def test_requests_whose_caller_named_the_challenger_never_judge_it(world, pinned):
    """A team testing the challenger by name (model ROUTER:v2) with prompts it gets wrong is not its users: pinned,
    their requests stay out of the canary's arms; routed by the split, the same rows roll the challenger back."""
    store, preds, clock = world
    plan = make_plan()
    state = rollout_exec.begin(store, "router", 2, plan, actor="flow", emit=lambda *_: None)
    feed(store, preds, clock, bad=False)
    state, _ = rollout_exec.step(store, preds, state, plan, actor="flow", emit=lambda *_: None, settle_s=0)
    assert plan.stages[state.stage_index].name == "canary-20"
    start = clock.now
    feed(store, preds, clock, bad=False)
    revision = get_split(store, "router").revision
    preds.insert_many([Prediction(ts=start + timedelta(seconds=k / 10), request_id=f"qa-{k}", model="router",
                                  version=2, role="challenger", user_hash=f"tester-{k % 40}", prompt="p",
                                  completion="c", latency_ms=5.0, outcome="model_error", served=True,
                                  split_revision=revision, pinned=pinned) for k in range(300)])
    state, verdict = rollout_exec.step(store, preds, state, plan, actor="flow", emit=lambda *_: None, settle_s=0)
    if pinned:
        assert verdict.action == "advance", verdict.reasons()
    else:
        assert (state.phase, verdict.action) == ("rolled_back", "rollback")


def _last_decision(store):
    return [e.seq for e in store.audit_events() if e.action == "rollout.state"][-1]


def test_second_candidate_is_refused_and_a_non_candidate_too(world):
    store, preds, clock = world
    store.register_version("router", status=VersionStatus.REJECTED, prompt_format="f", reason="t", actor="a",
                           publish=lambda k: (f"local://models/router/v{k}", {}))
    with pytest.raises(rollout_exec.RolloutRefused, match="v3 is rejected; only a candidate"):
        rollout_exec.begin(store, "router", 3, make_plan(), actor="flow", emit=lambda *a: None)
    rollout_exec.begin(store, "router", 2, make_plan(), actor="flow", emit=lambda *a: None)
    store.register_version("router", status=VersionStatus.CANDIDATE, prompt_format="f", reason="t", actor="a",
                           publish=lambda k: (f"local://models/router/v{k}", {}))
    with pytest.raises(RolloutInProgress, match="only one rollout per model"):
        rollout_exec.begin(store, "router", 4, make_plan(), actor="flow", emit=lambda *a: None)


def test_a_start_that_loses_the_takeover_to_the_running_driver_is_told_it_is_in_progress(world, monkeypatch):
    """Two runs start the same candidate at once: the second reads the first's row (revision 1, its start effects
    pending) and tries to take over as driver while the first, carrying them out, moves it on. Its write fails
    on the revision; it is told the rollout is in progress (it lost to a live driver), not "re-read and decide
    again", and the first run keeps the rollout."""
    store, _preds, _clock = world
    plan = make_plan()
    first = rollout_exec.begin(store, "router", 2, plan, actor="run-0", emit=lambda *a: None, flow_run_id="run-0")
    assert first.revision > 1
    read = iter([first.model_copy(update={"revision": 1})])  # what the second run read before the first moved on
    real = rollout_exec.get_rollout
    monkeypatch.setattr(rollout_exec, "get_rollout", lambda *a: next(read, None) or real(*a))
    with pytest.raises(RolloutInProgress, match="already has a rollout in progress: v2"):
        rollout_exec.begin(store, "router", 2, plan, actor="run-1", emit=lambda *a: None, flow_run_id="run-1")
    running = get_rollout(store, "router", 2)
    assert running.flow_run_id == "run-0" and running.revision == first.revision


def test_a_start_whose_row_another_run_takes_over_midway_is_told_it_is_in_progress(world, monkeypatch):
    """The other order of the same race: the first run has stored its row and is carrying out the start's effects
    when the second reads the row (effects pending) and takes over. The first's save then fails on the revision:
    it is told the rollout is in progress; the second carries the effects out (again: they are idempotent) and
    drives. One split written, one rollout."""
    store, _preds, _clock = world
    plan = make_plan()
    real = rollout_exec._carry_out
    second, started = [], []

    def carry_out(*args, **kwargs):
        real(*args, **kwargs)
        if not started:  # after the first run's first effect, the second run starts the same candidate
            started.append(True)
            second.append(rollout_exec.begin(store, "router", 2, plan, actor="run-1", emit=lambda *a: None,
                                             flow_run_id="run-1"))

    monkeypatch.setattr(rollout_exec, "_carry_out", carry_out)
    with pytest.raises(RolloutInProgress, match="already has a rollout in progress: v2"):
        rollout_exec.begin(store, "router", 2, plan, actor="run-0", emit=lambda *a: None, flow_run_id="run-0")
    running = get_rollout(store, "router", 2)
    assert second[0].flow_run_id == running.flow_run_id == "run-1" and running.pending == []
    split = get_split(store, "router")
    assert (split.champion, split.shadow, split.revision) == (1, 2, 2)  # "start" above was revision 1
    assert [e.action for e in store.audit_events() if e.action.startswith("traffic.")].count("traffic.split") == 2


def test_abort_restores_the_champion_and_keeps_the_candidate(world):
    store, preds, clock = world
    plan = make_plan()
    state = rollout_exec.begin(store, "router", 2, plan, actor="flow", emit=lambda *a: None)
    assert store.get_alias("router", Alias.CHALLENGER) == 2
    state = rollout_exec.stop(store, state, plan, reason="3 a.m.", actor="op", emit=lambda *a: None)
    assert state.phase == "aborted"
    assert get_split(store, "router").live_versions == [1]
    assert store.get_alias("router", Alias.CHALLENGER) is None
    assert store.get_version("router", 2).status is VersionStatus.CANDIDATE


def _crash_at(monkeypatch, k: int):
    """Kill the process at the k-th effect or save (counted together), once."""
    calls = itertools.count()
    real_carry, real_save = rollout_exec._carry_out, rollout_exec.save_rollout

    def maybe_die():
        if next(calls) == k:
            raise Killed

    def carry(*a, **kw):
        maybe_die()
        return real_carry(*a, **kw)

    def save(*a, **kw):
        result = real_save(*a, **kw)
        maybe_die()  # after the commit: the state is saved, nothing after it ran
        return result

    monkeypatch.setattr(rollout_exec, "_carry_out", carry)
    monkeypatch.setattr(rollout_exec, "save_rollout", save)
    return calls


@pytest.mark.parametrize("bad", [False, True], ids=["promoted", "rolled-back"])
def test_killed_at_every_step_then_rerun_ends_exactly_once(tmp_path, monkeypatch, bad):
    plan = make_plan()
    crashed = 0
    for k in range(80):
        # A fresh registry each time: crash at step k, then run again to the end.
        store, preds, clock = _world(f"sqlite:///{tmp_path / f'k{k}.db'}")
        with monkeypatch.context() as m:
            _crash_at(m, k)
            try:
                drive(store, preds, clock, plan, [], bad=bad)
            except Killed:
                pass
            else:
                break  # k is past the last step: every step has been a crash point
        crashed += 1
        state = drive(store, preds, clock, plan, [], bad=bad)
        _assert_consistent(store, state, bad)
        store.close()
    assert crashed >= (6 if bad else 20)


def _assert_consistent(store, state, bad):
    assert get_rollout(store, "router", 2).pending == []
    split = get_split(store, "router")
    champion_moves = [e.payload["to"] for e in store.audit_events()
                      if e.action == "alias.moved" and e.payload["alias"] == "champion"]
    if bad:
        assert state.phase == "rolled_back"
        assert split.live_versions == [1] and store.aliases("router") == {"champion": 1}
        assert store.get_version("router", 2).status is VersionStatus.ROLLED_BACK
        assert champion_moves == [1]
    else:
        assert state.phase == "promoted"
        assert split.live_versions == [2] and store.aliases("router") == {"champion": 2, "previous": 1}
        assert store.get_version("router", 2).status is VersionStatus.PROMOTED
        assert champion_moves == [1, 2]  # promoted exactly once
    assert store.verify_audit().ok


def test_pin_pauses_the_rollout_and_a_stale_look_cannot_undo_it(world):
    store, preds, clock = world
    plan = make_plan()
    quiet = lambda *a: None  # noqa: E731
    state = rollout_exec.begin(store, "router", 2, plan, actor="flow", emit=quiet)
    feed(store, preds, clock, bad=False)
    looked, _ = rollout_exec.step(store, preds, state, plan, actor="flow", emit=quiet, settle_s=0)
    assert looked.stage_index == 1
    pinned = rollout_exec.pin_rollout(store, looked, reason="pager at 3 a.m.", actor="op", emit=quiet)
    assert pinned.phase == "paused" and get_split(store, "router").live_versions == [1]
    feed(store, preds, clock, bad=False)
    with pytest.raises(ConcurrentChangeError):  # the flow's look from before the pin
        rollout_exec.step(store, preds, looked, plan, actor="flow", emit=quiet, settle_s=0)
    assert rollout_exec.step(store, preds, pinned, plan, actor="flow", emit=quiet, settle_s=0) == (pinned, None)
    resumed = rollout_exec.answer(store, pinned, plan, approve=True, reviewer="ann", comment="false alarm",
                                  actor="person:ann", emit=quiet)
    assert (resumed.phase, resumed.stage_index) == ("running", 1)
    assert get_split(store, "router").challenger_percent == 20.0


def test_an_aborted_rollout_can_be_started_again_from_the_first_stage(world):
    store, preds, clock = world
    plan = make_plan()
    quiet = lambda *a: None  # noqa: E731
    state = rollout_exec.begin(store, "router", 2, plan, actor="flow", emit=quiet)
    feed(store, preds, clock, bad=False)
    state, _ = rollout_exec.step(store, preds, state, plan, actor="flow", emit=quiet, settle_s=0)
    aborted = rollout_exec.stop(store, state, plan, reason="gateway maintenance", actor="op", emit=quiet)
    again = rollout_exec.begin(store, "router", 2, plan, actor="flow", emit=quiet)
    assert (again.phase, again.stage_index, again.history) == ("running", 0, [])
    assert again.revision > aborted.revision
    assert get_split(store, "router").shadow == 2
    assert "rollout.restarted" in [e.action for e in store.audit_events()]


def test_a_stale_driver_cannot_write_its_split_over_an_abort(world):
    """A driver still carrying out an older decision's effects must not undo an operator's abort (or a rollback
    that aborted the rollout): its SetSplit checks the rollout's revision in the split's own transaction."""
    from lifecycle.rollout_state import SetSplit

    store, _, _ = world
    state = rollout_exec.begin(store, "router", 2, make_plan(), actor="flow", emit=lambda *a: None)
    stopped = rollout_exec.stop(store, state, None, reason="freeze", actor="op", emit=lambda *a: None)
    assert stopped.phase == "aborted" and get_split(store, "router").shadow is None
    stale = state.model_copy(update={"pending": [SetSplit(split=TrafficSplit(model="router", champion=1,
                                                                             challenger=2, challenger_percent=20))]})
    with pytest.raises(ConcurrentChangeError, match="its split is not written"):
        rollout_exec.drain(store, stale, actor="flow", emit=lambda *a: None)
    assert get_split(store, "router").challenger is None  # the abort's split stands


def test_a_rollout_planned_against_a_champion_that_moved_does_not_start(world):
    from lifecycle.rollout_state import start
    from registry.rollouts import start_rollout

    store, _, clock = world
    planned, _ = start("router", 2, 1, make_plan(), clock.now.isoformat())
    store.register_version("router", status=VersionStatus.CANDIDATE, prompt_format="f", reason="t", actor="a",
                           publish=lambda k: (f"local://models/router/v{k}", {}))
    store.promote("router", 3, actor="op", reason="promoted meanwhile")
    with pytest.raises(ConcurrentChangeError, match="champion is v3, not v1"):
        start_rollout(store, planned, actor="flow", resume=False)
    assert get_rollout(store, "router", 2) is None


@pytest.mark.parametrize("marked", [True, False])
def test_in_shadow_requests_whose_copy_the_gateway_shed_are_left_out_of_both_arms(world, marked):
    """A gateway at its cap of shadow copies in flight serves a request without one and marks its row
    (``shadow_shed``). 600 callers, 200 of them mirrored: counted, the 400 shed requests read as copies gone missing
    (a sample-ratio mismatch, a rollback of the candidate for the gateway's load); marked, the shadow stage compares
    the 200 mirrored requests with their 200 copies and advances."""
    store, preds, clock = world
    plan = make_plan()
    state = rollout_exec.begin(store, "router", 2, plan, actor="flow", emit=lambda *_: None)
    start, revision = clock.now, get_split(store, "router").revision

    def row(k: int, version: int, role: str) -> Prediction:
        return caller_row(start + timedelta(milliseconds=50 * k), k, version, role, revision,
                          shadow_shed=marked and role == "champion" and k % 3 != 0)
    preds.insert_many([row(k, 1, "champion") for k in range(600)] + [row(k, 2, "shadow") for k in range(0, 600, 3)])
    clock.now = start + timedelta(seconds=60)
    champion, shadow = rollout_exec.arms(preds, state, plan, clock.now, settle_s=0)
    assert (champion.users, shadow.users) == ((200, 200) if marked else (600, 200))
    state, verdict = rollout_exec.step(store, preds, state, plan, actor="flow", emit=lambda *_: None, settle_s=0)
    ratio = next(f for f in verdict.findings if f.check == "sample ratio")
    assert (ratio.verdict, verdict.action) == ((Verdict.PASS, "advance") if marked else (Verdict.FAIL, "rollback"))
    shed = [f for f in verdict.findings if f.check == "shadow copies shed"]
    decision = next(e for e in store.audit_events() if e.seq == _last_decision(store))
    assert decision.payload["detail"]["shed_requests"] == (400 if marked else 0)
    if marked:  # said, with what the comparison covers; not held against the candidate
        assert shed[0].verdict is Verdict.PASS and "400 of 600 requests (67%)" in shed[0].reason
        assert "the 200 mirrored ones" in shed[0].reason
    else:
        assert shed == []
    if marked:  # everywhere else (the monitor, the admin's aggregates) a shed request is a served one like any other
        [served] = [a for a in preds.aggregates("router", start, clock.now) if a.role == "champion"]
        assert served.requests == 600
