"""The benchmark harness: versions answer a golden set through the in-process backend, side by side.

Champion and challenger answer the SAME items in the same run, batch by batch and in alternating order,
so machine noise lands on both. The generation code is the serving backend itself: what is benchmarked
is what is served.

Per version and golden set: exact match (and per-route accuracy), the malformed-output rate (answers
outside the task's allowed set), latency percentiles per request (a request's latency is the wall time
of the batch it rode in, which is what a caller of a batched server waits), generated tokens per second
and the process's peak resident memory (or CUDA peak on a GPU).
"""

from __future__ import annotations

import resource
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from lifecycle.data import Pair, fingerprint
from lifecycle.records import EvalReport, Frozen, ItemResult


class Generation(Protocol):
    completion: str
    completion_tokens: int
    latency_ms: float


class Generator(Protocol):
    def generate(self, prompts: list[str], adapters: list[str | None], max_batch: int = ...) -> list: ...


class GoldenSet(Frozen):
    name: str
    sha256: str
    items: list[Pair]

    @classmethod
    def of(cls, name: str, items: list[Pair]) -> GoldenSet:
        if not items:
            raise ValueError(f"golden set {name!r} is empty")
        return cls(name=name, sha256=fingerprint(items), items=items)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0


def _peak_memory_mb(backend: object) -> float:
    peak = getattr(backend, "peak_memory_mb", None)
    if callable(peak):
        return float(peak())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _report(ref: str, golden: GoldenSet, items: list[ItemResult], tokens: int, seconds: float,
            peak_mb: float) -> EvalReport:
    by_route: dict[str, list[bool]] = defaultdict(list)
    for item in items:
        by_route[item.expected].append(item.correct)
    latencies = [i.latency_ms for i in items]
    return EvalReport(
        version=ref, benchmark=golden.name, benchmark_sha256=golden.sha256, n_items=len(items),
        exact_match=float(np.mean([i.correct for i in items])),
        per_route_accuracy={route: float(np.mean(v)) for route, v in sorted(by_route.items())},
        malformed_rate=float(np.mean([i.malformed for i in items])),
        latency_p50_ms=_percentile(latencies, 50), latency_p95_ms=_percentile(latencies, 95),
        latency_p99_ms=_percentile(latencies, 99), tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        peak_memory_mb=peak_mb, items=items)


def run_benchmark(
    backend: Generator, versions: dict[str, str | None], golden: GoldenSet, allowed: set[str], *,
    batch_size: int = 64, progress: Callable[[int, int], None] | None = None,
) -> dict[str, EvalReport]:
    """Score each version (ref -> adapter name, None for the base) on ``golden``; one report each."""
    if not versions:
        raise ValueError("run_benchmark needs at least one version")
    refs = list(versions)
    results: dict[str, list[ItemResult]] = {ref: [] for ref in refs}
    tokens = dict.fromkeys(refs, 0)
    seconds = dict.fromkeys(refs, 0.0)
    n = len(golden.items)
    for batch_no, start in enumerate(range(0, n, batch_size)):
        batch = golden.items[start:start + batch_size]
        # Alternate who goes first, so warm-up and background noise do not always favour one version.
        order = refs[batch_no % len(refs):] + refs[:batch_no % len(refs)]
        for ref in order:
            gens = backend.generate([p.prompt for p in batch], [versions[ref]] * len(batch), max_batch=batch_size)
            seconds[ref] += gens[0].latency_ms / 1000 if gens else 0.0
            for offset, (pair, gen) in enumerate(zip(batch, gens, strict=True)):
                tokens[ref] += gen.completion_tokens
                results[ref].append(ItemResult(
                    item_id=f"{golden.name}:{start + offset:05d}", expected=pair.completion,
                    predicted=gen.completion, correct=gen.completion == pair.completion,
                    latency_ms=gen.latency_ms, malformed=gen.completion not in allowed))
        if progress:
            progress(min(start + batch_size, n), n)
    peak = _peak_memory_mb(backend)
    return {ref: _report(ref, golden, results[ref], tokens[ref], seconds[ref], peak) for ref in refs}
