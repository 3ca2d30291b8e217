from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.config import load_yaml_config
from lifecycle.predictions import ByCaller, VersionAggregate
from lifecycle.rollout_plan import RolloutPlan, Stage, decide_stage
from lifecycle.sequential import clustered_ratio_variance
from lifecycle.verdict import Verdict

REPO = Path(__file__).resolve().parents[3]
T0, T1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)


STEADY = (100.0, 1600.0)  # ok latencies of mean 100 ms, sd 40: the same on both arms unless a case says not


def agg(requests, model_errors=0, *, infra=0, flagged=0, fb=(0, 0), p95=100.0, role="champion", version=1,
        lat=STEADY, users=None):
    """``lat=(mean, variance)`` of the ok latencies fills the sums; None leaves them out (older aggregates).
    ``users``: distinct callers, by default one per request."""
    ok = requests - model_errors - infra
    sums = {}
    if lat is not None and ok > 0:
        mean, var = lat
        sums = {"latency_sum_ms": ok * mean, "latency_sum_sq_ms2": (ok - 1) * var + ok * mean**2}
    return VersionAggregate(
        model="m", version=version, role=role, requests=requests, served=requests,
        users=requests if users is None else users, ok=ok, model_errors=model_errors, infra_errors=infra,
        input_errors=0,
        guardrail_flagged=flagged, prompt_tokens=0, completion_tokens=0, latency_p50_ms=p95 / 2 if requests else None,
        latency_p95_ms=p95 if requests else None, latency_p99_ms=p95 if requests else None,
        feedback_count=fb[0], feedback_success=fb[1], window_start=T0, window_end=T1, **sums)


def plan() -> RolloutPlan:
    return load_yaml_config(RolloutPlan, REPO / "configs" / "rollout.yaml")


def stage(name: str) -> Stage:
    return next(s for s in plan().stages if s.name == name)


def test_shipped_plan_loads():
    p = plan()
    assert [s.share for s in p.stages] == [0, 5, 25, 50, 100]
    assert p.approval_before_last_stage
    assert stage("canary-5").on_inconclusive == "rollback"


GOOD_FB = (500, 450)
# name, stage, champion, challenger, elapsed_s, verdict, action, the check that decides
CASES = [
    ("good canary advances", "canary-50", agg(2000, 20, fb=(2000, 1800)), agg(2000, 20, fb=(2000, 1810)),
     600, Verdict.PASS, "advance", None),
    ("1% -> 5% regression rolls back", "canary-50", agg(600, 6, fb=GOOD_FB), agg(600, 30, fb=GOOD_FB),
     600, Verdict.FAIL, "rollback", "model_error_rate"),
    ("regression caught before the minimum sample", "canary-50", agg(300, 3, fb=GOOD_FB),
     agg(300, 30, fb=GOOD_FB), 60, Verdict.FAIL, "rollback", "model_error_rate"),
    ("too little data holds", "canary-50", agg(100, 1, fb=GOOD_FB), agg(100, 1, fb=GOOD_FB),
     60, Verdict.INCONCLUSIVE, "hold", "minimum sample"),
    ("too little data at max duration pauses", "canary-50", agg(100, 1, fb=GOOD_FB), agg(100, 1, fb=GOOD_FB),
     3600, Verdict.INCONCLUSIVE, "pause", "maximum duration"),
    ("too little data at max duration rolls back where the plan says", "canary-5", agg(1900, 1, fb=GOOD_FB),
     agg(100, 1, fb=GOOD_FB), 3600, Verdict.FAIL, "rollback", "maximum duration"),
    ("silent challenger with traffic is a sample-ratio mismatch", "canary-25", agg(2000, 20, fb=GOOD_FB),
     agg(0), 60, Verdict.FAIL, "rollback", "sample ratio"),
    ("no traffic at all holds", "canary-25", agg(0), agg(0), 60, Verdict.INCONCLUSIVE, "hold",
     "challenger: traffic"),
    ("split off plan rolls back", "canary-5", agg(9000, 90, fb=GOOD_FB), agg(1000, 10, fb=GOOD_FB),
     60, Verdict.FAIL, "rollback", "sample ratio"),
    ("slow p95 rolls back", "canary-50", agg(2000, 20, fb=(2000, 1800)), agg(2000, 20, fb=(2000, 1800), p95=130),
     600, Verdict.FAIL, "rollback", "latency_p95_ms"),
    ("feedback success drops", "canary-50", agg(2000, 20, fb=(1000, 900)), agg(2000, 20, fb=(1000, 750)),
     600, Verdict.FAIL, "rollback", "feedback_success_rate"),
    ("no feedback yet holds", "canary-50", agg(2000, 20), agg(2000, 20), 600, Verdict.INCONCLUSIVE, "hold",
     "feedback_success_rate"),
    ("shadow with equal counts advances", "shadow", agg(3000, 30), agg(3000, 28, role="shadow"),
     600, Verdict.PASS, "advance", None),
    ("full stage against the champion's reference window", "full", agg(2000, 20, fb=(2000, 1800)),
     agg(4000, 40, fb=(4000, 3600)), 600, Verdict.PASS, "advance", None),
]


