import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.routing import TrafficSplit, bucket, route


def test_bucket_is_fixed_and_in_range():
    assert bucket("router", "user-1") == bucket("router", "user-1")
    assert 0 <= bucket("router", "user-1") < 100
    assert bucket("router", "user-1") != bucket("other-model", "user-1")


def test_share_of_distinct_users_matches_the_weight():
    split = TrafficSplit(model="router", champion=1, challenger=2, challenger_percent=10)
    on_challenger = sum(route(split, f"user-{i}").role == "challenger" for i in range(10_000))
    assert abs(on_challenger - 1000) < 4 * 30  # 4 sd of Binomial(10000, 0.1)


@given(st.text(min_size=1, max_size=30), st.floats(0, 100), st.floats(0, 100))
def test_raising_the_share_never_moves_a_challenger_user_back(key, a, b):
    low, high = sorted([a, b])
    before = route(TrafficSplit(model="m", champion=1, challenger=2, challenger_percent=low), key)
    after = route(TrafficSplit(model="m", champion=1, challenger=2, challenger_percent=high), key)
    if before.role == "challenger":
        assert after.role == "challenger"


@given(st.floats(0, 100))
def test_weights_sum_to_100(percent):
    split = TrafficSplit(model="m", champion=1, challenger=2, challenger_percent=percent)
    assert sum(split.weights.values()) == pytest.approx(100)
    assert split.live_versions == [1, 2]


def test_edges():
    assert route(TrafficSplit(model="m", champion=1, challenger=2, challenger_percent=0), "u").version == 1
    assert route(TrafficSplit(model="m", champion=1, challenger=2, challenger_percent=100), "u").version == 2
    assert TrafficSplit(model="m", champion=3, shadow=4).live_versions == [3, 4]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"challenger_percent": 5}, "no challenger is set"),
    ({"challenger": 1}, "champion and challenger at once"),
    ({"shadow": 1}, "a shadow must be another version"),
    ({"challenger": 2, "challenger_percent": 101}, "less than or equal to 100"),
])
def test_bad_splits_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrafficSplit(model="m", champion=1, **kwargs)


def test_a_new_split_may_not_shadow_its_challenger_but_a_stored_one_still_reads():
    """The rule is checked where splits are written; a split stored (or audited) before it existed still loads."""
    from lifecycle.routing import check_new_split

    both = TrafficSplit(model="m", champion=1, challenger=2, challenger_percent=10, shadow=2)
    assert TrafficSplit.model_validate(both.model_dump()) == both
    with pytest.raises(ValueError, match="v2 is the challenger"):
        check_new_split(both)
    check_new_split(TrafficSplit(model="m", champion=1, challenger=2, challenger_percent=10, shadow=3))
