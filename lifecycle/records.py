"""Typed records that cross every boundary: versions, lineage, data fingerprints, eval reports.

They are plain pydantic models with no behaviour beyond validation, so the registry can store them as
JSON and any package can pass them around without importing anything heavy.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from lifecycle.status import VersionStatus


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetFingerprint(Frozen):
    """What a dataset was, exactly: a content hash over its canonical rows, and where its snapshot lives."""

    name: str = Field(description="role of the data, e.g. 'train', 'golden-before'")
    sha256: str = Field(description="sha256 of the canonical JSONL rows (sorted keys, one row a line)")
    rows: int
    source: str = Field(description="where it was read from: a path or a datasets revision")
    snapshot: str | None = Field(default=None, description="artifact-store path of the stored snapshot")


class BaseModelRef(Frozen):
    """The base model a version builds on: a Hub id or local path, pinned by commit or content sha."""

    model_id: str
    revision: str = Field(description="Hub commit sha, or sha256 of the local weights")


class Lineage(Frozen):
    """Everything needed to say where a version came from and to rebuild it."""

    base_model: BaseModelRef
    parent: str | None = Field(default=None, description="MODEL:vN this adapter continued from, if any")
    datasets: list[DatasetFingerprint] = Field(default_factory=list)
    recipe: dict[str, object] = Field(default_factory=dict, description="full hyperparameters")
    prompt_format: str = Field(description="identity of the prompt template + decoding settings")
    code_commit: str | None = Field(default=None, description="git commit of this repository")
    code_dirty: bool = False
    libraries: dict[str, str] = Field(default_factory=dict)
    hardware: str = ""
    wall_time_s: float = 0.0
    tokens_per_s: float = 0.0
    train_loss: float | None = None
    eval_loss: float | None = None
    trigger: str = Field(default="manual", description="why it was trained: manual, drift event, schedule")


class ItemResult(Frozen):
    """One benchmark item as one version answered it."""

    item_id: str
    expected: str
    predicted: str
    correct: bool
    latency_ms: float
    malformed: bool = Field(description="output not in the task's allowed set")


class EvalReport(Frozen):
    """A version's score on one golden set. Champion and challenger reports of one run share item ids."""

    version: str
    benchmark: str
    benchmark_sha256: str
    n_items: int
    exact_match: float
    per_route_accuracy: dict[str, float]
    malformed_rate: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    tokens_per_s: float
    peak_memory_mb: float
    items: list[ItemResult] = Field(default_factory=list, repr=False)


class ModelVersion(Frozen):
    """A registered version as the registry returns it."""

    model: str
    number: int
    status: VersionStatus
    created_at: datetime
    artifact_uri: str
    prompt_format: str
    reason: str = ""
    lineage: Lineage | None = None
    evals: list[EvalReport] = Field(default_factory=list, repr=False)
    files: dict[str, str] = Field(default_factory=dict, description="artifact file -> sha256")

    @property
    def ref(self) -> str:
        return f"{self.model}:v{self.number}"


class AliasMove(Frozen):
    """One entry of an alias's history: who held it from when, and why it moved."""

    model: str
    alias: str
    version: int | None = Field(description="None when the alias was cleared")
    previous_version: int | None
    moved_at: datetime
    actor: str
    reason: str
