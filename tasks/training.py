"""Fine-tune task: LoRA on the champion's base with the run's recipe."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from lifecycle.config import load_yaml_config
from lifecycle.settings import get_settings
from tasks.connect import open_registry
from tasks.data import TrainingData
from tasks.plan import RetrainPlan
from training.loop import Progress
from training.lora import LoraRecipe, TrainResult, train_lora

log = logging.getLogger(__name__)


def training_log(path: Path) -> Progress:
    """Append each loss point to the run's ``training.log``: what an operator tails, and what shows a run is
    training (a run killed meanwhile leaves the log and no adapter; its re-run trains afresh in its own folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def progress(step: int, total: int, loss: float) -> None:
        with path.open("a") as fh:
            fh.write(f"step {step}/{total} loss {loss:.4f}\n")
    return progress


@task(name="fine-tune", cache_policy=NO_CACHE)
def fine_tune(plan: RetrainPlan, data: TrainingData) -> TrainResult:
    recipe = load_yaml_config(LoraRecipe, plan.config.recipe)
    with open_registry() as registry:
        base_dir = registry.base_dir(plan.champion)
        champion_dir = registry.version_dir(plan.champion)
    init = champion_dir if recipe.init_from_champion and (champion_dir / "adapter_config.json").is_file() else None
    out = plan.run_dir / "adapter"
    if out.exists():  # a retry of this flow run (the UI's Retry keeps its id): the attempt before trained, then failed
        log.warning("removing %s, left by an earlier attempt of this run (never registered): training again", out)
        shutil.rmtree(out)
    result = train_lora(base_dir, data.pairs, recipe, out, init_adapter=init,
                        threads=get_settings().torch_threads, progress=training_log(plan.run_dir / "training.log"))
    curve = "\n".join(f"| {step} | {loss:.4f} |" for step, loss in result.loss_curve)
    create_markdown_artifact(key="training-summary", description="LoRA fine-tune", markdown=(
        f"**LoRA** r={recipe.r}, {result.steps} steps on {len(data.pairs)} rows in {result.wall_seconds:.1f} s "
        f"({result.tokens_per_s:.0f} tokens/s, {result.device}); final train loss {result.final_loss:.4f}\n\n"
        f"| step | loss |\n|---|---|\n{curve}"))
    return result