@pytest.mark.parametrize(("name", "stage_name", "champion", "challenger", "elapsed", "verdict", "action", "check"),
                         CASES, ids=[c[0] for c in CASES])
def test_decide_stage_table(name, stage_name, champion, challenger, elapsed, verdict, action, check):
    v = decide_stage(stage(stage_name), champion, challenger, elapsed)
    assert (v.verdict, v.action) == (verdict, action), v.reasons()
    if check is not None:
        assert any(f.check == check and f.verdict == verdict for f in v.findings), v.reasons()


@pytest.mark.parametrize(("stage_name", "champion", "challenger", "counted"), [
    ("canary-50", agg(2000, 20, fb=(2000, 1800)), agg(2000, 20, fb=(2000, 1810)), 4000),
    ("shadow", agg(3000, 30), agg(3000, 28, role="shadow"), 3000),  # shadow rows copy the champion's requests
    ("full", agg(2000, 20, fb=(2000, 1800)), agg(4000, 40, fb=(4000, 3600)), 4000),  # the champion's is a reference
])
def test_requests_of_an_older_split_hold_a_stage_only_when_they_outnumber_its_own(stage_name, champion, challenger,
                                                                                  counted):
    """A gateway that never adopts the stage's split is said by name; a few late requests of the old split are not
    held against a stage that has its evidence."""
    none = decide_stage(stage(stage_name), champion, challenger, 600)
    assert "split adoption" not in [f.check for f in none.findings]
    few = decide_stage(stage(stage_name), champion, challenger, 600, stale_requests=counted, split_revision=7)
    assert few.action == "advance", few.reasons()
    assert any(f.check == "split adoption" and f.verdict is Verdict.PASS and f"{counted} requests" in f.reason
               for f in few.findings)
    stuck = decide_stage(stage(stage_name), champion, challenger, 600, stale_requests=counted + 1, split_revision=7)
    assert (stuck.verdict, stuck.action) == (Verdict.INCONCLUSIVE, "hold")
    finding = next(f for f in stuck.findings if f.check == "split adoption")
    assert finding.verdict is Verdict.INCONCLUSIVE and (finding.observed, finding.threshold) == (counted + 1, counted)
    assert "revision 7" in finding.reason and "has not adopted" in finding.reason


def test_a_stage_out_of_time_on_a_split_no_gateway_adopted_pauses_for_a_person_whatever_the_plan_says():
    canary = stage("canary-5")
    assert canary.on_inconclusive == "rollback"
    silent = (agg(0, users=0), agg(0, users=0, role="challenger", version=2))
    assert decide_stage(canary, *silent, canary.max_duration_s).action == "rollback"  # the plan's word otherwise
    stuck = decide_stage(canary, *silent, canary.max_duration_s, stale_requests=500, split_revision=4)
    assert (stuck.verdict, stuck.action) == (Verdict.INCONCLUSIVE, "pause")
    assert "has not adopted the stage's split, so a person decides" in stuck.findings[-1].reason


