"""Bootstrap tasks: the task's data worlds, the offline base model (cached), version 1 as champion."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from lifecycle.audit import canonical_json
from lifecycle.config import load_yaml_config
from lifecycle.data import read_pairs
from lifecycle.prompting import format_by_identity
from lifecycle.records import BaseModelRef, DatasetFingerprint, Lineage, ModelVersion
from lifecycle.settings import get_settings, project_root
from lifecycle.status import VersionStatus
from lifecycle.task import TaskSpec
from serving.backend import InProcessBackend
from tasks.connect import open_registry
from tasks.evaluation import score_on
from training.base_model import BaseModelConfig, BaseModelInfo, build_base_model
from training.env_info import provenance
from training.task_data import GOLDEN_BEFORE, GOLDEN_DRIFTED, TaskData, ensure_task_data

BUILD_INFO = "build_info.json"


@task(name="current-champion", cache_policy=NO_CACHE)
def current_champion(model: str) -> str | None:
    with open_registry() as registry:
        number = registry.store.get_alias(model, "champion")
    return None if number is None else f"{model}:v{number}"


@task(name="prepare-task-data", cache_policy=NO_CACHE)
def prepare_task_data(spec: TaskSpec) -> TaskData:
    return ensure_task_data(spec, get_settings().home / "data")


@task(name="build-base-model", cache_policy=NO_CACHE)
def build_base(data: TaskData, config_path: Path) -> tuple[Path, BaseModelInfo]:
    """Build once per (config, corpus): the result is cached (SLM_CACHE_DIR, default SLM_HOME/cache) and reused.

    The build report travels inside the folder (``build_info.json``), so it is part of the base artifact.
    """
    config = load_yaml_config(BaseModelConfig, config_path)
    key = hashlib.sha256(canonical_json([config.model_dump(mode="json"),
                                         data.before_train.fingerprint.sha256]).encode()).hexdigest()[:16]
    cached = get_settings().cache / f"base-{key}"
    if (cached / BUILD_INFO).is_file():
        return cached, BaseModelInfo.model_validate_json((cached / BUILD_INFO).read_text())
    shutil.rmtree(cached, ignore_errors=True)
    info = build_base_model(read_pairs(data.before_train.path), cached, config,
                            threads=get_settings().torch_threads)
    (cached / BUILD_INFO).write_text(info.model_dump_json(indent=2))  # last: marks the cache entry complete
    return cached, info


@task(name="register-champion-v1", cache_policy=NO_CACHE)
def register_v1(model: str, spec: TaskSpec, data: TaskData, base_dir: Path, info: BaseModelInfo,
                config_path: Path, batch_size: int = 64) -> ModelVersion:
    config = load_yaml_config(BaseModelConfig, config_path)
    golden = {GOLDEN_BEFORE: data.golden_before.path, GOLDEN_DRIFTED: data.golden_drifted.path}
    with open_registry() as registry:
        uri, revision = registry.artifacts.put_base(spec.name, base_dir)
        backend = InProcessBackend(registry.artifacts.base_dir(uri), format_by_identity(config.prompt_format),
                                   threads=get_settings().torch_threads)
        label = f"{model}:base"
        evals = score_on(backend, {label: None}, golden, set(spec.labels), batch_size)[label]
        datasets = [registry.snapshot_dataset("train", read_pairs(data.before_train.path), str(data.before_train.path)),
                    *(registry.snapshot_dataset(name, read_pairs(path), str(path)) for name, path in golden.items())]
        lineage = _base_lineage(BaseModelRef(model_id=uri, revision=revision), datasets, config, info)
        version = registry.register(model, staged=None, status=VersionStatus.CANDIDATE, actor="bootstrap",
                                    reason="bootstrap: the offline base model; no champion to gate against",
                                    lineage=lineage, evals=evals, task=spec.name)
        registry.store.promote(model, version.number, actor="bootstrap", reason="first champion",
                               expected_champion=None)
        registry.sync_champion(model, actor="bootstrap")  # a Hub store's `champion` branch, from the start
    create_markdown_artifact(key="bootstrap", description="version 1", markdown="\n".join(
        [f"**{version.ref}** registered and promoted to champion", "", "| golden set | exact match |", "|---|---|"]
        + [f"| {r.benchmark} | {r.exact_match:.3f} |" for r in evals]))
    return version


def _base_lineage(base: BaseModelRef, datasets: list[DatasetFingerprint], config: BaseModelConfig,
                  info: BaseModelInfo) -> Lineage:
    return Lineage(base_model=base, datasets=datasets, recipe=config.model_dump(mode="json"),
                   prompt_format=config.prompt_format, **provenance(project_root()), wall_time_s=info.wall_seconds,
                   tokens_per_s=info.tokens_per_s, train_loss=info.train_loss, trigger="bootstrap")
