"""When the monitor announces a stranded candidate again: table tests of the pure decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lifecycle.handoff import PublishedCandidate, decide_handoff

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
SERVER = "http://127.0.0.1:4200/api"


def candidate(number: int, *, at: datetime = T0, against: str | None = "router:v2", to: str | None = SERVER,
              again: list[datetime] = ()) -> PublishedCandidate:
    return PublishedCandidate(ref=f"router:v{number}", number=number, published_at=at, gated_against=against,
                              announced_to=to, reannounced_at=list(again))


def decide(stranded, *, now=T0 + timedelta(minutes=40), champion="router:v2", busy=None, heard=False, attempts=3):
    return decide_handoff(stranded, server=SERVER, heard=heard, champion=champion, rollout_busy=busy, now=now,
                          grace=timedelta(minutes=30), max_age=timedelta(hours=24), max_attempts=attempts)


def held(decision) -> str:
    assert decision.reannounce is None and len(decision.reasons) == 1
    return decision.reasons[0]


def test_nothing_stranded_nothing_to_say():
    assert decide([]).reannounce is None and decide([]).reasons == []


def test_a_lost_announcement_past_the_grace_is_sent_again_and_says_which_attempt():
    decision = decide([candidate(4)])
    assert decision.reannounce == "router:v4"
    assert "published at 2026-11-29 10:00 UTC, the Prefect server never received it" in decision.reasons[0]
    assert "attempt 1 of 3" in decision.reasons[0]


def test_within_the_grace_the_rollout_still_has_time():
    assert "has until 2026-11-29 10:30 UTC" in held(decide([candidate(4)], now=T0 + timedelta(minutes=20)))


def test_an_announcement_the_server_received_is_a_persons_matter_and_one_it_cannot_tell_is_not_guessed():
    assert "received router:v4's announcement, yet no rollout of it started" in held(decide([candidate(4)],
                                                                                            heard=True))
    assert "could not say whether it received" in held(decide([candidate(4)], heard=None))


def test_a_retrain_without_a_server_or_for_another_server_is_never_rolled_out_unasked():
    assert "a temporary Prefect server" in held(decide([candidate(4, to=None)]))
    assert "announced to http://other:4200/api, not to this server" in held(decide([candidate(4, to="http://other:4200/api")]))
    assert decide([candidate(4, to=SERVER + "/")]).reannounce == "router:v4"  # the same server


def test_a_busy_rollout_side_holds_it_back_and_names_why():
    busy = held(decide([candidate(4)], busy="the rollout of router:v3 is unfinished (canary)"))
    assert busy == "router:v4 waits: the rollout of router:v3 is unfinished (canary)"


def test_a_gate_against_an_earlier_champion_is_stale():
    reason = held(decide([candidate(4, against="router:v1")]))
    assert "compared it with router:v1, and the champion is router:v2" in reason
    assert "slm rollout run router:v4" in reason


def test_only_the_newest_candidate_within_the_age_limit_counts():
    assert decide([candidate(3, at=T0 - timedelta(hours=2)), candidate(5), candidate(4)]).reannounce == "router:v5"
    old = decide([candidate(4)], now=T0 + timedelta(hours=25))  # a day later: history
    assert old.reannounce is None and old.reasons == []
    younger_older = decide([candidate(5, at=T0 - timedelta(hours=30)), candidate(4)])  # v5 too old: v4 is newest left
    assert younger_older.reannounce == "router:v4"


def test_attempts_are_spaced_by_the_grace_and_capped_and_zero_turns_it_off():
    once = [T0 + timedelta(minutes=35)]
    assert "announced again at" in held(decide([candidate(4, again=once)], now=T0 + timedelta(minutes=50)))
    again = decide([candidate(4, again=once)], now=T0 + timedelta(minutes=70))
    assert again.reannounce == "router:v4" and "attempt 2 of 3" in again.reasons[0]
    spent = held(decide([candidate(4, again=[T0 + timedelta(minutes=m) for m in (35, 70, 105)])],
                        now=T0 + timedelta(hours=5)))
    assert "announced again 3 times and the Prefect server has none of it" in spent
    assert "announcing again is off (handoff_attempts: 0)" in held(decide([candidate(4)], attempts=0))


def test_a_naive_time_is_refused_and_a_future_one_does_not_count_as_long_ago():
    with pytest.raises(ValueError, match="timezone-aware"):
        decide([candidate(4)], now=datetime(2026, 11, 29, 10, 40))
    assert "its rollout has until" in held(decide([candidate(4, at=T0 + timedelta(hours=1))]))  # a clock ahead


def test_what_may_still_start_unaided_is_said_before_any_roll_it_out_by_hand():
    """A "roll it out by hand" while the rollout side is busy or the grace runs would start a second rollout run."""
    early = held(decide([candidate(4, to=None)], now=T0 + timedelta(minutes=10)))
    assert "its rollout has until" in early and "by hand" not in early
    busy = held(decide([candidate(4)], attempts=0, busy="a rollout flow run of router is queued"))
    assert busy.startswith("router:v4 waits:") and "by hand" not in busy


def test_an_announcement_from_before_the_check_recorded_no_server_and_says_so():
    assert "published before announcements recorded their Prefect server" in held(decide([candidate(4, to="")]))