def test_a_canary_arm_no_caller_has_reached_yet_is_judged_on_callers_not_requests():
    """20 callers on the champion and none yet on a 5 % arm: 0.95^20 = 36 % of sound splits look like that. By
    their 200 requests it read as a mismatch (rolled back); by callers it is a silent arm, which holds."""
    v = decide_stage(stage("canary-5"), agg(200, 2, fb=GOOD_FB, users=20), agg(0, users=0, role="challenger",
                                                                                 version=2), 60)
    assert (v.srm.n_champion, v.srm.n_challenger, v.srm.mismatch) == (20, 0, False)
    assert v.action == "hold"


def test_full_stage_skips_the_split_check_and_shadow_expects_equal_counts():
    assert decide_stage(stage("full"), agg(2000), agg(4000), 10).srm is None
    assert decide_stage(stage("shadow"), agg(3000), agg(3000, role="shadow"), 10).srm.expected_share == 0.5


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 30), st.floats(0, 10_000))
def test_never_advance_on_a_silent_arm_or_too_little_data(n_a, n_b, errors, elapsed):
    v = decide_stage(stage("canary-50"), agg(n_a, min(errors, n_a), fb=(n_a, n_a)),
                     agg(n_b, min(errors, n_b), fb=(n_b, n_b)), elapsed)
    if min(n_a, n_b) < 400:
        assert v.verdict is not Verdict.PASS and v.action != "advance"
    assert v.action == {Verdict.PASS: "advance", Verdict.FAIL: "rollback"}.get(v.verdict, v.action)


def _raw() -> dict:
    return yaml.safe_load((REPO / "configs" / "rollout.yaml").read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["stages"][2].update(share=5), "strictly increase"),
        (lambda d: d["stages"][-1].update(share=90), "last stage must send 100"),
        (lambda d: d["stages"][2].update(share=0, guardrails=d["stages"][0]["guardrails"]),
         "only the first stage may be shadow"),
        (lambda d: d["stages"][1].update(guardrails=[]), "at least 1 item"),
        (lambda d: d["stages"][0]["guardrails"].append(
            {"metric": "feedback_success_rate", "direction": "higher_is_better", "regression": 0.05}),
         "no feedback"),
        (lambda d: d["stage_defaults"]["guardrails"][0].update(direction="higher_is_better"),
         "direction must be 'lower_is_better'"),
        (lambda d: d["stage_defaults"]["guardrails"][0].update(regression=4), "below 1"),
        (lambda d: d["stages"][3].update(name="canary-5"), "unique"),
        (lambda d: d["stages"][1].update(on_inconclusive="wait"), "pause"),
    ],
)
def test_invalid_plans_say_what_to_fix(tmp_path, edit, message):
    raw = _raw()
    edit(raw)
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=message):
        load_yaml_config(RolloutPlan, path)


# -- latency mean: an anytime-valid test against (1 + regression) x the champion's mean ------------------

LATENCY_MEAN = {"metric": "latency_mean_ms", "direction": "lower_is_better", "regression": 0.25}


def plan_with_latency_mean(tmp_path) -> RolloutPlan:
    """The shipped plan, which tests the latency mean on every served stage (not in shadow, where copies
    queue behind the served answer)."""
    shipped = plan()
    assert [LATENCY_MEAN in [g.model_dump(exclude={"tolerance"}) for g in s.guardrails] for s in shipped.stages] == [
        False, True, True, True, True]
    return shipped


