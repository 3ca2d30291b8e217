"""Fine-tune task: LoRA on the champion's base with the run's recipe."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from lifecycle.config import load_yaml_config
from lifecycle.settings import get_settings
from tasks.connect import open_registry
from tasks.data import TrainingData
from tasks.plan import RetrainPlan
from training.lora import LoraRecipe, TrainResult, train_lora


@task(name="fine-tune", cache_policy=NO_CACHE)
def fine_tune(plan: RetrainPlan, data: TrainingData) -> TrainResult:
    recipe = load_yaml_config(LoraRecipe, plan.config.recipe)
    with open_registry() as registry:
        base_dir = registry.base_dir(plan.champion)
        champion_dir = registry.version_dir(plan.champion)
    init = champion_dir if recipe.init_from_champion and (champion_dir / "adapter_config.json").is_file() else None
    result = train_lora(base_dir, data.pairs, recipe, plan.run_dir / "adapter", init_adapter=init,
                        threads=get_settings().torch_threads)
    curve = "\n".join(f"| {step} | {loss:.4f} |" for step, loss in result.loss_curve)
    create_markdown_artifact(key="training-summary", description="LoRA fine-tune", markdown=(
        f"**LoRA** r={recipe.r}, {result.steps} steps on {len(data.pairs)} rows in {result.wall_seconds:.1f} s "
        f"({result.tokens_per_s:.0f} tokens/s, {result.device}); final train loss {result.final_loss:.4f}\n\n"
        f"| step | loss |\n|---|---|\n{curve}"))
    return result
