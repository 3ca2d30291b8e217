"""The drift policy, the drift verdict and the storm rule: table tests of pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.config import load_yaml_config
from lifecycle.drift_policy import (
    ColumnResult,
    DriftPolicy,
    FeedbackEvidence,
    MonitorParams,
    decide_drift,
    decide_trigger,
    wilson_interval,
)
from lifecycle.verdict import Verdict

REPO = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
COOLDOWN = timedelta(hours=6)


def policy(**changes) -> DriftPolicy:
    columns = {"prompt_oov_share": {"method": "wasserstein", "threshold": 0.1, "decisive": True},
               "prompt_length": {"method": "wasserstein", "threshold": 0.25},
               "route": {"method": "jensenshannon", "threshold": 0.2},
               "latency_ms": {"method": "wasserstein", "threshold": 0.3}}
    return DriftPolicy(**{"columns": columns, "min_rows": 1000, **changes})


def col(name: str, score: float | None, threshold: float = 0.2, skipped: str | None = None) -> ColumnResult:
    drifted = score is not None and score > threshold
    return ColumnResult(column=name, method="wasserstein", threshold=threshold, score=score, drifted=drifted,
                        skipped=skipped)


QUIET = [col("prompt_oov_share", 0.03, 0.1), col("prompt_length", 0.14, 0.25), col("route", 0.1),
         col("latency_ms", None, 0.3, skipped="the training reference has no latency_ms")]


def test_the_shipped_policy_loads():
    loaded = load_yaml_config(DriftPolicy, REPO / "configs/monitor.yaml")
    assert loaded.columns["prompt_oov_share"].decisive and loaded.reference.kind == "training"
    assert loaded.cooldown == timedelta(hours=6)


@pytest.mark.parametrize(("change", "message"), [
    ({"columns": {"prompt_lenght": {"method": "wasserstein", "threshold": 0.1}}}, "unknown column 'prompt_lenght'"),
    ({"columns": {"route": {"method": "wasserstein", "threshold": 0.1}}}, "route' is categorical: method"),
    ({"columns": {"prompt_length": {"method": "ks", "threshold": 0.05}}}, "method 'ks' is not one of"),
    ({"columns": {}}, "at least 1 item"),
    ({"reference": {"kind": "window"}}, "needs both `since` and `until`"),
    ({"reference": {"kind": "window", "since": T0, "until": T0}}, "reference window is empty"),
    ({"drift_share": 0}, "greater than 0"),
])
def test_bad_policies_say_what_to_change(change, message):
    with pytest.raises(ValueError, match=message):
        policy(**change)


@pytest.mark.parametrize(("successes", "n", "low", "high"), [
    (60, 100, 0.5020, 0.6906), (84, 100, 0.7558, 0.8990), (50, 50, 0.9287, 1.0), (0, 10, 0.0, 0.2775)])
def test_wilson_interval_worked_examples(successes, n, low, high):
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=1e-4)


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_holds_the_rate(pair):
    successes, n = pair
    low, high = wilson_interval(successes, n)
    assert 0 <= low <= successes / n <= high <= 1


# (name, columns, rows, feedback, verdict, failed checks, drifted columns)
CASES = [
    ("same world", QUIET, 2000, None, Verdict.PASS, [], []),
    ("decisive column alone", [col("prompt_oov_share", 0.16, 0.1), *QUIET[1:]], 2000, None, Verdict.FAIL,
     ["decisive-columns"], ["prompt_oov_share"]),
    ("half the columns", [QUIET[0], col("prompt_length", 0.3, 0.25), col("route", 0.4), QUIET[3]], 2000, None,
     Verdict.FAIL, ["drift-share"], ["prompt_length", "route"]),
    ("one of three non-decisive", [QUIET[0], col("prompt_length", 0.3, 0.25), QUIET[2]], 2000, None, Verdict.PASS,
     [], ["prompt_length"]),
    ("too few rows", [col("prompt_oov_share", 2.0, 0.1)], 999, None, Verdict.INCONCLUSIVE, [], ["prompt_oov_share"]),
    ("nothing comparable", [QUIET[3]], 5000, None, Verdict.INCONCLUSIVE, [], []),
    ("decay without data drift", QUIET, 2000, FeedbackEvidence(n=100, successes=60, baseline=0.84), Verdict.FAIL,
     ["feedback-accuracy"], []),
    ("feedback as good as at promotion", QUIET, 2000, FeedbackEvidence(n=100, successes=84, baseline=0.84),
     Verdict.PASS, [], []),
    ("decay while too few rows", QUIET, 10, FeedbackEvidence(n=100, successes=60, baseline=0.84), Verdict.FAIL,
     ["feedback-accuracy"], []),
]


@pytest.mark.parametrize(("name", "columns", "rows", "feedback", "verdict", "failed", "drifted"), CASES,
                         ids=[c[0] for c in CASES])
def test_decide_drift(name, columns, rows, feedback, verdict, failed, drifted):
    decision = decide_drift(columns, feedback, policy(), rows=rows)
    assert decision.verdict is verdict and decision.fire == (verdict is Verdict.FAIL)
    assert [f.check for f in decision.findings if f.verdict is Verdict.FAIL] == failed
    assert decision.drifted_columns == drifted
    assert decision.decay == ("feedback-accuracy" in failed)
    assert all(r.startswith("[") for r in decision.reasons())


@pytest.mark.parametrize(("feedback", "verdict", "fragment"), [
    (None, Verdict.INCONCLUSIVE, "no accuracy at promotion"),
    (FeedbackEvidence(n=100, successes=80, baseline=None), Verdict.INCONCLUSIVE, "no accuracy at promotion"),
    (FeedbackEvidence(n=49, successes=0, baseline=0.84), Verdict.INCONCLUSIVE, "49 answers with feedback"),
    # 70 of 100: CI [0.604, 0.781], floor 0.79: clearly below -> decay.
    (FeedbackEvidence(n=100, successes=70, baseline=0.84), Verdict.FAIL, "floor 0.790"),
    # 75 of 100: CI [0.657, 0.825] straddles the floor 0.79: neither decay nor pass.
    (FeedbackEvidence(n=100, successes=75, baseline=0.84), Verdict.INCONCLUSIVE, "CI [0.657, 0.825]"),
])
def test_feedback_check(feedback, verdict, fragment):
    decision = decide_drift(QUIET, feedback, policy(), rows=2000)
    finding = next(f for f in decision.findings if f.check == "feedback-accuracy")
    assert finding.verdict is verdict and fragment in finding.reason
    # Sparse feedback never holds a label-free verdict.
    assert decision.verdict is (Verdict.FAIL if verdict is Verdict.FAIL else Verdict.PASS)


def test_the_reason_names_the_failed_findings():
    decision = decide_drift([col("prompt_oov_share", 1.5, 0.1), col("route", 0.8)], None, policy(), rows=2000)
    assert decision.reason().startswith("drift-share: 2 of 2 columns drifted (prompt_oov_share 1.5 > 0.1")
    assert decision.scores == {"prompt_oov_share": 1.5, "route": 0.8}


# (name, running since, last retrain, last trigger, now, fire, fragment, retry_after)
TRIGGERS = [
    ("first drift", None, None, None, T0, True, "no retrain running", None),
    ("retrain running", T0 - timedelta(hours=30), None, None, T0, False, "running since 2026-11-25 06:00", None),
    ("trigger 3 h ago", None, None, T0 - timedelta(hours=3), T0, False, "last trigger", T0 + timedelta(hours=3)),
    ("retrain finished 1 h ago", None, T0 - timedelta(hours=1), T0 - timedelta(hours=8), T0, False, "last retrain",
     T0 + timedelta(hours=5)),
    ("both long ago", None, T0 - timedelta(hours=10), T0 - timedelta(hours=7), T0, True, "no retrain running", None),
    ("exactly at the end of the cooldown", None, None, T0 - COOLDOWN, T0, True, "no retrain running", None),
    ("clock skew: trigger in the future", None, None, T0 + timedelta(minutes=5), T0, False, "last trigger",
     T0 + timedelta(hours=6, minutes=5)),
]


@pytest.mark.parametrize(("name", "running", "retrain", "trigger", "now", "fire", "fragment", "retry"), TRIGGERS,
                         ids=[t[0] for t in TRIGGERS])
def test_decide_trigger(name, running, retrain, trigger, now, fire, fragment, retry):
    decision = decide_trigger(now=now, cooldown=COOLDOWN, running_retrain_since=running, last_retrain_at=retrain,
                              last_trigger_at=trigger)
    assert decision.fire is fire and fragment in decision.reason
    assert decision.retry_after == retry


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_a_running_retrain_always_suppresses(minutes_ago, trigger_minutes_ago):
    decision = decide_trigger(now=T0, cooldown=COOLDOWN, running_retrain_since=T0 - timedelta(minutes=minutes_ago),
                              last_retrain_at=None, last_trigger_at=T0 - timedelta(minutes=trigger_minutes_ago))
    assert not decision.fire


def test_an_unfinished_rollout_suppresses_within_the_cooldown_of_its_start_only():
    """A rollout under way: its candidate may answer the drift, and a new one could not roll out until it ends
    (RolloutInProgress), so a retrain now would run for nothing. But one older than the cooldown (its flow killed,
    or waiting for a person) must not silence the monitor for ever."""
    kwargs = {"now": T0, "cooldown": COOLDOWN, "running_retrain_since": None, "rollout_candidate": 4,
              "last_retrain_at": T0 - timedelta(days=2), "last_trigger_at": T0 - timedelta(days=2)}
    recent = decide_trigger(**kwargs, rollout_started_at=T0 - timedelta(hours=1))
    assert not recent.fire and "rollout of v4" in recent.reason and recent.retry_after == T0 + timedelta(hours=5)
    assert decide_trigger(**kwargs, rollout_started_at=T0 - COOLDOWN - timedelta(minutes=1)).fire
    assert decide_trigger(**{**kwargs, "rollout_candidate": None}).fire


def test_a_trigger_the_server_never_received_holds_nothing_off_and_is_replaced():
    """The monitor's process died between recording the trigger and sending its event: no retrain answers it, so
    it must not hold the next trigger off for the cooldown; a retrain within the cooldown still does."""
    kwargs = {"now": T0, "cooldown": COOLDOWN, "running_retrain_since": None, "last_retrain_at": None,
              "last_trigger_at": T0 - timedelta(hours=1)}
    held = decide_trigger(**kwargs)
    assert not held.fire and held.replaces is None
    replaced = decide_trigger(**kwargs, last_trigger_lost=True)
    assert replaced.fire and replaced.replaces == T0 - timedelta(hours=1)
    assert "the last trigger, at 2026-11-26 11:00 UTC, never reached the Prefect server" in replaced.reason
    retrained = decide_trigger(**{**kwargs, "last_retrain_at": T0 - timedelta(hours=2)}, last_trigger_lost=True)
    assert not retrained.fire and "the last retrain was at" in retrained.reason


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_trigger(now=datetime(2026, 1, 1), cooldown=COOLDOWN, running_retrain_since=None,
                       last_retrain_at=None, last_trigger_at=None)


@pytest.mark.parametrize(("params", "since", "until"), [
    (MonitorParams(), T0 - timedelta(hours=24), T0),
    (MonitorParams(hours=1.5), T0 - timedelta(hours=1.5), T0),
    (MonitorParams(since=T0 - timedelta(days=2), until=T0 - timedelta(days=1)), T0 - timedelta(days=2),
     T0 - timedelta(days=1)),
])
def test_monitor_window(params, since, until):
    assert params.window(T0) == (since, until)


def test_an_empty_monitor_window_is_refused():
    with pytest.raises(ValueError, match="empty monitor window"):
        MonitorParams(since=T0, until=T0 - timedelta(hours=1)).window(T0)