CHAMPION_LAT = (100.0, 1600.0)  # the worked examples of relative_margin_cs: mean 100 ms, sd 40, n 400
# challenger (mean, variance), ok answers per arm, the finding's verdict, its interval of challenger - limit
LATENCY_CASES = [
    ((110.0, 1936.0), 400, Verdict.PASS, (-25.65, -4.35)),
    ((150.0, 3600.0), 400, Verdict.FAIL, (12.67, 37.33)),
    ((130.0, 2704.0), 400, Verdict.INCONCLUSIVE, (-6.46, 16.46)),
    ((150.0, 3600.0), 30, Verdict.INCONCLUSIVE, (-19.64, 69.64)),
    # The interval still holds the limit; the no-regression test rules it out (p 0.0154): a pass since 2026-11-28.
    ((105.0, 1800.0), 100, Verdict.PASS, (-40.04, 0.04)),
]


@pytest.mark.parametrize(("lat", "n", "verdict", "interval"), LATENCY_CASES)
def test_latency_mean_worked_examples(tmp_path, lat, n, verdict, interval):
    canary = next(s for s in plan_with_latency_mean(tmp_path).stages if s.name == "canary-50")
    v = decide_stage(canary, agg(n, lat=CHAMPION_LAT), agg(n, lat=lat, role="challenger", version=2), 60)
    (finding,) = [f for f in v.findings if f.check == "latency_mean_ms"]
    assert finding.verdict is verdict, finding.reason
    assert finding.threshold == pytest.approx(125.0) and finding.observed == pytest.approx(lat[0])
    cs = v.mean_tests["latency_mean_ms"]
    assert (cs.lower, cs.upper) == (pytest.approx(interval[0], abs=0.01), pytest.approx(interval[1], abs=0.01))
    if verdict is Verdict.FAIL:
        assert v.action == "rollback"


def test_latency_mean_without_sums_or_below_30_ok_answers_is_never_a_pass(tmp_path):
    canary = next(s for s in plan_with_latency_mean(tmp_path).stages if s.name == "canary-50")
    good = {"fb": (2000, 1800)}
    no_sums = decide_stage(canary, agg(2000, 20, lat=None, **good), agg(2000, 20, lat=None, **good), 600)
    (finding,) = [f for f in no_sums.findings if f.check == "latency_mean_ms"]
    assert finding.verdict is Verdict.INCONCLUSIVE and no_sums.action == "hold" and not no_sums.mean_tests
    few = decide_stage(canary, agg(2000, 20, lat=CHAMPION_LAT, **good), agg(29, lat=(100.0, 1.0)), 600)
    assert [f.verdict for f in few.findings if f.check == "latency_mean_ms"] == [Verdict.INCONCLUSIVE]
    # An equal, well-sampled challenger advances with the latency mean guardrail in place.
    same = decide_stage(canary, agg(2000, 20, lat=CHAMPION_LAT, **good), agg(2000, 20, lat=CHAMPION_LAT, **good), 600)
    assert same.action == "advance", same.reasons()


def test_slow_mean_rolls_back_before_the_minimum_sample(tmp_path):
    # 60 % slower on 200 requests per arm: the interval is valid at every look, so no need to wait for 400.
    canary = next(s for s in plan_with_latency_mean(tmp_path).stages if s.name == "canary-50")
    v = decide_stage(canary, agg(200, 2, lat=CHAMPION_LAT), agg(200, 2, lat=(160.0, 4096.0)), 60)
    assert v.action == "rollback" and any(f.check == "latency_mean_ms" and f.verdict is Verdict.FAIL
                                          for f in v.findings), v.reasons()


