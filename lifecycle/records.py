"""Typed records that cross every boundary: versions, lineage, data fingerprints, eval reports.

They are plain pydantic models with no behaviour beyond validation, so the registry can store them as
JSON and any package can pass them around without importing anything heavy.

Non-finite floats (NaN, ±inf) have no JSON text, so the records the registry stores (:class:`Lineage`,
:class:`EvalReport`, :class:`ItemResult`) settle them here, once, at validation: an optional measurement that is
not finite is not known and becomes None (a diverged run's ``train_loss``: the version can still be registered,
as rejected, with what is known); a required one is refused, naming the field — before the registry publishes
anything, since it validates what it is given again (:func:`storable`).
"""

from __future__ import annotations

import math
from datetime import datetime
from numbers import Real
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lifecycle.status import VersionStatus


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Stored(Frozen):
    """A record the registry stores as JSON: a float field that is NaN or infinite is refused, naming it."""

    model_config = ConfigDict(allow_inf_nan=False)


def _non_finite(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and not math.isfinite(value)


def _finite_or_none(value: object) -> object:
    """A free-form value (a recipe) with every non-finite float in it replaced by None, nested ones included."""
    if _non_finite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_finite_or_none(v) for v in value)
    return value


R = TypeVar("R", bound=BaseModel)


def storable(record: R) -> R:
    """``record`` validated again, as the registry does before publishing anything: a record built with
    ``model_construct`` or changed with ``model_copy(update=...)`` skipped validation, and could hold a NaN that
    would surface only when it is written, after its files were published."""
    return type(record).model_validate(record.model_dump())


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


class Lineage(Stored):
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

    @field_validator("train_loss", "eval_loss", mode="before")
    @classmethod
    def _unknown_if_not_finite(cls, value: object) -> object:
        return None if _non_finite(value) else value  # a diverged run's loss: not a number, so not known

    @field_validator("recipe", mode="before")
    @classmethod
    def _recipe_finite(cls, value: object) -> object:
        return _finite_or_none(value)  # as the JSON it is stored as would say (null), but now, not after publishing


class ItemResult(Stored):
    """One benchmark item as one version answered it."""

    item_id: str
    expected: str
    predicted: str
    correct: bool
    latency_ms: float
    malformed: bool = Field(description="output not in the task's allowed set")


class EvalReport(Stored):
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
