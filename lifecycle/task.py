"""The task definition, as data: what the model answers, and what "before" and "drifted" mean.

Loaded from ``configs/task.yaml``. The default task routes BANKING77 customer messages to one of 77
intents. The "drifted" world is the bank launching new products: every intent whose name contains one of
``drift_keywords`` is absent before and appears in later traffic.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import Field, model_validator

from lifecycle.records import Frozen


class TaskSpec(Frozen):
    name: str
    data_dir: Path = Field(description="folder with train.csv, test.csv, categories.json (relative to project)")
    text_column: str = "text"
    label_column: str = "category"
    drift_keywords: list[str] = Field(min_length=1)
    golden_before_size: int = Field(default=1000, ge=20, description="items in golden-before (old intents)")
    golden_drifted_size: int = Field(default=500, ge=20, description="items in golden-drifted (new intents)")
    seed: int = 0
    min_prompt_chars: int = Field(default=2, ge=1)
    max_prompt_chars: int = Field(default=512, ge=10)
    min_train_rows: int = Field(default=50, ge=1)
    labels: list[str] = Field(default_factory=list, description="filled from categories.json on load")

    @model_validator(mode="after")
    def _bounds(self) -> TaskSpec:
        if self.min_prompt_chars >= self.max_prompt_chars:
            raise ValueError(f"min_prompt_chars ({self.min_prompt_chars}) must be below max_prompt_chars "
                             f"({self.max_prompt_chars})")
        return self

    def is_drifted(self, label: str) -> bool:
        return any(k in label for k in self.drift_keywords)

    @property
    def before_labels(self) -> list[str]:
        return [label for label in self.labels if not self.is_drifted(label)]

    @property
    def drifted_labels(self) -> list[str]:
        return [label for label in self.labels if self.is_drifted(label)]


def load_task(path: Path, root: Path) -> TaskSpec:
    """Read a task YAML; ``data_dir`` is resolved against ``root``; labels come from categories.json."""
    if not path.is_file():
        raise FileNotFoundError(f"task config {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"task config {path} must be a mapping of fields, got {type(raw).__name__}")
    spec = TaskSpec(**raw)
    data_dir = spec.data_dir if spec.data_dir.is_absolute() else (root / spec.data_dir).resolve()
    categories = data_dir / "categories.json"
    if not categories.is_file():
        raise FileNotFoundError(f"task {spec.name}: {categories} is missing (it lists the allowed completions)")
    labels = json.loads(categories.read_text())
    spec = spec.model_copy(update={"data_dir": data_dir, "labels": list(labels)})
    if not spec.drifted_labels:
        raise ValueError(f"task {spec.name}: no label contains any of {spec.drift_keywords}; "
                         "the drifted world would be empty")
    return spec
