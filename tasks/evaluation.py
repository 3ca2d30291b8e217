"""Benchmark task: champion and challenger answer the same golden items in one run."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from data_checks.readers import read_jsonl
from evaluation.benchmark import GoldenSet, run_benchmark
from lifecycle.records import EvalReport, Frozen, ModelVersion
from lifecycle.settings import get_settings
from serving.loader import load_version, open_backend
from tasks.connect import open_registry
from tasks.plan import RetrainPlan

CHALLENGER = "challenger"


class Scores(Frozen):
    champion: list[EvalReport]
    challenger: list[EvalReport]


def score_on(backend, versions: dict[str, str | None], golden: dict[str, Path], allowed: set[str],
             batch_size: int = 64) -> dict[str, list[EvalReport]]:
    """Every version (ref -> adapter name) on every golden set, same items in the same run."""
    per_set = [run_benchmark(backend, versions, GoldenSet.of(name, read_jsonl(path)), allowed,
                             batch_size=batch_size) for name, path in golden.items()]
    return {ref: [reports[ref] for reports in per_set] for ref in versions}


def score_versions(champion: ModelVersion, challenger_adapter: Path, golden: dict[str, Path],
                   allowed: set[str], batch_size: int = 64) -> Scores:
    """Load the champion from the registry (verified) and the staged challenger on one backend; score both."""
    with open_registry() as registry:
        backend = open_backend(registry, champion, threads=get_settings().torch_threads)
        versions = {champion.ref: load_version(backend, registry, champion), CHALLENGER: CHALLENGER}
    backend.load_adapter(CHALLENGER, challenger_adapter)
    reports = score_on(backend, versions, golden, allowed, batch_size)
    return Scores(champion=reports[champion.ref], challenger=reports[CHALLENGER])


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
                            plan.config.benchmark_batch_size)
    publish_scores_table(scores)
    return scores
