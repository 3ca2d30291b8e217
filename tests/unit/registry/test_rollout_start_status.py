"""A rollout never starts for a version a concurrent retirement archived: ``rollout_exec.refusal`` looks before the
model's lock, so ``start_rollout`` checks the candidate's status again under it, and a stale driver's challenger
move checks the rollout's revision and the version's status under it too. Nothing is stored when refused: no
rollout row, the challenger alias and the traffic split as they were."""

import pytest

from lifecycle.rollout_plan import RolloutPlan
from lifecycle.rollout_state import MoveChallenger, start
from lifecycle.routing import TrafficSplit
from lifecycle.status import Alias, VersionStatus
from registry import rollout_exec
from registry.rollouts import RolloutRefused, get_rollout, start_rollout
from registry.store import ConcurrentChangeError, RegistryStore
from registry.traffic import get_split, set_split

GUARD = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.3}]
PLAN = RolloutPlan.model_validate({
    "name": "test", "version": 1, "approval_before_last_stage": False,
    "stage_defaults": {"min_requests_per_arm": 30, "max_duration_s": 36_000, "guardrails": GUARD},
    "stages": [{"name": "shadow", "share": 0}, {"name": "canary", "share": 20}, {"name": "full", "share": 100}]})


def quiet(*_args) -> None:
    pass


@pytest.fixture
def store(db_url):
    """v1 champion with all traffic, v2 a candidate."""
    store = RegistryStore.open(db_url)
    for _ in range(2):
        store.register_version("router", status=VersionStatus.CANDIDATE, prompt_format="f", reason="t", actor="a",
                               publish=lambda k: (f"local://models/router/v{k}", {}))
    store.promote("router", 1, actor="t", reason="first champion")
    set_split(store, TrafficSplit(model="router", champion=1), actor="t", reason="start")
    yield store
    store.close()


def retire_meanwhile(store, number=2) -> None:
    """What a concurrent retirement's first step does under the model lock: the version becomes ``archived``."""
    store.set_status("router", number, VersionStatus.ARCHIVED, actor="decommission", reason="retiring: test")


def assert_nothing_stored(store, split_before) -> None:
    assert get_rollout(store, "router", 2) is None
    assert store.get_alias("router", Alias.CHALLENGER) is None
    assert get_split(store, "router") == split_before
    assert not [e for e in store.audit_events() if e.action.startswith("rollout.") or
                (e.action == "alias.moved" and e.payload["alias"] == "challenger")]
    assert store.verify_audit().ok


def test_a_candidate_archived_after_the_refusal_check_is_refused_at_start(store, monkeypatch):
    real = rollout_exec.refusal

    def refusal_then_retired(store_, model, candidate):
        said = real(store_, model, candidate)
        assert said is None  # refusal() said yes ...
        retire_meanwhile(store_, candidate)  # ... and a retirement archived the candidate before the start
        return said

    monkeypatch.setattr(rollout_exec, "refusal", refusal_then_retired)
    before = get_split(store, "router")
    with pytest.raises(RolloutRefused, match="router:v2 is archived; only a candidate"):
        rollout_exec.begin(store, "router", 2, PLAN, actor="flow", emit=quiet, flow_run_id="run-1")
    assert_nothing_stored(store, before)


@pytest.mark.parametrize("resume", [True, False])
def test_start_rollout_refuses_a_version_that_is_no_longer_a_candidate(store, resume):
    planned, _ = start("router", 2, 1, PLAN, "2026-01-01T00:00:00+00:00")
    retire_meanwhile(store)
    before = get_split(store, "router")
    with pytest.raises(RolloutRefused, match="router:v2 is archived"):
        start_rollout(store, planned, actor="flow", resume=resume)
    assert_nothing_stored(store, before)


def test_an_aborted_rollout_of_a_candidate_retired_since_does_not_restart(store):
    state = rollout_exec.begin(store, "router", 2, PLAN, actor="flow", emit=quiet)
    aborted = rollout_exec.stop(store, state, PLAN, reason="freeze", actor="op", emit=quiet)
    retire_meanwhile(store)  # an aborted rollout holds nothing: the retirement may go ahead
    split = get_split(store, "router")
    with pytest.raises(RolloutRefused, match="router:v2 is archived"):
        start_rollout(store, state.model_copy(update={"revision": 0}), actor="flow", resume=False)
    assert get_rollout(store, "router", 2) == aborted  # the aborted row stays as it was
    assert store.get_alias("router", Alias.CHALLENGER) is None and get_split(store, "router") == split


def test_a_stale_driver_does_not_point_the_challenger_at_a_version_retired_after_an_abort(store, monkeypatch):
    """The start's driver is between its split and its challenger move when an operator aborts the rollout and a
    retirement archives the candidate: the driver's older MoveChallenger must not give the archived version the
    challenger alias (which would block its retention and any new rollout)."""
    real = rollout_exec._carry_out
    interleaved = []

    def carry_out(store_, state, effect, index, **kw):
        if isinstance(effect, MoveChallenger) and effect.version is not None and not interleaved:
            interleaved.append(rollout_exec.stop(store_, rollout_exec.current(store_, "router", 2), PLAN,
                                                 reason="freeze", actor="op", emit=quiet))
            retire_meanwhile(store_)
        return real(store_, state, effect, index, **kw)

    monkeypatch.setattr(rollout_exec, "_carry_out", carry_out)
    with pytest.raises(ConcurrentChangeError, match="the challenger alias is not moved"):
        rollout_exec.begin(store, "router", 2, PLAN, actor="flow", emit=quiet)
    assert interleaved[0].phase == "aborted"
    assert store.get_alias("router", Alias.CHALLENGER) is None
    assert store.get_version("router", 2).status is VersionStatus.ARCHIVED
    assert get_split(store, "router").live_versions == [1]


def test_a_challenger_move_onto_a_version_that_is_no_longer_a_candidate_is_refused(store):
    state = rollout_exec.begin(store, "router", 2, PLAN, actor="flow", emit=quiet)
    store.move_alias("router", Alias.CHALLENGER, None, actor="op", reason="test")
    store.set_status("router", 2, VersionStatus.ROLLED_BACK, actor="op", reason="test")
    with pytest.raises(ConcurrentChangeError, match="router:v2 is rolled_back"):
        rollout_exec._carry_out(store, state, MoveChallenger(model="router", version=2), 0, actor="flow",
                                emit=quiet)
    assert store.get_alias("router", Alias.CHALLENGER) is None


def test_a_candidate_still_a_candidate_starts_as_before(store):
    state = rollout_exec.begin(store, "router", 2, PLAN, actor="flow", emit=quiet)
    assert (state.phase, state.revision, state.pending) == ("running", 2, [])
    assert store.get_alias("router", Alias.CHALLENGER) == 2
    assert get_split(store, "router").shadow == 2
