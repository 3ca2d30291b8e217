"""Flow configs: one YAML recipe per flow in ``configs/``, every field typed, defaulted and described."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from lifecycle.records import Frozen

M = TypeVar("M", bound=BaseModel)


def load_yaml_config(cls: type[M], path: Path, **overrides: object) -> M:
    """Read ``path`` into ``cls``; ``overrides`` (not None) win over the file, e.g. a CLI flag."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config {path} must be a mapping of fields, got {type(raw).__name__}")
    try:
        return cls(**{**raw, **{k: v for k, v in overrides.items() if v is not None}})
    except ValidationError as exc:
        raise ValueError(f"config {path} is not a valid {cls.__name__}:\n{exc}") from None


class RetrainConfig(Frozen):
    """``configs/retrain.yaml``: what one retrain run uses. Paths are relative to the project root."""

    model: str = Field(default="intent-router", description="registry name of the model to retrain")
    task: Path = Field(default=Path("configs/task.yaml"), description="task definition (labels, worlds)")
    recipe: Path = Field(default=Path("configs/recipe_lora.yaml"), description="LoRA hyperparameters")
    gate: Path = Field(default=Path("configs/gate.yaml"), description="offline gate policy")
    data: str | None = Field(default=None, description="labelled data drop (JSONL, Parquet or a saved "
                             "datasets folder); default: the task's drifted-labelled file under SLM_HOME/data")
    benchmarks: list[str] = Field(default=["golden-before", "golden-drifted"], min_length=1,
                                  description="golden sets both versions answer; the gate has a rule for each")
    # Why 3000: measured, replaying ~3k old rows keeps the old intents at the champion's level (FACTS.md).
    replay_rows: int = Field(default=3000, ge=0, description="rows of the champion's training data replayed")
    benchmark_batch_size: int = Field(default=64, ge=1, le=1024)
    actor: str = Field(default="retrain-flow", description="who the audit log names")

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # An automation fills flat parameters from an event payload: accept "a,b" as well as a list.
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
