"""Flow configs: one YAML recipe per flow in ``configs/``, every field typed, defaulted and described."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from lifecycle.names import ModelName
from lifecycle.records import Frozen

M = TypeVar("M", bound=BaseModel)


def load_yaml_config(cls: type[M], path: Path, **overrides: object) -> M:
    """Read ``path`` into ``cls``; ``overrides`` (not None) win over the file, e.g. a CLI flag."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"config {path} is not valid YAML: {exc}") from None
    if raw is None:  # an empty or truncated file is a mistake, never "every default" (a purge policy's among them)
        raise ValueError(f"config {path} is empty; write its fields (every default: an empty mapping, {{}})")
    if not isinstance(raw, dict):
        raise ValueError(f"config {path} must be a mapping of fields, got {type(raw).__name__}")
    try:
        return cls(**{**raw, **{k: v for k, v in overrides.items() if v is not None}})
    except ValidationError as exc:
        raise ValueError(f"config {path} is not a valid {cls.__name__}:\n{exc}") from None


class RetrainConfig(Frozen):
    """``configs/retrain.yaml``: what one retrain run uses. Paths are relative to the project root."""

    model: ModelName = Field(default="intent-router", description="registry name of the model to retrain")
    task: Path = Field(default=Path("configs/task.yaml"), description="task definition (labels, worlds)")
    recipe: Path = Field(default=Path("configs/recipe_lora.yaml"), description="LoRA hyperparameters")
    gate: Path = Field(default=Path("configs/gate.yaml"), description="offline gate policy")
    data: str | None = Field(default=None, description="labelled data drop (JSONL, Parquet or a saved "
                             "datasets folder); default: the task's drifted-labelled file under SLM_HOME/data")
    benchmarks: list[str] = Field(default=["golden-before", "golden-drifted"], min_length=1,
                                  description="golden sets both versions answer; the gate has a rule for each")
    # Why 4500: measured on the demo task, 3000 lost 3.6 points on the old intents, 4500 2.1 (configs/retrain.yaml).
    replay_rows: int = Field(default=4500, ge=0, description="rows of the champion's replay pool replayed")
    benchmark_batch_size: int = Field(default=64, ge=1, le=1024)
    rollout_plan: str = Field(default="configs/rollout.yaml", description="the rollout plan a candidate of this "
                              "run is rolled out with: named in slm.candidate.published for the rollout deployment")
    actor: str = Field(default="retrain-flow", description="who the audit log names")

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # An automation fills flat parameters from an event payload: accept "a,b" as well as a list.
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class RetrainParams(BaseModel):
    """Parameters of the retrain flow: flat, so the Prefect UI draws a form and an automation can fill
    them from an event payload. Every field left empty takes its value from the config file."""

    config: str = Field(default="configs/retrain.yaml", description="retrain config (YAML)")
    data: str | None = Field(default=None, description="labelled data drop: JSONL, Parquet or a saved datasets "
                             "folder (FOLDER@SPLIT for one split)")
    recipe: str | None = Field(default=None, description="LoRA recipe YAML (overrides the config's)")
    gate: str | None = Field(default=None, description="gate policy YAML (overrides the config's)")
    benchmarks: str | None = Field(default=None, description="comma-separated golden sets, e.g. "
                                   "'golden-before,golden-drifted'")
    replay_rows: int | None = Field(default=None, ge=0, description="rows of the champion's replay pool to replay")
    rollout_plan: str | None = Field(default=None, description="rollout plan YAML for the candidate (overrides "
                                     "the config's; passed on in slm.candidate.published)")
    reason: str = Field(default="manual", description="why this run: recorded in lineage and the audit log")
    model: str | None = Field(default=None, description="the model this run is for (a drift event names it); "
                              "refused when the config retrains another")

    @field_validator("data", "recipe", "gate", "benchmarks", "rollout_plan", "model", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # An automation templates "{{ event.payload.x }}" to "" when an older event has no x: take the config's.
        return None if isinstance(value, str) and not value.strip() else value

    def resolve(self, root: Path) -> RetrainConfig:
        """The config file with this run's overrides applied; relative paths resolved against ``root``."""
        path = Path(self.config)
        cfg = load_yaml_config(RetrainConfig, path if path.is_absolute() else root / path, data=self.data,
                               recipe=self.recipe, gate=self.gate, benchmarks=self.benchmarks,
                               replay_rows=self.replay_rows, rollout_plan=self.rollout_plan)
        if self.model is not None and self.model != cfg.model:
            # A drift event of one model must never retrain another (its candidate would answer nothing).
            raise ValueError(f"this run is for {self.model}, but {self.config} retrains {cfg.model}: name that "
                             f"model's retrain config (retrain_config in its monitor policy)")
        absolute: dict[str, object] = {k: (v if v.is_absolute() else root / v)
                                       for k, v in {"task": cfg.task, "recipe": cfg.recipe, "gate": cfg.gate}.items()}
        if cfg.data and not Path(cfg.data).is_absolute():  # as every path of a run: not the worker's directory
            absolute["data"] = str(root / cfg.data)
        return cfg.model_copy(update=absolute)