def test_equal_feedback_passes_on_the_no_regression_test_where_the_interval_would_hold():
    """700 feedbacks a side, 85 % success on both: the interval [-0.058, +0.058] still holds a five-point drop, the
    pass rule until 2026-11-28 held here; the no-regression test (p 0.039, floor 50) rules it out: advance. At 500
    feedbacks (p 0.100) it holds still. Errors 1 % on 2,000 a side: past their floor, their test passes too."""
    canary = stage("canary-50")
    lat = {"lat": CHAMPION_LAT}
    ready = decide_stage(canary, agg(2000, 20, fb=(700, 595), **lat), agg(2000, 20, fb=(700, 595), **lat), 600)
    assert ready.action == "advance", ready.reasons()
    fb = ready.tests["feedback_success_rate"]
    assert -fb.lower >= fb.tau and fb.pass_p_value < 0.04 <= fb.alpha  # the interval alone would not pass it
    (finding,) = [f for f in ready.findings if f.check == "feedback_success_rate"]
    assert "no-regression p 0.03" in finding.reason and finding.verdict is Verdict.PASS
    fewer = decide_stage(canary, agg(2000, 20, fb=(500, 425), **lat), agg(2000, 20, fb=(500, 425), **lat), 600)
    assert fewer.action == "hold"
    assert "not yet ruled out" in next(f.reason for f in fewer.findings if f.check == "feedback_success_rate")


def test_below_its_floor_the_pass_is_the_intervals():
    """0 of 100 model errors on each arm: the no-regression test alone would pass (p 0.02), but 100 trials are below
    its floor (201: ten expected errors at 5 %), where a rate near 0 makes the plug-in variance optimistic; the
    interval [-0.042, +0.042] does not rule out 0.04, so the test holds."""
    v = decide_stage(MODEL_ERRORS_ONLY, agg(100), agg(100, role="challenger", version=2), 60)
    t = v.tests["model_error_rate"]
    assert t.pass_p_value <= t.alpha and t.pass_floor > 100 and not t.rules_out
    (finding,) = [f for f in v.findings if f.check == "model_error_rate"]
    assert finding.verdict is Verdict.INCONCLUSIVE and "the pass test starts at 201 per arm" in finding.reason


def test_a_tolerance_accepts_small_harm_and_still_catches_the_regression_worth_catching():
    canary = stage("canary-5")  # model errors: tolerance 0.005, regression 0.04 (configs/rollout.yaml)
    small = decide_stage(canary, agg(3747, 2, fb=(3747, 3150)), agg(225, 2, fb=(225, 190)), 60)
    assert all(f.verdict is not Verdict.FAIL for f in small.findings), small.reasons()  # 0.9 % vs 0.05 %: held
    big = decide_stage(canary, agg(9500, 95, fb=GOOD_FB), agg(500, 25, fb=GOOD_FB), 60)  # 1 % -> 5 %
    assert big.action == "rollback" and any(
        f.check == "model_error_rate" and f.verdict is Verdict.FAIL and "more than 0.005" in f.reason
        for f in big.findings), big.reasons()


