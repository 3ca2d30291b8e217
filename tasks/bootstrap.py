"""Bootstrap tasks: the task's data worlds, the base model (built offline and cached, or a pinned Hub model),
version 1 as champion. A Hub dataset named by the task (``hub_dataset``) is downloaded by :func:`resolve_task`."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from lifecycle.audit import canonical_json
from lifecycle.config import load_yaml_config
from lifecycle.data import read_pairs
from lifecycle.hub_refs import parse_pinned
from lifecycle.prompting import format_by_identity
from lifecycle.records import BaseModelRef, DatasetFingerprint, Lineage, ModelVersion
from lifecycle.settings import get_settings, project_root
from lifecycle.status import VersionStatus
from lifecycle.task import TaskSpec, load_task, read_task_config
from registry.hub_models import DATASET_FILES, fetch_snapshot
from serving.backend import InProcessBackend
from tasks.connect import open_registry
from tasks.evaluation import score_on
from training.base_model import BaseModelConfig, BaseModelInfo, build_base_model
from training.env_info import provenance
from training.hub_base import HubBaseInfo, check_base_folder
from training.task_data import GOLDEN_BEFORE, GOLDEN_DRIFTED, TaskData, ensure_task_data

BUILD_INFO = "build_info.json"


@task(name="current-champion", cache_policy=NO_CACHE)
def current_champion(model: str) -> str | None:
    with open_registry() as registry:
        number = registry.store.get_alias(model, "champion")
    return None if number is None else f"{model}:v{number}"


@task(name="resolve-task", cache_policy=NO_CACHE)
def resolve_task(path: Path, root: Path) -> TaskSpec:
    """The task, its Hub dataset (if it names one) downloaded at the pinned commit first."""
    hub = read_task_config(path).hub_source
    return load_task(path, root, hub_snapshot=None if hub is None else fetch_snapshot(hub, DATASET_FILES))


@task(name="prepare-task-data", cache_policy=NO_CACHE)
def prepare_task_data(spec: TaskSpec) -> TaskData:
    return ensure_task_data(spec, get_settings().home / "data")


@task(name="build-base-model", cache_policy=NO_CACHE)
def build_base(data: TaskData, config_path: Path,
               hub_base: str | None = None) -> tuple[Path, BaseModelInfo | HubBaseInfo]:
    """Build once per (config, corpus): the result is cached (SLM_CACHE_DIR, default SLM_HOME/cache) and reused.

    The build report travels inside the folder (``build_info.json``), so it is part of the base artifact.
    With ``hub_base`` (OWNER/NAME@<commit sha>) nothing is built: that snapshot is downloaded into the Hub cache
    and checked (training.hub_base); the config then only gives the prompt format.
    """
    config = load_yaml_config(BaseModelConfig, config_path)
    if hub_base:
        return fetch_hub_base(hub_base, data, config)
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


def warm_base_cache(task_path: Path, base_model_path: Path) -> Path:
    """Build the offline base model for this task and config into the cache now, outside any flow run: what
    :func:`build_base` of the bootstrap flow will then find there. Needs no Prefect server, so the demo starts it
    before its server is up (their start-ups overlap the build); a cached base returns at once. Returns its folder."""
    spec = resolve_task.fn(task_path, project_root())
    return build_base.fn(prepare_task_data.fn(spec), base_model_path)[0]


def fetch_hub_base(hub_base: str, data: TaskData, config: BaseModelConfig) -> tuple[Path, HubBaseInfo]:
    ref = parse_pinned(hub_base)  # refuses a branch or tag before anything is downloaded
    start = time.perf_counter()
    with open_registry() as registry:  # the same path serving and retraining load the base through
        folder = registry.artifacts.base_dir(ref.uri, ref.revision)
    labels = sorted({p.completion for f in data.files.values() for p in read_pairs(f.path)})
    info = check_base_folder(folder, format_by_identity(config.prompt_format), labels, model_id=ref.uri,
                             revision=ref.revision)
    return folder, info.model_copy(update={"wall_seconds": time.perf_counter() - start})


@task(name="register-champion-v1", cache_policy=NO_CACHE)
def register_v1(model: str, spec: TaskSpec, data: TaskData, base_dir: Path, info: BaseModelInfo | HubBaseInfo,
                config_path: Path, batch_size: int = 64) -> ModelVersion:
    config = load_yaml_config(BaseModelConfig, config_path)
    golden = {GOLDEN_BEFORE: data.golden_before.path, GOLDEN_DRIFTED: data.golden_drifted.path}
    hub = isinstance(info, HubBaseInfo)
    with open_registry() as registry:
        # A Hub base stays where it is published: lineage pins the upstream repo and commit, not a copy.
        uri, revision = (info.model_id, info.revision) if hub else registry.artifacts.put_base(spec.name, base_dir)
        backend = InProcessBackend(registry.artifacts.base_dir(uri, revision),
                                   format_by_identity(config.prompt_format), threads=get_settings().torch_threads)
        label = f"{model}:base"
        evals = score_on(backend, {label: None}, golden, set(spec.labels), batch_size)[label]
        datasets = [registry.snapshot_dataset("train", read_pairs(data.before_train.path),
                                              _source(spec, data.before_train.path, "train")),
                    *(registry.snapshot_dataset(name, read_pairs(path), _source(spec, path, name))
                      for name, path in golden.items())]
        base = BaseModelRef(model_id=uri, revision=revision)
        lineage = _hub_lineage(base, datasets, info, config) if hub else _base_lineage(base, datasets, config, info)
        what = f"the Hub base model {uri}@{revision}" if hub else "the offline base model"
        version = registry.register(model, staged=None, status=VersionStatus.CANDIDATE, actor="bootstrap",
                                    reason=f"bootstrap: {what}; no champion to gate against",
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
                   prompt_format=config.prompt_format, **provenance(project_root(), get_settings().torch_threads),
                   wall_time_s=info.wall_seconds, tokens_per_s=info.tokens_per_s, train_loss=info.train_loss,
                   trigger="bootstrap")


def _hub_lineage(base: BaseModelRef, datasets: list[DatasetFingerprint], info: HubBaseInfo,
                 config: BaseModelConfig) -> Lineage:
    recipe = {"hub_base": f"{info.model_id}@{info.revision}", **info.model_dump(mode="json", exclude={"path"})}
    return Lineage(base_model=base, datasets=datasets, recipe=recipe, prompt_format=config.prompt_format,
                   **provenance(project_root(), get_settings().torch_threads), wall_time_s=info.wall_seconds,
                   trigger="bootstrap")


def _source(spec: TaskSpec, path: Path, world: str) -> str:
    """Where a world's rows came from: the pinned Hub dataset (``hf://datasets/OWNER/NAME@SHA#world``) or the file."""
    return f"{spec.data_source}#{world}" if spec.hub_dataset else str(path)
