"""Bootstrap flow: the embedded default, from nothing to a serving champion, with no network.

Builds the task's data worlds and golden sets from the bundled BANKING77 files, trains the offline base
model (tokenizer + small Llama from config; ~150 s on one CPU thread, cached under SLM_HOME/cache), scores
it on both golden sets, registers it as version 1 and makes it champion. Does nothing if the model
already has a champion.

Run it:  ``slm bootstrap``
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from lifecycle.settings import project_root
from lifecycle.task import load_task
from tasks.bootstrap import build_base, current_champion, prepare_task_data, register_v1
from tasks.report import publish_report


class BootstrapParams(BaseModel):
    model: str = Field(default="intent-router", description="registry name of the model")
    task: str = Field(default="configs/task.yaml", description="task definition")
    base_model: str = Field(default="configs/base_model.yaml", description="base model config")


class BootstrapOutcome(BaseModel):
    champion: str
    created: bool


@flow(name="bootstrap", log_prints=True)
def bootstrap(params: BootstrapParams = BootstrapParams()) -> BootstrapOutcome:
    root = project_root()
    existing = current_champion(params.model)
    if existing is not None:
        return BootstrapOutcome(champion=existing, created=False)
    spec = load_task(root / params.task, root)
    data = prepare_task_data(spec)
    base_dir, info = build_base(data, root / params.base_model)
    version = register_v1(params.model, spec, data, base_dir, info, root / params.base_model)
    publish_report(params.model)
    return BootstrapOutcome(champion=version.ref, created=True)

