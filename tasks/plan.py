"""Resolve one retrain run: configs, the champion it must beat, and where everything lives."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lifecycle.config import RetrainConfig, RetrainParams, load_yaml_config
from lifecycle.gate import GatePolicy
from lifecycle.records import Frozen, ModelVersion
from lifecycle.settings import get_settings, project_root
from lifecycle.task import TaskSpec, load_task
from tasks.connect import open_registry


class RetrainPlan(Frozen):
    config: RetrainConfig
    params: RetrainParams
    task: TaskSpec
    gate: GatePolicy
    champion: ModelVersion
    data_source: str
    golden: dict[str, Path]
    run_dir: Path


def data_dir() -> Path:
    return get_settings().home / "data"


@task(name="plan-retrain", cache_policy=NO_CACHE)
def plan_retrain(params: RetrainParams, run_id: str) -> RetrainPlan:
    root = project_root()
    config = params.resolve(root)
    gate = load_yaml_config(GatePolicy, config.gate)
    missing = sorted({r.benchmark for r in gate.rules} - set(config.benchmarks))
    if missing:
        raise ValueError(f"gate policy {config.gate} has rules for {missing}, which the run does not benchmark "
                         f"({config.benchmarks}); add them to `benchmarks` or drop the rules")
    golden = {name: data_dir() / f"{name}.jsonl" for name in config.benchmarks}
    absent = [str(p) for p in golden.values() if not p.is_file()]
    if absent:
        raise FileNotFoundError(f"golden sets missing: {absent}; run `slm bootstrap` first")
    with open_registry() as registry:
        champion = registry.get(f"{config.model}:champion")
    return RetrainPlan(config=config, params=params, task=load_task(config.task, root), gate=gate,
                       champion=champion, golden=golden, run_dir=get_settings().home / "runs" / run_id,
                       data_source=config.data or str(data_dir() / "drifted-labelled.jsonl"))