@pytest.mark.parametrize(("guardrail", "message"), [
    ({"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.04, "tolerance": 0.04},
     "must be below the regression"),
    ({"metric": "latency_mean_ms", "direction": "lower_is_better", "regression": 0.25, "tolerance": 0.1},
     "rates only"),
])
def test_tolerance_is_checked(guardrail, message):
    from lifecycle.rollout_plan import Guardrail

    with pytest.raises(ValueError, match=message):
        Guardrail(**guardrail)


def test_the_split_is_checked_on_callers_when_the_log_counts_them():
    # 500 sticky users, 28 of them on the 5 % side, busier than most: their 700 of 10,500 requests look like a
    # broken split at the request level (always-valid p 3e-11), but 28 of 503 callers is what a 5 % bucket gives.
    # (Measured with 500 simulated users and the chi-square test of the time: 598 of 10,490, p 0.00099.)
    canary = stage("canary-5")
    by_requests = decide_stage(canary, agg(9800, 10, fb=GOOD_FB), agg(700, 1, fb=GOOD_FB), 60)
    assert by_requests.srm.mismatch
    champion = agg(9800, 10, fb=GOOD_FB).model_copy(update={"users": 475})
    challenger = agg(700, 1, fb=GOOD_FB).model_copy(update={"users": 28})
    by_callers = decide_stage(canary, champion, challenger, 60)
    assert not by_callers.srm.mismatch
    assert any(f.check == "sample ratio" and "share of callers" in f.reason for f in by_callers.findings)


MODEL_ERRORS_ONLY = Stage(
    name="canary", share=50, min_requests_per_arm=100, max_duration_s=3600,
    guardrails=[{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.04}])


@pytest.mark.parametrize(("challenger", "check"), [
    (agg(600, infra=600), "challenger: traffic"),  # backend down: every request an infra error, 0 model errors
    (agg(600, infra=550), "minimum sample"),  # 50 answers: below the minimum of 100, however many attempts
], ids=["all-infra-errors", "too-few-answers"])
def test_an_arm_that_does_not_answer_never_passes_even_unguarded(challenger, check):
    """A plan without an infra_error_rate guardrail: a down challenger's model error rate is 0 of 600 — it
    advanced before requests were counted by answers."""
    v = decide_stage(MODEL_ERRORS_ONLY, agg(600, 3), challenger, 60)
    assert (v.verdict, v.action) == (Verdict.INCONCLUSIVE, "hold"), v.reasons()
    assert any(f.check == check and f.verdict is Verdict.INCONCLUSIVE for f in v.findings), v.reasons()
    control = decide_stage(MODEL_ERRORS_ONLY, agg(600, 3), agg(600, 3, role="challenger"), 60)
    assert control.action == "advance", control.reasons()  # the same arm answering does pass


def test_a_down_challenger_rolls_back_where_the_plan_guards_infra_errors():
    v = decide_stage(stage("canary-50"), agg(600, 6, fb=GOOD_FB), agg(600, infra=600), 60)
    assert (v.verdict, v.action) == (Verdict.FAIL, "rollback"), v.reasons()
    assert any(f.check == "infra_error_rate" and f.verdict is Verdict.FAIL for f in v.findings)


def moments_of(x, n) -> ByCaller:
    """A tested sum seen by caller: per-caller sums ``x`` over per-caller counts ``n``."""
    x, n = np.asarray(x, dtype=float), np.asarray(n, dtype=float)
    return ByCaller(callers=int(np.count_nonzero(n)), events=float(x.sum()), trials=float(n.sum()),
                    variance=clustered_ratio_variance(x, n))


def test_errors_bunched_in_one_caller_are_weighed_as_one_callers_evidence():
    """600 vs 600 requests, 6 against 30 model errors: a rollback under independence (the table). When 24 of the
    challenger's 30 are one caller's 24 requests, the per-caller moments make it the evidence of one bad caller:
    held, with the design effect in the reason; spread over many callers, the same counts still roll back."""
    champion, challenger = agg(600, 6, fb=GOOD_FB), agg(600, 30, fb=GOOD_FB, role="challenger", version=2)
    c = "canary-50"
    assert decide_stage(stage(c), champion, challenger, 600).action == "rollback"

    def moments(a, per_caller_errors, requests_per_caller):
        x = np.asarray(per_caller_errors, dtype=float)
        n = np.asarray(requests_per_caller, dtype=float)
        m = moments_of(x, n)
        zero = moments_of(np.zeros(len(n)), n)
        return a.model_copy(update={"by_caller": {"model_errors": m, "infra_errors": zero,
                                                     "guardrail_flagged": zero}})

    steady = moments(champion, [1] * 6 + [0] * 54, [10] * 60)  # 60 callers of 10, six with one error
    bunched = moments(challenger, [24] + [1] * 6 + [0] * 52, [24] + [10] * 57 + [6])  # 600 in all
    verdict = decide_stage(stage(c), steady, bunched, 600)
    assert verdict.action == "hold"
    test = verdict.tests["model_error_rate"]
    assert test.design_effect > 3 and not test.reject
    assert "design effect" in next(f.reason for f in verdict.findings if f.check == "model_error_rate")
    spread = moments(challenger, [1] * 30 + [0] * 30, [10] * 60)
    again = decide_stage(stage(c), steady, spread, 600)
    assert again.action == "rollback" and again.tests["model_error_rate"].design_effect < 1.2


def test_a_slow_mean_from_a_few_slow_callers_is_weighed_by_caller(tmp_path):
    """400 ok answers a side, from 40 callers of 10. The challenger's mean is 150 ms against a limit of 125: all
    of it four callers at 600 ms (the other 36 at 100). As 400 independent answers that is a rollback; as 40
    callers, four of them slow, it is not yet evidence about the version: held, with the design effect given."""
    canary = next(s for s in plan_with_latency_mean(tmp_path).stages if s.name == "canary-50")
    lat = (150.0, (40 * 450.0**2 + 360 * 50.0**2) / 399)  # the 400 answers' own mean and variance
    champion, challenger = agg(400, lat=CHAMPION_LAT), agg(400, lat=lat, role="challenger", version=2)
    assert decide_stage(canary, champion, challenger, 60).action == "rollback"

    def by_caller(a, per_caller_sums):
        moments = moments_of(np.asarray(per_caller_sums), np.full(len(per_caller_sums), 10.0))
        return a.model_copy(update={"by_caller": {"latency_sum_ms": moments}})

    verdict = decide_stage(canary, by_caller(champion, [1000.0] * 40),
                           by_caller(challenger, [6000.0] * 4 + [1000.0] * 36), 60)
    (finding,) = [f for f in verdict.findings if f.check == "latency_mean_ms"]
    assert finding.verdict is Verdict.INCONCLUSIVE and verdict.action == "hold", finding.reason
    assert "design effect" in finding.reason
    cs = verdict.mean_tests["latency_mean_ms"]
    assert cs.lower < 0 < cs.upper


def test_one_request_per_caller_at_a_5_percent_canary_is_judged_as_before():
    """Unequal arms with a real difference (1 % -> 4 %), every caller sending one request: no clustering, so the
    verdict, its numbers and its reason are those without the moments."""
    canary = stage("canary-5")
    champion, challenger = agg(7600, 76, fb=(0, 0)), agg(400, 16, fb=(0, 0), role="challenger", version=2)
    plain = decide_stage(canary, champion, challenger, 600)

    def singles(a, errors, requests):
        each = moments_of([1] * errors + [0] * (requests - errors), [1] * requests)
        return a.model_copy(update={"by_caller": {"model_errors": each}})

    by_caller = decide_stage(canary, singles(champion, 76, 7600), singles(challenger, 16, 400), 600)
    assert plain.action == by_caller.action == "rollback"
    assert by_caller.tests["model_error_rate"].design_effect == 1.0
    assert [f.reason for f in plain.findings if f.check == "model_error_rate"] == [
        f.reason for f in by_caller.findings if f.check == "model_error_rate"]


def test_a_lone_caller_on_an_arm_is_named_in_the_reason():
    champion = agg(600, 6, fb=GOOD_FB).model_copy(update={"by_caller": {
        "model_errors": moments_of([1] * 6 + [0] * 54, [10] * 60)}})
    challenger = agg(600, 30, fb=GOOD_FB, role="challenger", version=2).model_copy(update={"by_caller": {
        "model_errors": moments_of([30], [600])}})
    verdict = decide_stage(stage("canary-50"), champion, challenger, 600)
    (reason,) = [f.reason for f in verdict.findings if f.check == "model_error_rate"]
    assert "one caller on the challenger arm: read as independent requests" in reason


def test_constant_latencies_on_both_arms_are_judged_not_divided_by_zero(tmp_path):
    canary = next(s for s in plan_with_latency_mean(tmp_path).stages if s.name == "canary-50")
    steady = moments_of([1000.0] * 40, [10] * 40)  # 40 callers, 10 answers of 100 ms each
    champion = agg(400, lat=(100.0, 0.0)).model_copy(update={"by_caller": {"latency_sum_ms": steady}})
    challenger = agg(400, lat=(100.0, 0.0), role="challenger", version=2).model_copy(
        update={"by_caller": {"latency_sum_ms": steady}})
    verdict = decide_stage(canary, champion, challenger, 60)
    (finding,) = [f for f in verdict.findings if f.check == "latency_mean_ms"]
    assert finding.verdict is Verdict.PASS and "design effect" not in finding.reason


def test_too_few_callers_on_an_arm_holds_and_says_how_many():
    """The shipped plan needs 30 callers an arm: 600 requests from 12 challenger callers are not enough to see
    their spread, however clean the requests look."""
    canary = stage("canary-50")
    assert canary.min_callers_per_arm == 30
    few = decide_stage(canary, agg(2000, 20, fb=(2000, 1800), users=14), agg(2000, 20, fb=(2000, 1810), users=12),
                       600)
    assert (few.verdict, few.action) == (Verdict.INCONCLUSIVE, "hold"), few.reasons()
    (finding,) = [f for f in few.findings if f.check == "minimum callers"]
    assert (finding.verdict, finding.observed, finding.threshold) == (Verdict.INCONCLUSIVE, 12.0, 30.0)
    assert "12 distinct callers on the smaller arm (champion 14, challenger 12), need 30" in finding.reason
    enough = decide_stage(canary, agg(2000, 20, fb=(2000, 1800), users=32), agg(2000, 20, fb=(2000, 1810), users=30),
                          600)
    assert enough.action == "advance", enough.reasons()
    # At the stage's maximum duration, too few callers is what any INCONCLUSIVE stage is: the plan's choice.
    assert decide_stage(canary, agg(2000, 20, fb=(2000, 1800), users=14), agg(2000, 20, fb=(2000, 1810), users=12),
                        3600).action == "pause"


def test_callers_not_counted_are_not_a_pass_when_the_plan_needs_them():
    uncounted = agg(2000, 20, fb=(2000, 1810)).model_copy(update={"users": None})
    v = decide_stage(stage("canary-50"), agg(2000, 20, fb=(2000, 1800)), uncounted, 600)
    assert v.action == "hold"
    assert any(f.check == "minimum callers" and "not counted" in f.reason for f in v.findings), v.reasons()
    # A stage without a minimum (the default, 1) does not look at callers at all.
    assert "minimum callers" not in [f.check for f in decide_stage(MODEL_ERRORS_ONLY, agg(600, 3), uncounted,
                                                                    60).findings]


def test_a_minimum_of_callers_below_one_is_refused_by_name():
    with pytest.raises(ValueError, match="min_callers_per_arm"):
        Stage(name="canary", share=50, min_requests_per_arm=100, min_callers_per_arm=0, max_duration_s=60,
              guardrails=[{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.04}])


def test_a_pass_waits_for_enough_callers_in_the_tests_own_sums():
    """Plenty of callers on each arm (users), but the feedback of only 12 of them on the challenger: the feedback
    test's spread between callers is barely seen, so its "ruled out" holds the stage instead of passing it."""
    canary = stage("canary-50")
    def with_feedback_callers(a, k):
        per = a.feedback_count // k
        return a.model_copy(update={"users": 100, "by_caller": {"feedback_success": moments_of(
            [a.feedback_success / k] * k, [per] * k)}})
    champion = with_feedback_callers(agg(2000, 20, fb=(2000, 1800)), 40)
    few = decide_stage(canary, champion, with_feedback_callers(agg(2000, 20, fb=(2000, 1810), role="challenger",
                                                                   version=2), 12), 600)
    (finding,) = [f for f in few.findings if f.check == "feedback_success_rate"]
    assert finding.verdict is Verdict.INCONCLUSIVE and few.action == "hold", few.reasons()
    assert "ruled out, but on 12 callers on the smaller arm: the plan needs 30 before a pass" in finding.reason
    enough = decide_stage(canary, champion, with_feedback_callers(agg(2000, 20, fb=(2000, 1810), role="challenger",
                                                                      version=2), 40), 600)
    assert enough.action == "advance", enough.reasons()
