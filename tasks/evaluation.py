"""Benchmark task: champion and challenger answer the same golden items in one run.

The champion's answers are stored by content (``evaluation.answers``: weights, golden set, decoding) and reused
by the next retrain, which then re-answers only a spot-check sample of them; the challenger's answers are stored
too, so once promoted it is not re-answered either.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from data_checks.readers import read_jsonl
from evaluation.answers import AnswerKey, AnswerStore, decoding_settings
from evaluation.benchmark import GoldenSet, StaleAnswers, run_benchmark
from lifecycle.files import hash_tree
from lifecycle.gate import MIN_LATENCY_BATCHES
from lifecycle.records import EvalReport, Frozen, ModelVersion
from lifecycle.settings import get_settings
from lifecycle.status import RETIRED
from serving.loader import load_version, open_backend
from tasks.connect import open_registry
from tasks.plan import RetrainPlan
from training.artifacts import weights_digest

CHALLENGER = "challenger"
log = logging.getLogger(__name__)


class Scores(Frozen):
    champion: list[EvalReport]
    challenger: list[EvalReport]


class Weights(Frozen):
    """What a version's answers depend on besides the items and the decoding: its base and adapter weights."""

    base: str  # model id@revision
    adapter: str  # weights sha256, "none" for the bare base


def answer_store() -> AnswerStore:
    return AnswerStore(get_settings().home / "benchmarks" / "answers")


def version_weights(version: ModelVersion) -> Weights | None:
    """A registered version's weights (None when its lineage names no base: nothing to key its answers by)."""
    base = version.lineage.base_model if version.lineage else None
    if base is None:
        return None
    try:
        adapter = weights_digest(version.files)
    except ValueError:  # no .safetensors among its files: the base model itself
        adapter = "none"
    return Weights(base=f"{base.model_id}@{base.revision}", adapter=adapter)


def forget_answers(store: AnswerStore, versions: list[ModelVersion], retired: int) -> list[Path]:
    """Drop the stored answers of version ``retired`` (one of ``versions``, a model's whole list), which nothing
    benchmarks again, unless a version not retired has the very same weights: then they are its answers too."""
    by_number = {v.number: v for v in versions}
    weights = version_weights(by_number[retired])
    live = {version_weights(v) for v in versions
            if v.number != retired and v.status not in RETIRED}
    if weights is None or weights in live:
        return []
    return store.drop(weights.base, weights.adapter)


def score_on(backend, versions: dict[str, str | None], golden: dict[str, Path], allowed: set[str],
             batch_size: int = 64, weights: dict[str, Weights] | None = None,
             store: AnswerStore | None = None, min_timed_batches: int = MIN_LATENCY_BATCHES,
             ) -> dict[str, list[EvalReport]]:
    """Every version (ref -> adapter name) on every golden set, same items in the same run.

    With ``store``, versions named in ``weights`` reuse their stored answers (spot-checked, at least
    ``min_timed_batches`` batches: the gate's ``min_latency_batches``) and store fresh ones.
    """
    reports: dict[str, list[EvalReport]] = {ref: [] for ref in versions}
    for name, path in golden.items():
        gold = GoldenSet.of(name, read_jsonl(path))
        keys = {ref: _key(w, gold.name, gold.sha256, len(gold.items), backend.prompt_format)
                for ref, w in (weights or {}).items() if ref in versions}
        known = {ref: report for ref, key in keys.items()
                 if store is not None and (report := store.get(key, ref)) is not None}
        try:
            scored = run_benchmark(backend, versions, gold, allowed, batch_size=batch_size, known=known,
                                   min_timed_batches=min_timed_batches)
        except StaleAnswers as exc:
            log.warning("stored answers not reused, every version answers %s afresh: %s", name, exc)
            known = {}
            scored = run_benchmark(backend, versions, gold, allowed, batch_size=batch_size)
        for ref, report in scored.items():
            reports[ref].append(report)
            if store is not None and ref in keys and ref not in known:
                store.put(keys[ref], report)
    return reports


def _key(weights: Weights, benchmark: str, benchmark_sha256: str, n_items: int, fmt) -> AnswerKey:
    """The store's key of one version's answers on one golden set, decoded as the in-process backend does."""
    return AnswerKey(base=weights.base, adapter=weights.adapter, benchmark=benchmark,
                     benchmark_sha256=benchmark_sha256, n_items=n_items,
                     decoding=decoding_settings(fmt.identity, fmt.stop, fmt.max_new_tokens))


def score_versions(champion: ModelVersion, challenger_adapter: Path, golden: dict[str, Path],
                   allowed: set[str], batch_size: int = 64, min_timed_batches: int = MIN_LATENCY_BATCHES) -> Scores:
    """Load the champion from the registry (verified) and the staged challenger on one backend; score both."""
    with open_registry() as registry:
        backend = open_backend(registry, champion, threads=get_settings().torch_threads)
        versions = {champion.ref: load_version(backend, registry, champion), CHALLENGER: CHALLENGER}
    backend.load_adapter(CHALLENGER, challenger_adapter)
    weights: dict[str, Weights] = {}
    if (champ := version_weights(champion)) is not None:
        # The challenger is trained on the champion's base; its adapter is keyed by its own file hashes.
        weights = {champion.ref: champ,
                   CHALLENGER: Weights(base=champ.base, adapter=weights_digest(hash_tree(challenger_adapter)))}
    reports = score_on(backend, versions, golden, allowed, batch_size, weights, answer_store(), min_timed_batches)
    return Scores(champion=reports[champion.ref], challenger=reports[CHALLENGER])


def remember_answers(version: ModelVersion, store: AnswerStore | None = None) -> int:
    """Store the answers a version was registered with, keyed as the benchmark keys them; the number stored.

    Only for evals this very code generated a moment ago (the bootstrap flow's v1): the key asserts the decoding.
    """
    from lifecycle.prompting import format_by_identity

    weights = version_weights(version)
    if weights is None:
        return 0
    store = store or answer_store()
    fmt = format_by_identity(version.prompt_format)
    for report in version.evals:
        store.put(_key(weights, report.benchmark, report.benchmark_sha256, len(report.items), fmt), report)
    return len(version.evals)


def publish_scores_table(scores: Scores) -> None:
    rows = [{"version": who, "golden set": r.benchmark, "items": r.n_items, "exact match": round(r.exact_match, 4),
             "malformed": round(r.malformed_rate, 4), "p50 ms": round(r.latency_p50_ms, 1),
             "p95 ms": round(r.latency_p95_ms, 1), "p99 ms": round(r.latency_p99_ms, 1),
             "tokens/s": round(r.tokens_per_s), "peak MB": round(r.peak_memory_mb)}
            for who, reports in (("champion", scores.champion), ("challenger", scores.challenger)) for r in reports]
    create_table_artifact(key="benchmark", table=rows, description="champion vs challenger, same items")


@task(name="benchmark", cache_policy=NO_CACHE)
def benchmark(plan: RetrainPlan, adapter_dir: Path) -> Scores:
    scores = score_versions(plan.champion, adapter_dir, plan.golden, set(plan.task.labels),
                            plan.config.benchmark_batch_size, plan.gate.min_latency_batches)
    publish_scores_table(scores)
    return scores


@task(name="remember-answers", cache_policy=NO_CACHE)
def remember_registered_answers(ref: str) -> int:
    """The bootstrap's v1: its golden answers, just generated, stored for the first retrain's benchmark."""
    with open_registry() as registry:
        version = registry.get(ref)
    return remember_answers(version)
