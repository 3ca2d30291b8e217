"""The retention decision: table tests of the docstring's worked examples, policy validation, invariants."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.retention import (
    RetentionPolicy,
    RunningRollout,
    VersionFacts,
    holds,
    plan_log_purge,
    plan_retention,
)
from lifecycle.routing import TrafficSplit
from lifecycle.status import VersionStatus as S

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = DAY0 + timedelta(days=100)
POLICY = RetentionPolicy(keep_recent=1, retire_after_days=30)


def v(number, status, day, retiring=False):
    return VersionFacts(number=number, status=S(status), settled_at=DAY0 + timedelta(days=day), retiring=retiring)


def rollout(candidate, champion, phase="running"):
    return RunningRollout(candidate=candidate, champion=champion, phase=phase)


def decide(versions, aliases=None, split=None, rollout=None, policy=POLICY):
    return {d.number: (d.action, d.reasons) for d in plan_retention(
        "m", versions, aliases=aliases or {}, split=split, rollout=rollout, policy=policy, now=NOW)}


# The module docstring's examples, one row each: (versions, aliases, split, rollout, policy) -> {vN: (action, reasons)}
ROWS = [
    pytest.param([v(1, "promoted", 10)], {"previous": 1}, None, None, POLICY,
                 {1: ("keep", ["holds alias previous"])}, id="previous-champion"),
    pytest.param([v(2, "promoted", 20)], {"champion": 2}, TrafficSplit(model="m", champion=2), None, POLICY,
                 {2: ("keep", ["holds alias champion", "named by the traffic split as champion"])}, id="champion"),
    pytest.param([v(3, "rejected", 30), v(4, "rejected", 40)], {}, None, None, POLICY,
                 {4: ("keep", ["one of the 1 most recent resting versions"]),
                  3: ("retire", ["no alias, no traffic, no running rollout",
                                 "not among the 1 most recent resting versions (v4)",
                                 "70 days since it became rejected; retire after 30"])}, id="recency"),
    pytest.param([v(5, "rolled_back", 95)], {}, None, None, RetentionPolicy(keep_recent=0, retire_after_days=30),
                 {5: ("keep", ["only 5 days since it became rolled_back; retire after 30"])}, id="too-young"),
    pytest.param([v(6, "candidate", 50)], {}, None, None, POLICY,
                 {6: ("retire", ["candidate never rolled out: 50 days since it became candidate; retire after 30"])},
                 id="stale-candidate"),
    pytest.param([v(6, "candidate", 50), v(1, "promoted", 1)], {"champion": 1}, None, rollout(6, 1), POLICY,
                 {6: ("keep", ["candidate of the running rollout (running)"]),
                  1: ("keep", ["holds alias champion", "champion of the running rollout of v6"])}, id="in-rollout"),
    pytest.param([v(7, "candidate", 98.5)], {}, None, None, POLICY,
                 {7: ("keep", ["candidate waiting for its rollout: only 1.5 days since it became candidate; "
                               "retire after 30"])}, id="fresh-candidate"),
    pytest.param([v(8, "decommissioned", 1)], {}, None, None, POLICY,
                 {8: ("done", ["already decommissioned: only its tombstone is left"])}, id="decommissioned"),
    pytest.param([v(9, "archived", 99, retiring=True), v(10, "rejected", 1)], {}, None, None, POLICY,
                 {9: ("retire", ["a retirement was interrupted; completing it"]),
                  10: ("keep", ["one of the 1 most recent resting versions"])}, id="interrupted"),
    pytest.param([v(11, "rejected", 1)], {}, TrafficSplit(model="m", champion=1, shadow=11), None, POLICY,
                 {11: ("keep", ["named by the traffic split as shadow"])}, id="shadow"),
    pytest.param([v(12, "rolled_back", 1)], {}, None, None,
                 RetentionPolicy(keep_recent=0), {12: ("retire", ["no alias, no traffic, no running rollout",
                                                                  "not among the 0 most recent resting versions "
                                                                  "(none kept)", "99 days since it became "
                                                                  "rolled_back; retire after 30"])},
                 id="nothing-kept"),
]


@pytest.mark.parametrize("versions, aliases, split, running, policy, expected", ROWS)
def test_worked_examples(versions, aliases, split, running, policy, expected):
    assert decide(versions, aliases, split, running, policy) == expected


def test_held_versions_do_not_take_a_recent_place():
    versions = [v(1, "rejected", 1), v(2, "rejected", 2), v(3, "promoted", 3)]
    got = decide(versions, aliases={"previous": 3})
    assert got[3][0] == "keep" and got[2][0] == "keep" and got[1][0] == "retire"


def test_a_former_champion_without_alias_is_a_resting_version():
    versions = [v(1, "promoted", 1), v(2, "promoted", 2), v(3, "promoted", 3)]
    aliases = {"champion": 3, "previous": 2}
    assert decide(versions, aliases)[1] == ("keep", ["one of the 1 most recent resting versions"])
    got = decide(versions, aliases, policy=RetentionPolicy(keep_recent=0))
    assert got[1][0] == "retire" and got[2][0] == got[3][0] == "keep"


@pytest.mark.parametrize("fields, message", [
    ({"keep_recent": -1}, "keep_recent is -1: it counts versions to keep; use 0 or more"),
    ({"retire_after_days": 0}, "retire_after_days is 0.0: give a positive number of days"),
    ({"artifacts": "shred"}, "'archive' or 'delete'"),
    ({"keep_recnt": 2}, "keep_recnt"),
    ({"prediction_log_days": 0.5}, "prediction_log_days is 0.5: give at least 1 day"),
])
def test_policy_errors_say_what_to_fix(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RetentionPolicy(**fields)


def test_the_shipped_policy_loads():
    from pathlib import Path

    from lifecycle.config import load_yaml_config

    policy = load_yaml_config(RetentionPolicy, Path(__file__).resolve().parents[3] / "configs/retention.yaml")
    assert (policy.keep_recent, policy.retire_after_days, policy.artifacts) == (3, 30, "archive")
    assert policy.prediction_log_days == 90


def test_an_empty_policy_file_is_refused_not_read_as_the_defaults(tmp_path):
    """A truncated policy must not purge by the defaults: an empty file is an error, ``{}`` asks for them."""
    from lifecycle.config import load_yaml_config

    for empty in ("", "\n", "---\n", "# only a comment\n"):
        (tmp_path / "p.yaml").write_text(empty)
        with pytest.raises(ValueError, match="is empty"):
            load_yaml_config(RetentionPolicy, tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text("{}\n")
    assert load_yaml_config(RetentionPolicy, tmp_path / "p.yaml") == RetentionPolicy()
    for field in ("prediction_log_days", "retire_after_days"):
        with pytest.raises(ValueError, match="at most 36500 days"):
            RetentionPolicy(**{field: 1e6})


# -- the prediction log (the module docstring's example: 90 days, now = day 100) ------------------------------

def test_the_log_keeps_the_policys_days_and_a_running_rollouts_window():
    policy = RetentionPolicy(prediction_log_days=90)
    plain = plan_log_purge("m", policy=policy, rollout=None, now=NOW)
    assert plain.cutoff == DAY0 + timedelta(days=10) and plain.reasons == ["answers logged more than 90 days ago go"]
    started = RunningRollout(candidate=5, champion=4, phase="running", started_at=DAY0 + timedelta(days=4))
    held = plan_log_purge("m", policy=policy, rollout=started, now=NOW)
    assert held.cutoff == DAY0 + timedelta(days=4)
    assert held.reasons[1] == "but the running rollout of v5 reads the log since 2026-01-05 00:00 UTC: kept from there"
    late = started.model_copy(update={"started_at": DAY0 + timedelta(days=50)})  # inside the 90 days: no effect
    assert plan_log_purge("m", policy=policy, rollout=late, now=NOW) == plain
    forever = plan_log_purge("m", policy=RetentionPolicy(prediction_log_days=None), rollout=started, now=NOW)
    assert forever.cutoff is None and forever.reasons == ["the policy keeps the prediction log for ever"]


def test_the_log_is_kept_from_the_earliest_start_of_its_other_readers():
    policy = RetentionPolicy(prediction_log_days=90)
    started = RunningRollout(candidate=5, champion=4, phase="running", started_at=DAY0 + timedelta(days=4))
    window = ("the drift monitor's reference window (monitor.yaml)", DAY0 + timedelta(days=2))
    held = plan_log_purge("m", policy=policy, rollout=started, now=NOW, readers=[window])
    assert held.cutoff == DAY0 + timedelta(days=2)  # the window starts before the rollout: the window decides
    assert held.reasons[1:] == ["but the drift monitor's reference window (monitor.yaml) reads the log since "
                                "2026-01-03 00:00 UTC: kept from there"]
    late = ("a window", DAY0 + timedelta(days=20))  # inside the 90 days: only the rollout holds the cutoff back
    assert plan_log_purge("m", policy=policy, rollout=started, now=NOW, readers=[late]).cutoff == started.started_at
    alone = plan_log_purge("m", policy=policy, rollout=None, now=NOW, readers=[late, window])
    assert alone.cutoff == window[1] and len(alone.reasons) == 2


# -- invariants --------------------------------------------------------------------------------------------

statuses = st.sampled_from(list(S))


@st.composite
def worlds(draw):
    n = draw(st.integers(1, 12))
    versions = [VersionFacts(number=k, status=draw(statuses), settled_at=DAY0 + timedelta(days=draw(
        st.floats(0, 100, allow_nan=False))), retiring=draw(st.booleans())) for k in range(1, n + 1)]
    numbers = st.sampled_from(range(1, n + 1))
    aliases = draw(st.dictionaries(st.sampled_from(["champion", "previous", "challenger"]), numbers))
    champion = draw(numbers)
    challenger = draw(st.one_of(st.none(), numbers.filter(lambda k: k != champion)))
    shadow = draw(st.one_of(st.none(), numbers.filter(lambda k: k != champion)))
    split = draw(st.one_of(st.none(), st.just(TrafficSplit(model="m", champion=champion, challenger=challenger,
                                                            shadow=shadow))))
    running = None
    if n >= 2 and draw(st.booleans()):
        cand, champ = draw(st.lists(numbers, min_size=2, max_size=2, unique=True))
        running = rollout(cand, champ, phase=draw(st.sampled_from(["running", "paused", "awaiting_approval"])))
    policy = RetentionPolicy(keep_recent=draw(st.integers(0, 5)), retire_after_days=draw(st.floats(0.5, 60)))
    return versions, aliases, split, running, policy


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_never_retires_an_aliased_split_or_rollout_version(world):
    versions, aliases, split, running, policy = world
    decisions = plan_retention("m", versions, aliases=aliases, split=split, rollout=running, policy=policy, now=NOW)
    assert [d.number for d in decisions] == sorted(f.number for f in versions)
    protected = set(aliases.values()) | set(split.live_versions if split else [])
    if running is not None:
        protected |= {running.candidate, running.champion}
    for d in decisions:
        if d.number in protected:
            assert d.action in ("keep", "done")
            assert d.action == "done" or holds(d.number, aliases=aliases, split=split, rollout=running) == d.reasons
        if d.action == "retire" and not d.reasons[0].startswith("a retirement was interrupted"):
            fact = next(f for f in versions if f.number == d.number)
            assert (NOW - fact.settled_at).total_seconds() / 86_400 >= policy.retire_after_days
        assert d.reasons


@settings(max_examples=200, deadline=None)
@given(worlds())
def test_keeps_at_least_keep_recent_resting_versions(world):
    versions, aliases, split, running, policy = world
    decisions = plan_retention("m", versions, aliases=aliases, split=split, rollout=running, policy=policy, now=NOW)
    resting = [d for d in decisions if d.status in (S.REJECTED, S.ROLLED_BACK, S.ARCHIVED, S.PROMOTED)
               and not d.reasons[0].startswith(("holds", "named", "candidate", "champion", "a retirement"))]
    kept = [d for d in resting if d.action == "keep"]
    assert len(kept) >= min(policy.keep_recent, len(resting))
    # and the kept-for-recency ones are the newest of them
    recent = sorted((d.number for d in resting), reverse=True)[:policy.keep_recent]
    assert all(d.action == "keep" for d in resting if d.number in recent)
