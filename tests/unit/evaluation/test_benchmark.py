"""The harness logic, with a scripted generator standing in for the model (the real backend is tested in
tests/unit/serving and end to end in tests/flows)."""

from dataclasses import dataclass

import pytest

from evaluation.benchmark import GoldenSet, StaleAnswers, run_benchmark, spot_check_batches
from lifecycle.data import Pair
from lifecycle.gate import BenchmarkRule, GatePolicy, evaluate_gate
from lifecycle.verdict import Verdict


@dataclass
class Gen:
    completion: str
    completion_tokens: int
    latency_ms: float


class Scripted:
    """Adapter 'good' answers right; None (the base) answers right on even items only; 'junk' is malformed."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, adapters, max_batch=64):
        self.calls.append((adapters[0], len(prompts)))
        out = []
        for prompt in prompts:
            index = int(prompt.split()[-1])
            answer = {"good": f"label{index % 3}", None: f"label{index % 3}" if index % 2 == 0 else "label9",
                      "junk": "???"}[adapters[0]]
            out.append(Gen(answer, 2, 10.0 * len(prompts)))
        return out


GOLDEN = GoldenSet.of("g", [Pair(prompt=f"item {i}", completion=f"label{i % 3}") for i in range(10)])
ALLOWED = {"label0", "label1", "label2", "label9"}


def test_versions_answer_the_same_items_in_alternating_order():
    backend = Scripted()
    reports = run_benchmark(backend, {"m:v1": None, "m:v2": "good"}, GOLDEN, ALLOWED, batch_size=4)
    champ, chall = reports["m:v1"], reports["m:v2"]
    assert [i.item_id for i in champ.items] == [i.item_id for i in chall.items]
    assert champ.exact_match == pytest.approx(0.5) and chall.exact_match == 1.0
    # one untimed warm-up row each, then batches alternating who goes first
    assert backend.calls[:2] == [(None, 1), ("good", 1)]
    assert [c[0] for c in backend.calls[2:]] == [None, "good", "good", None, None, "good"]
    assert chall.per_route_accuracy == {"label0": 1.0, "label1": 1.0, "label2": 1.0}
    assert champ.malformed_rate == 0.0
    assert chall.benchmark_sha256 == GOLDEN.sha256 and chall.n_items == 10


def test_latency_percentiles_and_tokens_per_second():
    report = run_benchmark(Scripted(), {"v": "good"}, GOLDEN, ALLOWED, batch_size=4)["v"]
    # batches of 4, 4, 2 items: each item waits its batch's time (40, 40, 20 ms)
    assert report.latency_p50_ms == pytest.approx(40.0)
    assert report.latency_p99_ms == pytest.approx(40.0)
    assert report.tokens_per_s == pytest.approx(20 / 0.1)  # 20 tokens in 100 ms


def test_answers_outside_the_allowed_set_are_malformed():
    report = run_benchmark(Scripted(), {"v": "junk"}, GOLDEN, ALLOWED)["v"]
    assert report.malformed_rate == 1.0 and report.exact_match == 0.0


def test_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one version"):
        run_benchmark(Scripted(), {}, GOLDEN, ALLOWED)
    with pytest.raises(ValueError, match="is empty"):
        GoldenSet.of("empty", [])


def test_known_answers_are_reused_and_only_every_nth_batch_is_answered_again():
    first = run_benchmark(Scripted(), {"m:v1": None}, GOLDEN, ALLOWED, batch_size=2)["m:v1"]
    backend = Scripted()
    reports = run_benchmark(backend, {"m:v1": None, "m:v2": "good"}, GOLDEN, ALLOWED, batch_size=2,
                            known={"m:v1": first}, spot_check_every=2, min_timed_batches=3)
    champion_batches = [n for adapter, n in backend.calls[2:] if adapter is None]
    assert champion_batches == [2, 2, 2]  # batches 0, 2 and 4 of five: the spot check
    assert [c[0] for c in backend.calls[2:]].count("good") == 5  # the challenger answers everything
    champ = reports["m:v1"]
    assert [(i.item_id, i.predicted) for i in champ.items] == [(i.item_id, i.predicted) for i in first.items]
    # an item's latency is its batch's time where this run timed the batch, else 0 (batches 1 and 3 were not)
    for report in reports.values():
        assert [i.latency_ms for i in report.items] == [20.0, 20.0, 0.0, 0.0, 20.0, 20.0, 0.0, 0.0, 20.0, 20.0]
    assert champ.exact_match == first.exact_match == pytest.approx(0.5)
    # latency from this run's spot-check batches only (2 items each: 20 ms), for both: the comparison stays paired
    assert champ.latency_p95_ms == pytest.approx(20.0) and champ.tokens_per_s == pytest.approx(12 / 0.06)
    chall = reports["m:v2"]
    assert chall.exact_match == 1.0 and len(chall.items) == 10
    assert chall.tokens_per_s == pytest.approx(12 / 0.06) and chall.latency_p50_ms == pytest.approx(20.0)


def test_a_spot_check_that_disagrees_with_the_stored_answers_raises():
    stored = run_benchmark(Scripted(), {"m:v1": "good"}, GOLDEN, ALLOWED, batch_size=4)["m:v1"]
    with pytest.raises(StaleAnswers, match="stored answer"):
        run_benchmark(Scripted(), {"m:v1": None}, GOLDEN, ALLOWED, batch_size=4, known={"m:v1": stored})


def test_stored_answers_of_another_golden_set_are_refused():
    stored = run_benchmark(Scripted(), {"m:v1": None}, GOLDEN, ALLOWED)["m:v1"]
    other = GoldenSet.of("g", [Pair(prompt=f"item {i}", completion=f"label{i % 3}") for i in range(11)])
    with pytest.raises(StaleAnswers, match="another g"):
        run_benchmark(Scripted(), {"m:v1": None}, other, ALLOWED, known={"m:v1": stored})


def test_stored_answers_are_judged_against_this_runs_allowed_set():
    stored = run_benchmark(Scripted(), {"m:v1": None}, GOLDEN, ALLOWED)["m:v1"]
    report = run_benchmark(Scripted(), {"m:v1": None}, GOLDEN, {"label0", "label1", "label2"}, batch_size=2,
                           known={"m:v1": stored}, spot_check_every=100)["m:v1"]
    assert report.malformed_rate == pytest.approx(0.5)  # label9 is no longer an allowed answer


@pytest.mark.parametrize(("n_batches", "every", "minimum", "timed"), [
    (8, 4, 5, {0, 1, 3, 5, 7}),        # a 500-item golden set in batches of 64: every 4th would be 2 batches
    (16, 4, 5, {0, 3, 7, 11, 15}),     # 1,000 items: every 4th would be 4
    (16, 2, 5, {0, 2, 4, 6, 8, 10, 12, 14}),  # enough already: every 2nd
    (3, 4, 5, {0, 1, 2}),              # fewer batches than the minimum: all of them
    (1, 4, 5, {0}),
])
def test_spot_check_batches_are_every_nth_or_at_least_the_minimum(n_batches, every, minimum, timed):
    assert spot_check_batches(n_batches, every, minimum) == timed


def test_the_spot_check_times_at_least_the_minimum_number_of_batches():
    first = run_benchmark(Scripted(), {"m:v1": None}, GOLDEN, ALLOWED, batch_size=1)["m:v1"]
    backend = Scripted()
    reports = run_benchmark(backend, {"m:v1": None, "m:v2": "good"}, GOLDEN, ALLOWED, batch_size=1,
                            known={"m:v1": first}, spot_check_every=4)
    champion_batches = [c for c in backend.calls[2:] if c[0] is None]
    assert len(champion_batches) == 5  # every 4th of 10 would be 3 (0, 4, 8); the minimum is 5
    for report in reports.values():
        timed = [int(i.item_id.split(":")[1]) for i in report.items if i.latency_ms > 0]
        assert timed == [0, 2, 4, 6, 9]


class Bursty(Scripted):
    """Every call a little slower than the last (distinct batch timings); ``slow`` times the challenger ('good')
    on every batch; ``burst`` (a call number) is one slow call, as a burst of load on a shared machine."""

    def __init__(self, slow: float = 1.0, burst: int | None = None):
        super().__init__()
        self.slow, self.burst = slow, burst

    def generate(self, prompts, adapters, max_batch=64):
        call = len(self.calls)
        gens = super().generate(prompts, adapters, max_batch)
        ms = (10.0 + 0.1 * call) * (self.slow if adapters[0] == "good" else 1.0) * (20 if call == self.burst else 1)
        return [Gen(g.completion, g.completion_tokens, ms) for g in gens]


GATE = GatePolicy(rules=[BenchmarkRule(benchmark="g", kind="non_inferior", margin=0.03)], min_items=1)


def test_a_burst_in_one_of_the_few_batches_a_retrain_times_does_not_fail_the_gate():
    first = run_benchmark(Scripted(), {"m:v1": None}, GOLDEN, ALLOWED, batch_size=4)["m:v1"]
    # calls: two warm-up rows, then batch 0 (champion, challenger): the challenger's batch 0 is the 4th call
    scores = run_benchmark(Bursty(burst=3), {"m:v1": None, "m:v2": "good"}, GOLDEN, ALLOWED, batch_size=4,
                           known={"m:v1": first})
    decision = evaluate_gate([scores["m:v1"]], [scores["m:v2"]], GATE)
    latency = next(f for f in decision.findings if "latency" in f.check)
    assert scores["m:v2"].latency_p95_ms > 1.5 * scores["m:v1"].latency_p95_ms  # the burst is the p95
    assert latency.verdict is Verdict.INCONCLUSIVE and decision.verdict is Verdict.PASS, decision.reasons()


def test_a_challenger_slower_on_every_batch_still_fails_the_gate_after_a_spot_check_run():
    golden = GoldenSet.of("g", [Pair(prompt=f"item {i}", completion=f"label{i % 3}") for i in range(20)])
    first = run_benchmark(Scripted(), {"m:v1": None}, golden, ALLOWED, batch_size=2)["m:v1"]
    scores = run_benchmark(Bursty(slow=2.0), {"m:v1": None, "m:v2": "good"}, golden, ALLOWED, batch_size=2,
                           known={"m:v1": first})
    decision = evaluate_gate([scores["m:v1"]], [scores["m:v2"]], GATE)
    latency = next(f for f in decision.findings if "latency" in f.check)
    assert latency.verdict is Verdict.FAIL and decision.verdict is Verdict.FAIL, decision.reasons()
    assert "5 paired batches" in latency.reason
