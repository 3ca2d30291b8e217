"""The harness logic, with a scripted generator standing in for the model (the real backend is tested in
tests/unit/serving and end to end in tests/flows)."""

from dataclasses import dataclass

import pytest

from evaluation.benchmark import GoldenSet, run_benchmark
from lifecycle.data import Pair


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
    assert [c[0] for c in backend.calls] == [None, "good", "good", None, None, "good"]
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
