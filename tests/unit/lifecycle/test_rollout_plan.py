from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.config import load_yaml_config
from lifecycle.predictions import VersionAggregate
from lifecycle.rollout_plan import RolloutPlan, Stage, decide_stage
from lifecycle.verdict import Verdict

REPO = Path(__file__).resolve().parents[3]
T0, T1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)


def agg(requests, model_errors=0, *, infra=0, flagged=0, fb=(0, 0), p95=100.0, role="champion", version=1):
    return VersionAggregate(
        model="m", version=version, role=role, requests=requests, served=requests,
        ok=requests - model_errors - infra, model_errors=model_errors, infra_errors=infra, input_errors=0,
        guardrail_flagged=flagged, prompt_tokens=0, completion_tokens=0, latency_p50_ms=p95 / 2 if requests else None,
        latency_p95_ms=p95 if requests else None, latency_p99_ms=p95 if requests else None,
        feedback_count=fb[0], feedback_success=fb[1], window_start=T0, window_end=T1)


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
