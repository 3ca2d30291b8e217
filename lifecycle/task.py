"""The task definition, as data: what the model answers, and what "before" and "drifted" mean.

Loaded from ``configs/task.yaml``. The default task routes BANKING77 customer messages to one of 77
intents. The "drifted" world is the bank launching new products: every intent whose name contains one of
``drift_keywords`` is absent before and appears in later traffic.

The data comes either from a local folder (``data_dir``) or from a Hub dataset repository pinned by commit
(``hub_dataset: OWNER/NAME@<40-hex sha>``). A Hub dataset is downloaded by the bootstrap flow (``tasks.bootstrap``)
into the Hub client's cache; ``load_task`` itself never talks to the network: it reads the snapshot from there.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml
from pydantic import Field, model_validator

from lifecycle.hub_refs import PinnedRepo, parse_pinned, snapshot_folder
from lifecycle.records import Frozen

# The layout a task's data folder (local or Hub) must have; categories.json is optional for a Hub dataset
# (then the labels are the sorted distinct values of train.csv's label column).
DATA_FILES = ("train.csv", "test.csv")


class TaskSpec(Frozen):
    name: str
    data_dir: Path | None = Field(default=None, description="folder with train.csv, test.csv, categories.json "
                                  "(relative to project); set on load from hub_dataset when that is given")
    hub_dataset: str | None = Field(default=None, description="Hub dataset repo pinned by commit, "
                                    "OWNER/NAME@<40-hex sha>, with train.csv and test.csv at its root; "
                                    "replaces data_dir")
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
        if self.hub_dataset is not None:
            parse_pinned(self.hub_dataset, "dataset")  # a branch or tag is refused here, with the reason
        elif self.data_dir is None:
            raise ValueError("the task needs its data: set data_dir (a local folder) or hub_dataset "
                             "(OWNER/NAME@<commit sha>)")
        if self.min_prompt_chars >= self.max_prompt_chars:
            raise ValueError(f"min_prompt_chars ({self.min_prompt_chars}) must be below max_prompt_chars "
                             f"({self.max_prompt_chars})")
        return self

    @property
    def hub_source(self) -> PinnedRepo | None:
        """The pinned Hub dataset the data comes from, None for a local folder."""
        return None if self.hub_dataset is None else parse_pinned(self.hub_dataset, "dataset")

    @property
    def data_source(self) -> str:
        """What lineage records as the raw data's origin: ``hf://datasets/OWNER/NAME@SHA`` or the folder."""
        hub = self.hub_source
        return f"{hub.uri}@{hub.revision}" if hub is not None else str(self.data_dir)

    def is_drifted(self, label: str) -> bool:
        return any(k in label for k in self.drift_keywords)

    @property
    def before_labels(self) -> list[str]:
        return [label for label in self.labels if not self.is_drifted(label)]

    @property
    def drifted_labels(self) -> list[str]:
        return [label for label in self.labels if self.is_drifted(label)]


def read_task_config(path: Path) -> TaskSpec:
    """The task YAML as written: ``data_dir`` not resolved, no labels yet (load_task does both)."""
    if not path.is_file():
        raise FileNotFoundError(f"task config {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"task config {path} must be a mapping of fields, got {type(raw).__name__}")
    if raw.get("hub_dataset") and raw.get("data_dir"):
        raise ValueError(f"task config {path} sets both data_dir and hub_dataset; keep one (hub_dataset "
                         "downloads the pinned repo and uses it as the data folder)")
    return TaskSpec(**raw)


def load_task(path: Path, root: Path, *, hub_snapshot: Path | None = None) -> TaskSpec:
    """Read a task YAML; ``data_dir`` is resolved against ``root``; labels come from categories.json.

    With ``hub_dataset`` the data folder is the dataset's snapshot at the pinned commit: ``hub_snapshot`` when
    the caller just downloaded it, else the Hub client's cache (``lifecycle.hub_refs.snapshot_folder``).
    """
    spec = read_task_config(path)
    hub = spec.hub_source
    if hub is not None:
        data_dir = Path(hub_snapshot) if hub_snapshot is not None else snapshot_folder(hub)
        if not data_dir.is_dir():
            raise FileNotFoundError(
                f"task {spec.name}: Hub dataset {hub} is not downloaded (looked in {data_dir}); `slm bootstrap` "
                f"downloads it, or: hf download {hub.repo_id} --repo-type dataset --revision {hub.revision}")
    else:
        data_dir = spec.data_dir if spec.data_dir.is_absolute() else (root / spec.data_dir).resolve()
    labels = _labels(spec, data_dir, from_hub=hub is not None)
    spec = spec.model_copy(update={"data_dir": data_dir, "labels": labels})
    if not spec.drifted_labels:
        raise ValueError(f"task {spec.name}: no label contains any of {spec.drift_keywords}; "
                         "the drifted world would be empty")
    return spec


def _labels(spec: TaskSpec, data_dir: Path, *, from_hub: bool) -> list[str]:
    """categories.json, or (a Hub dataset without one) the distinct labels of train.csv; the layout is checked."""
    where = f"Hub dataset {spec.hub_dataset}" if from_hub else str(data_dir)
    missing = [name for name in DATA_FILES if not (data_dir / name).is_file()]
    categories = data_dir / "categories.json"
    if from_hub and missing:
        present = sorted(p.name for p in data_dir.iterdir())[:10]
        raise ValueError(f"task {spec.name}: {where} lacks {', '.join(missing)} at its root (it has: "
                         f"{', '.join(present) or 'nothing'}). Expected CSV files with columns "
                         f"{spec.text_column!r} and {spec.label_column!r}")
    if from_hub:
        for name in DATA_FILES:
            with (data_dir / name).open(newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
            absent = [c for c in (spec.text_column, spec.label_column) if c not in header]
            if absent:
                raise ValueError(f"task {spec.name}: {where}/{name} has no column {', '.join(map(repr, absent))} "
                                 f"(its header: {header}); set text_column / label_column in the task config")
    if categories.is_file():
        return list(json.loads(categories.read_text()))
    if not from_hub:
        raise FileNotFoundError(f"task {spec.name}: {categories} is missing (it lists the allowed completions)")
    with (data_dir / "train.csv").open(newline="", encoding="utf-8") as handle:
        return sorted({row[spec.label_column] for row in csv.DictReader(handle)})
