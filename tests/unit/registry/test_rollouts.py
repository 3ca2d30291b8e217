import threading

import pytest
from sqlalchemy import inspect

from lifecycle.rollout_plan import RolloutPlan, StageVerdict
from lifecycle.rollout_state import RolloutState, next_state, start
from lifecycle.status import VersionStatus
from lifecycle.verdict import Verdict
from registry.rollouts import RolloutInProgress, active_rollout, get_rollout, save_rollout, start_rollout
from registry.store import ConcurrentChangeError, NotFoundError, RegistryStore

T0, T1 = "2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+00:00"
GUARD = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.04}]
PLAN = RolloutPlan(name="default", version=1, approval_before_last_stage=False, stages=[
    {"name": f"s{share}", "share": share, "min_requests_per_arm": 10, "max_duration_s": 60, "guardrails": GUARD}
    for share in (0, 50, 100)])


def register(store, n=3, model="router"):
    for _ in range(n):
        store.register_version(model, status=VersionStatus.CANDIDATE, prompt_format="f", reason="t", actor="a",
                               publish=lambda k: (f"local://models/{model}/v{k}", {}))


def fresh(candidate, model="router"):
    return start(model, candidate, 1, PLAN, T0)[0]


def step(state, action):
    v = Verdict.PASS if action == "advance" else Verdict.FAIL
    verdict = StageVerdict(stage=PLAN.stages[state.stage_index].name, verdict=v, action=action, findings=[],
                           elapsed_s=1)
    return next_state(state, verdict, PLAN, T1)[0]


def test_migration_creates_the_table(store):
    cols = {c["name"] for c in inspect(store.engine).get_columns("rollouts")}
    assert cols == {"model", "candidate", "state_json", "phase", "revision", "updated_at"}


def test_start_save_and_read_back(store):
    register(store)
    saved = start_rollout(store, fresh(2), actor="flow")
    assert saved.revision == 1
    assert get_rollout(store, "router", 2) == saved
    assert active_rollout(store, "router") == saved
    moved = save_rollout(store, step(saved, "advance"), actor="flow", expected_revision=1)
    assert (moved.revision, moved.stage_index) == (2, 1)
    assert get_rollout(store, "router", 2) == moved
    events = [e for e in store.audit_events() if e.action.startswith("rollout.")]
    assert [e.action for e in events] == ["rollout.started", "rollout.state"]
    assert events[1].payload["to"] == {"phase": "running", "stage_index": 1}
    assert events[1].payload["decision"]["action"] == "advance"
    assert store.verify_audit().ok


def test_restart_for_the_same_candidate_resumes(store):
    register(store)
    saved = start_rollout(store, fresh(2), actor="flow")
    moved = save_rollout(store, step(saved, "advance"), actor="flow", expected_revision=1)
    again = start_rollout(store, fresh(2), actor="flow")  # the flow was killed and runs again
    assert again == moved and again.stage_index == 1


def test_a_second_rollout_of_the_model_is_refused_until_the_first_finishes(store):
    register(store)
    first = start_rollout(store, fresh(2), actor="flow")
    with pytest.raises(RolloutInProgress, match=r"router already has a rollout in progress: v2 \(phase running"):
        start_rollout(store, fresh(3), actor="flow")
    assert get_rollout(store, "router", 3) is None
    save_rollout(store, step(first, "rollback"), actor="flow", expected_revision=1)
    assert active_rollout(store, "router") is None
    assert start_rollout(store, fresh(3), actor="flow").revision == 1


def test_finished_rollout_is_never_run_again(store):
    register(store)
    state = start_rollout(store, fresh(2), actor="flow")
    for _ in range(3):
        state = save_rollout(store, step(state, "advance"), actor="flow", expected_revision=state.revision)
    assert state.phase == "promoted"
    assert start_rollout(store, fresh(2), actor="flow") == state  # a re-run sees it done: no second promotion
    with pytest.raises(ConcurrentChangeError, match="finished"):
        save_rollout(store, state.model_copy(update={"phase": "rolled_back"}), actor="x",
                     expected_revision=state.revision)
    # saving the same terminal state again (a re-run after the effects) is harmless
    assert save_rollout(store, state, actor="flow", expected_revision=state.revision).phase == "promoted"


def test_compare_and_swap(store):
    register(store)
    saved = start_rollout(store, fresh(2), actor="flow")
    save_rollout(store, step(saved, "advance"), actor="flow", expected_revision=1)
    with pytest.raises(ConcurrentChangeError, match="revision 2, not 1"):
        save_rollout(store, step(saved, "rollback"), actor="other", expected_revision=1)
    assert get_rollout(store, "router", 2).phase == "running"


def test_unknown_model_candidate_or_rollout(store):
    register(store, n=2)
    with pytest.raises(NotFoundError):
        start_rollout(store, fresh(2, model="nope"), actor="flow")
    with pytest.raises(NotFoundError, match="router:v5"):
        start_rollout(store, fresh(5), actor="flow")
    with pytest.raises(NotFoundError, match="start it first"):
        save_rollout(store, fresh(2), actor="flow", expected_revision=0)
    with pytest.raises(ValueError, match="starts running"):
        start_rollout(store, fresh(2).model_copy(update={"phase": "aborted"}), actor="flow")


def test_two_concurrent_starts_of_one_model_exactly_one_wins(db_url):
    stores = [RegistryStore.open(db_url) for _ in range(2)]
    register(stores[0])
    barrier = threading.Barrier(2)
    outcomes = []

    def race(store, candidate):
        barrier.wait()
        try:
            start_rollout(store, fresh(candidate), actor=f"flow-{candidate}")
            outcomes.append(("won", candidate))
        except RolloutInProgress as e:
            outcomes.append(("lost", e.running.candidate))

    threads = [threading.Thread(target=race, args=(s, c)) for s, c in zip(stores, [2, 3], strict=True)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    winners = [c for what, c in outcomes if what == "won"]
    assert len(winners) == 1 and len(outcomes) == 2
    assert [c for what, c in outcomes if what == "lost"] == winners  # the loser is told who runs
    assert active_rollout(stores[0], "router").candidate == winners[0]
    assert stores[0].verify_audit().ok
    for s in stores:
        s.close()


def test_read_back_carries_the_stored_revision(store):
    register(store)
    start_rollout(store, fresh(2), actor="flow")
    got = get_rollout(store, "router", 2)
    assert isinstance(got, RolloutState) and got.revision == 1


def test_a_start_that_finds_a_concurrent_start_of_the_same_candidate_is_refused(store):
    """``resume=False`` (what ``rollout_exec.begin`` passes after reading no row): the row that appeared in
    between belongs to a concurrent start of the same candidate, which drives it; returning it would give
    the rollout two drivers. Resume (the default) still returns it, and a finished rollout is returned as is."""
    register(store)
    running = start_rollout(store, fresh(2), actor="flow-a")
    with pytest.raises(RolloutInProgress, match=r"v2 \(phase running") as refused:
        start_rollout(store, fresh(2), actor="flow-b", resume=False)
    assert refused.value.running == running
    assert start_rollout(store, fresh(2), actor="flow-b") == running
    done = save_rollout(store, step(running, "rollback"), actor="flow-a", expected_revision=1)
    assert start_rollout(store, fresh(2), actor="flow-b", resume=False) == done
    assert [e.action for e in store.audit_events() if e.action.startswith("rollout.")] == [
        "rollout.started", "rollout.state"]
