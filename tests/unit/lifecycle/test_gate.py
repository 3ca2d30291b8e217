import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.gate import BenchmarkRule, GatePolicy, evaluate_gate, paired_bootstrap, timed_batches
from lifecycle.records import EvalReport, ItemResult
from lifecycle.verdict import Verdict


def paired(n: int, gain: int, loss: int) -> tuple[np.ndarray, np.ndarray]:
    """Champion right on the first half; challenger gains on the second half and loses on the first."""
    champ = np.zeros(n, bool)
    champ[: n // 2] = True
    chall = champ.copy()
    chall[n // 2 : n // 2 + gain] = True
    chall[:loss] = False
    return champ, chall


# The worked examples of paired_bootstrap's docstring.
@pytest.mark.parametrize(
    ("n", "gain", "loss", "mean", "lower", "upper"),
    [
        (400, 40, 0, 0.100, 0.0725, 0.1300),
        (400, 20, 20, 0.000, -0.0325, 0.0300),
        (200, 2, 30, -0.140, -0.1950, -0.0900),
    ],
)
def test_paired_bootstrap_worked_examples(n, gain, loss, mean, lower, upper):
    ci = paired_bootstrap(*paired(n, gain, loss), seed=0, n_resamples=2000)
    assert ci.mean == pytest.approx(mean)
    assert ci.lower == pytest.approx(lower, abs=1e-9)
    assert ci.upper == pytest.approx(upper, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=120))
def test_interval_contains_the_mean_and_is_ordered(pairs):
    champ = np.array([a for a, _ in pairs])
    chall = np.array([b for _, b in pairs])
    ci = paired_bootstrap(champ, chall, n_resamples=300)
    assert -1 <= ci.lower <= ci.upper <= 1
    assert ci.lower - 1e-12 <= ci.mean <= ci.upper + 1e-12 or ci.n < 5


def test_identical_answers_give_a_zero_width_interval():
    champ, _ = paired(100, 0, 0)
    ci = paired_bootstrap(champ, champ.copy())
    assert (ci.lower, ci.mean, ci.upper) == (0.0, 0.0, 0.0)


def test_unequal_arrays_are_refused():
    with pytest.raises(ValueError, match="equal 1-D arrays"):
        paired_bootstrap(np.ones(3), np.ones(4))


def report(benchmark: str, correct: np.ndarray, *, malformed: float = 0.0, p95: float = 10.0,
           timed: set[int] | None = None, batch: int = 10) -> EvalReport:
    """Items in batches of ``batch``, each row with its batch's time (distinct per batch, at most ``p95``) when the
    batch is among ``timed`` (default: all), else 0 (not timed in the run), as evaluation.benchmark writes them."""
    def latency(i: int) -> float:
        return p95 - 0.01 * (i // batch) if timed is None or i // batch in timed else 0.0

    items = [ItemResult(item_id=f"{benchmark}-{i}", expected="a", predicted="a" if c else "b", correct=bool(c),
                        latency_ms=latency(i), malformed=False) for i, c in enumerate(correct)]
    return EvalReport(version="m:v1", benchmark=benchmark, benchmark_sha256="x", n_items=len(items),
                      exact_match=float(np.mean(correct)) if len(correct) else 0.0, per_route_accuracy={},
                      malformed_rate=malformed,
                      latency_p50_ms=p95, latency_p95_ms=p95, latency_p99_ms=p95, tokens_per_s=1.0,
                      peak_memory_mb=1.0, items=items)


POLICY = GatePolicy(rules=[
    BenchmarkRule(benchmark="before", kind="non_inferior", margin=0.03),
    BenchmarkRule(benchmark="drifted", kind="superior", margin=0.0),
])


def decide(before: tuple, drifted: tuple, **chall_kw):
    (bc, bh), (dc, dh) = paired(*before), paired(*drifted)
    champion = [report("before", bc), report("drifted", dc)]
    challenger = [report("before", bh, **chall_kw), report("drifted", dh, **chall_kw)]
    return evaluate_gate(champion, challenger, POLICY)


# Table of gate decisions: (before: n, gain, loss), (drifted: n, gain, loss), extra, verdict, failing check.
@pytest.mark.parametrize(
    ("before", "drifted", "extra", "verdict", "check"),
    [
        ((300, 3, 3), (300, 120, 0), {}, Verdict.PASS, None),               # replay kept the old intents
        ((300, 0, 130), (300, 140, 0), {}, Verdict.FAIL, "before"),         # forgot the old intents
        ((300, 5, 12), (300, 120, 0), {}, Verdict.INCONCLUSIVE, "before"),  # -2.3 points: straddles -3
        ((300, 3, 3), (300, 0, 10), {}, Verdict.FAIL, "drifted"),           # worse where it should gain
        ((300, 3, 3), (300, 4, 4), {}, Verdict.INCONCLUSIVE, "drifted"),    # no gain the data can see
        ((300, 3, 3), (300, 120, 0), {"malformed": 0.2}, Verdict.FAIL, "malformed"),
        ((300, 3, 3), (300, 120, 0), {"p95": 100.0}, Verdict.FAIL, "latency"),
        ((20, 0, 0), (20, 10, 0), {}, Verdict.INCONCLUSIVE, "paired items"),  # too few items
    ],
)
def test_gate_decisions(before, drifted, extra, verdict, check):
    decision = decide(before, drifted, **extra)
    assert decision.verdict is verdict
    assert decision.passed is (verdict is Verdict.PASS)
    if check:
        worst = [f for f in decision.findings if f.verdict is verdict]
        assert any(check in f.check or check in f.reason for f in worst), decision.reasons()
    assert all(r.startswith("[") for r in decision.reasons())


def test_no_items_at_all_is_inconclusive_not_a_crash():
    empty = report("before", np.zeros(0, bool))
    policy = GatePolicy(rules=[BenchmarkRule(benchmark="before", kind="non_inferior", margin=0.03)])
    decision = evaluate_gate([empty], [empty], policy)
    assert decision.verdict is Verdict.INCONCLUSIVE and "only 0 paired items" in decision.reasons()[0]


def test_gate_refuses_reports_on_different_items():
    champ, chall = paired(100, 10, 0)
    other = report("before", chall).model_copy(update={"items": [
        i.model_copy(update={"item_id": "z" + i.item_id}) for i in report("before", chall).items]})
    with pytest.raises(ValueError, match="different items"):
        evaluate_gate([report("before", champ)], [other],
                      GatePolicy(rules=[BenchmarkRule(benchmark="before", kind="non_inferior", margin=0.03)]))


def test_missing_benchmark_fails():
    champ, chall = paired(100, 10, 0)
    decision = evaluate_gate([report("before", champ)], [report("before", chall)], POLICY)
    assert decision.verdict is Verdict.FAIL
    assert any("not scored" in f.reason for f in decision.findings)


def test_policy_refuses_duplicate_benchmarks():
    with pytest.raises(ValueError, match="names a benchmark twice"):
        GatePolicy(rules=[BenchmarkRule(benchmark="a", kind="superior", margin=0),
                          BenchmarkRule(benchmark="a", kind="non_inferior", margin=0.1)])


# The latency budget on too few timed batches: the retrain's benchmark with the champion's answers stored timed
# every 4th batch only, 2 of a 500-item golden set's 8, and one burst of load in the challenger's batch failed it.
BEFORE_ONLY = GatePolicy(rules=[BenchmarkRule(benchmark="before", kind="non_inferior", margin=0.03)])


def latency_finding(decision):
    return next(f for f in decision.findings if f.check == "before: latency p95")


def test_a_slow_batch_among_too_few_timed_ones_does_not_fail_the_gate():
    champ, chall = paired(300, 3, 3)  # accuracy: clearly non-inferior
    decision = evaluate_gate([report("before", champ, timed={0, 4})],
                             [report("before", chall, timed={0, 4}, p95=100.0)], BEFORE_ONLY)
    finding = latency_finding(decision)
    assert finding.verdict is Verdict.INCONCLUSIVE and "only 2 batches" in finding.reason, decision.reasons()
    assert decision.verdict is Verdict.PASS  # advisory: listed, but it does not hold the decision
    assert any("latency p95" in r and "advisory" in r for r in decision.reasons())


def test_a_truly_slower_challenger_still_fails_with_enough_timed_batches():
    champ, chall = paired(300, 3, 3)
    timed = {0, 6, 12, 18, 24, 29}
    decision = evaluate_gate([report("before", champ, timed=timed)],
                             [report("before", chall, timed=timed, p95=20.0)], BEFORE_ONLY)
    assert latency_finding(decision).verdict is Verdict.FAIL and decision.verdict is Verdict.FAIL
    assert "6 paired batches" in latency_finding(decision).reason


def test_a_within_budget_challenger_passes_with_enough_timed_batches():
    champ, chall = paired(300, 3, 3)
    decision = evaluate_gate([report("before", champ)], [report("before", chall, p95=12.0)], BEFORE_ONLY)
    assert latency_finding(decision).verdict is Verdict.PASS and decision.verdict is Verdict.PASS


def test_min_latency_batches_is_a_setting():
    champ, chall = paired(300, 3, 3)
    policy = BEFORE_ONLY.model_copy(update={"min_latency_batches": 2})
    decision = evaluate_gate([report("before", champ, timed={0, 4})],
                             [report("before", chall, timed={0, 4}, p95=100.0)], policy)
    assert decision.verdict is Verdict.FAIL
    assert GatePolicy(rules=BEFORE_ONLY.rules).min_latency_batches == 5


def test_timed_batches_counts_the_batches_both_versions_were_timed_on():
    champ, chall = paired(100, 0, 0)
    assert timed_batches(report("before", champ, timed={0, 2, 4}), report("before", chall)) == 3
    assert timed_batches(report("before", champ), report("before", chall)) == 10
    assert timed_batches(report("before", champ, timed=set()), report("before", chall)) == 0


def test_the_shipped_gate_configs_name_the_setting():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[3] / "configs"
    for name in ("gate.yaml", "gate-drifted-only.yaml"):
        assert GatePolicy.model_validate(yaml.safe_load((root / name).read_text())).min_latency_batches == 5
