"""The benchmark harness: versions answer a golden set through the in-process backend, side by side.

Champion and challenger answer the SAME items in the same run, batch by batch and in alternating order,
so machine noise lands on both. The generation code is the serving backend itself: what is benchmarked
is what is served.

Per version and golden set: exact match (and per-route accuracy), the malformed-output rate (answers
outside the task's allowed set), latency percentiles per request (a request's latency is the wall time
of the batch it rode in, which is what a caller of a batched server waits), generated tokens per second
and the process's peak resident memory (or CUDA peak on a GPU).

A version whose answers are already known (``known``: its stored report on this golden set, see
``evaluation.answers``) answers only a spot-check sample, every ``spot_check_every``-th batch — or, where that
is fewer than ``min_timed_batches`` (``lifecycle.gate.MIN_LATENCY_BATCHES``), that many batches spread evenly
from the first to the last (all of them in a shorter golden set): those fresh answers must equal the stored ones
(else :class:`StaleAnswers`); every other item is the stored answer. The latency and tokens/s of EVERY version
then come from the spot-check batches, which all versions answered back to back in this run: the comparison
stays paired, so a burst of load during a batch only one version answered cannot tip the gate's latency budget,
and there are enough of them for the gate to decide on (a 500-item golden set in batches of 64 is 8 batches:
every 4th would time 2, and one slow batch would be the p95).

An item's ``latency_ms`` is the wall time of its batch when that batch was timed in this run, else 0 (a stored
answer, or a batch outside the spot check): ``lifecycle.gate`` counts the paired timed batches from it.
"""

from __future__ import annotations

import resource
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from lifecycle.data import Pair, fingerprint
from lifecycle.gate import MIN_LATENCY_BATCHES
from lifecycle.records import EvalReport, Frozen, ItemResult


class Generation(Protocol):
    completion: str
    completion_tokens: int
    latency_ms: float


class Generator(Protocol):
    def generate(self, prompts: list[str], adapters: list[str | None], max_batch: int = ...) -> list: ...


class StaleAnswers(RuntimeError):
    """A stored answer differs from what the version answers now: the store does not describe this version."""


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
            peak_mb: float, latencies: list[float]) -> EvalReport:
    by_route: dict[str, list[bool]] = defaultdict(list)
    for item in items:
        by_route[item.expected].append(item.correct)
    return EvalReport(
        version=ref, benchmark=golden.name, benchmark_sha256=golden.sha256, n_items=len(items),
        exact_match=float(np.mean([i.correct for i in items])),
        per_route_accuracy={route: float(np.mean(v)) for route, v in sorted(by_route.items())},
        malformed_rate=float(np.mean([i.malformed for i in items])),
        latency_p50_ms=_percentile(latencies, 50), latency_p95_ms=_percentile(latencies, 95),
        latency_p99_ms=_percentile(latencies, 99), tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        peak_memory_mb=peak_mb, items=items)


def _stored_items(golden: GoldenSet, report: EvalReport, allowed: set[str]) -> dict[str, ItemResult]:
    """The stored report's items by id, after checking that they are this golden set's items; correctness and
    malformedness are judged again here (the allowed set is this run's)."""
    if report.benchmark_sha256 != golden.sha256:
        raise StaleAnswers(f"stored answers are for another {golden.name} ({report.benchmark_sha256[:12]}, "
                           f"now {golden.sha256[:12]})")
    stored = {i.item_id: i for i in report.items}
    for index, pair in enumerate(golden.items):
        item = stored.get(f"{golden.name}:{index:05d}")
        if item is None or item.expected != pair.completion:
            raise StaleAnswers(f"stored answers of {report.version} on {golden.name} lack item {index}")
    return {item_id: item.model_copy(update={"correct": item.predicted == item.expected,
                                             "malformed": item.predicted not in allowed})
            for item_id, item in stored.items()}


