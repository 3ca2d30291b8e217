"""Bootstrap flow: the embedded default, from nothing to a serving champion, with no network.

Builds the task's data worlds and golden sets from the bundled BANKING77 files, trains the offline base
model (tokenizer + small Llama from config; ~150 s on one CPU thread, cached under SLM_HOME/cache), scores
it on both golden sets, registers it as version 1 and makes it champion, and stores v1's golden answers for the
first retrain's benchmark (``evaluation.answers``). Does nothing if the model already has a champion.

Run it:  ``slm bootstrap``
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field, field_validator

from lifecycle.hub_refs import parse_pinned
from lifecycle.names import ModelName
from lifecycle.settings import project_root
from tasks.bootstrap import build_base, current_champion, prepare_task_data, register_v1, resolve_task
from tasks.evaluation import remember_registered_answers
from tasks.report import publish_report


class BootstrapParams(BaseModel):
    model: ModelName = Field(default="intent-router", description="registry name of the model")
    task: str = Field(default="configs/task.yaml", description="task definition")
    base_model: str = Field(default="configs/base_model.yaml", description="base model config")
    hub_base: str | None = Field(default=None, description="Hub causal LM as v1's base, OWNER/NAME@<40-hex commit "
                                 "sha> (downloaded into the Hub cache); None builds the offline base model")

    @field_validator("hub_base")
    @classmethod
    def _pinned(cls, value: str | None) -> str | None:
        """Refuse a branch, a tag or a short sha up front, before any data is prepared; blank means none."""
        if value is None or not value.strip():
            return None
        parse_pinned(value)
        return value.strip()


class BootstrapOutcome(BaseModel):
    champion: str
    created: bool


@flow(name="bootstrap", log_prints=True)
def bootstrap(params: BootstrapParams = BootstrapParams()) -> BootstrapOutcome:
    root = project_root()
    existing = current_champion(params.model)
    if existing is not None:
        return BootstrapOutcome(champion=existing, created=False)
    spec = resolve_task(root / params.task, root)  # downloads a pinned hub_dataset first
    data = prepare_task_data(spec)
    base_dir, info = build_base(data, root / params.base_model, params.hub_base)
    version = register_v1(params.model, spec, data, base_dir, info, root / params.base_model)
    remember_registered_answers(version.ref)
    publish_report(params.model)
    return BootstrapOutcome(champion=version.ref, created=True)

