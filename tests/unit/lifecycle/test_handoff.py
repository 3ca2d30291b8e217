"""When the monitor announces a stranded candidate again: table tests of the pure decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lifecycle.handoff import PublishedCandidate, decide_handoff

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
GRACE = timedelta(minutes=30)


def candidate(number: int, *, at: datetime = T0, against: str | None = "router:v2",
              again: list[datetime] = ()) -> PublishedCandidate:
    return PublishedCandidate(ref=f"router:v{number}", number=number, published_at=at, gated_against=against,
                              reannounced_at=list(again))


def decide(stranded, *, now=T0 + timedelta(minutes=40), champion="router:v2", busy=None, attempts=3):
    return decide_handoff(stranded, champion=champion, rollout_busy=busy, now=now, grace=GRACE,
                          max_attempts=attempts)


def test_nothing_stranded_nothing_to_say():
    decision = decide([])
    assert decision.reannounce is None and decision.reasons == []


def test_a_candidate_past_the_grace_is_announced_again_and_says_which_attempt():
    decision = decide([candidate(4)])
    assert decision.reannounce == "router:v4"
    assert "published at 2026-11-29 10:00 UTC" in decision.reasons[-1] and "attempt 1 of 3" in decision.reasons[-1]


def test_within_the_grace_the_rollout_still_has_time():
    decision = decide([candidate(4)], now=T0 + timedelta(minutes=20))
    assert decision.reannounce is None and "has until 2026-11-29 10:30 UTC" in decision.reasons[-1]


def test_a_busy_rollout_side_holds_it_back_and_names_why():
    decision = decide([candidate(4)], busy="the rollout of router:v3 is unfinished (canary)")
    assert decision.reannounce is None
    assert decision.reasons == ["router:v4 waits: the rollout of router:v3 is unfinished (canary)"]


def test_a_gate_against_an_earlier_champion_is_stale():
    decision = decide([candidate(4, against="router:v1")])
    assert decision.reannounce is None
    assert "compared it with router:v1, and the champion is router:v2" in decision.reasons[-1]
    assert "slm rollout run router:v4" in decision.reasons[-1]


def test_only_the_newest_candidate_is_announced_and_the_older_are_named():
    decision = decide([candidate(3, at=T0 - timedelta(hours=2)), candidate(5), candidate(4)])
    assert decision.reannounce == "router:v5"
    assert decision.reasons[0].startswith("router:v3, router:v4 were published before router:v5")


def test_attempts_are_spaced_by_the_grace_and_capped():
    once = [T0 + timedelta(minutes=35)]
    assert decide([candidate(4, again=once)], now=T0 + timedelta(minutes=50)).reannounce is None  # 15 min after
    again = decide([candidate(4, again=once)], now=T0 + timedelta(minutes=70))
    assert again.reannounce == "router:v4" and "attempt 2 of 3" in again.reasons[-1]
    spent = decide([candidate(4, again=[T0 + timedelta(minutes=m) for m in (35, 70, 105)])],
                   now=T0 + timedelta(hours=5))
    assert spent.reannounce is None and "announced again 3 times and no rollout started" in spent.reasons[-1]
    assert decide([candidate(4)], attempts=0).reannounce is None  # 0: never


def test_a_naive_time_is_refused_and_a_future_one_does_not_count_as_long_ago():
    with pytest.raises(ValueError, match="timezone-aware"):
        decide([candidate(4)], now=datetime(2026, 11, 29, 10, 40))
    ahead = decide([candidate(4, at=T0 + timedelta(hours=1))])  # another machine's clock ahead
    assert ahead.reannounce is None