def spot_check_batches(n_batches: int, spot_check_every: int, min_timed_batches: int) -> set[int]:
    """The batches a run with reused answers times (and spot-checks): every ``spot_check_every``-th, or where that
    is fewer than ``min_timed_batches``, that many spread evenly from the first batch to the last (all of them
    when there are no more)."""
    every = set(range(0, n_batches, spot_check_every))
    if len(every) >= min_timed_batches:
        return every
    k = min(n_batches, min_timed_batches)
    if k <= 1:
        return set(range(k))
    # Steps of at least one batch (k <= n_batches): the floors are distinct, first 0, last n_batches - 1.
    return {i * (n_batches - 1) // (k - 1) for i in range(k)}


def run_benchmark(
    backend: Generator, versions: dict[str, str | None], golden: GoldenSet, allowed: set[str], *,
    batch_size: int = 64, progress: Callable[[int, int], None] | None = None,
    known: Mapping[str, EvalReport] | None = None, spot_check_every: int = 4,
    min_timed_batches: int = MIN_LATENCY_BATCHES,
) -> dict[str, EvalReport]:
    """Score each version (ref -> adapter name, None for the base) on ``golden``; one report each.

    ``known`` (ref -> stored report) spares those versions all but the batches :func:`spot_check_batches` picks (module
    docstring); a spot-checked answer that differs from the stored one raises :class:`StaleAnswers`.
    """
    if not versions:
        raise ValueError("run_benchmark needs at least one version")
    if spot_check_every < 1:
        raise ValueError(f"spot_check_every must be at least 1, got {spot_check_every}")
    if min_timed_batches < 1:
        raise ValueError(f"min_timed_batches must be at least 1, got {min_timed_batches}")
    refs = list(versions)
    stored = {ref: _stored_items(golden, report, allowed) for ref, report in (known or {}).items() if ref in versions}
    results: dict[str, list[ItemResult]] = {ref: [] for ref in refs}
    latencies: dict[str, list[float]] = {ref: [] for ref in refs}
    tokens = dict.fromkeys(refs, 0)
    seconds = dict.fromkeys(refs, 0.0)
    n = len(golden.items)
    spot_checked = spot_check_batches(-(-n // batch_size), spot_check_every, min_timed_batches) if stored else None
    # One untimed row each first: the first call pays one-off costs (allocations, lazy init) that are not latency.
    for ref in refs:
        backend.generate([golden.items[0].prompt], [versions[ref]], max_batch=1)
    for batch_no, start in enumerate(range(0, n, batch_size)):
        batch = golden.items[start:start + batch_size]
        ids = [f"{golden.name}:{start + offset:05d}" for offset in range(len(batch))]
        # Alternate who goes first, so warm-up and background noise do not always favour one version.
        order = refs[batch_no % len(refs):] + refs[:batch_no % len(refs)]
        timed = spot_checked is None or batch_no in spot_checked  # with reused answers: the paired batches only
        for ref in order:
            if ref in stored and not timed:
                results[ref].extend(stored[ref][item_id].model_copy(update={"latency_ms": 0.0}) for item_id in ids)
                continue
            gens = backend.generate([p.prompt for p in batch], [versions[ref]] * len(batch), max_batch=batch_size)
            if timed:
                seconds[ref] += gens[0].latency_ms / 1000 if gens else 0.0
                tokens[ref] += sum(gen.completion_tokens for gen in gens)
                latencies[ref].extend(gen.latency_ms for gen in gens)
            for item_id, pair, gen in zip(ids, batch, gens, strict=True):
                if ref in stored and stored[ref][item_id].predicted != gen.completion:
                    raise StaleAnswers(f"{ref} now answers {item_id} with {gen.completion!r}, the stored answer "
                                       f"is {stored[ref][item_id].predicted!r}")
                results[ref].append(ItemResult(
                    item_id=item_id, expected=pair.completion, predicted=gen.completion,
                    correct=gen.completion == pair.completion, latency_ms=gen.latency_ms if timed else 0.0,
                    malformed=gen.completion not in allowed))
        if progress:
            progress(min(start + batch_size, n), n)
    peak = _peak_memory_mb(backend)
    return {ref: _report(ref, golden, results[ref], tokens[ref], seconds[ref], peak, latencies[ref]) for ref in refs}
