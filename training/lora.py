"""LoRA fine-tuning of the base model with peft, on the shared masked-loss loop.

CUDA (bf16 autocast, fused AdamW) when a GPU is present, else CPU with an explicit thread count.
Unless ``max_seconds`` stops it, the run is deterministic on CPU: same seed, same adapter, bit for bit.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from lifecycle.data import Pair
from lifecycle.files import atomic_dir, hash_tree
from lifecycle.prompting import INTENT_V1, format_by_identity
from lifecycle.records import Frozen
from training.artifacts import weights_digest
from training.loop import (
    LoopRecipe,
    Progress,
    encode_pairs,
    evaluate_loss,
    pick_device,
    torch_threads,
    train_loop,
)


class LoraRecipe(LoopRecipe):
    """How to fine-tune an adapter. Defaults measured on BANKING77, one CPU thread: configs/recipe_lora.yaml."""

    prompt_format: str = Field(default=INTENT_V1.identity, description="identity of the prompt template; "
                               "must be the one the base model was trained with")
    r: int = Field(default=16, ge=1, description="LoRA rank")
    alpha: float = Field(default=32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout on the LoRA input. 0 by default: on "
                           "CPU its random masks were 30 % of a step; on BANKING77 (2 seeds) golden-before was "
                           "equal and golden-drifted +0.04 without it (configs/recipe_lora.yaml)")
    target_modules: str | list[str] = Field(default="all-linear", description="'all-linear' (every linear "
                                            "layer but the output head) or module names such as q_proj")
    include_output_head: bool = Field(default=True, description="also adapt the output head (lm_head). New "
                                      "labels must be spelled by the head; measured on BANKING77: drifted "
                                      "accuracy 44 % without it, 72 % with it, same steps")
    lr: float = Field(default=5e-3, gt=0, description="peak AdamW learning rate")
    batch_size: int = Field(default=32, ge=1, description="rows per step")
    max_steps: int = Field(default=400, ge=1, description="step budget")
    max_seconds: float | None = Field(default=None, gt=0, description="optional wall-clock cap; a run "
                                      "the cap stops depends on machine speed (not reproducible)")
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="share of the run spent warming up")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine decays to lr * this")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay on LoRA matrices")
    grad_clip: float = Field(default=1.0, gt=0, description="global gradient-norm clip")
    seed: int = Field(default=0, description="seeds LoRA init, dropout and batch order")
    log_every: int = Field(default=25, ge=1, description="loss-curve / progress interval in steps")
    init_from_champion: bool = Field(default=False, description="continue from the champion's adapter "
                                     "(its r/alpha/targets must equal this recipe's) instead of a fresh one")

    @field_validator("prompt_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        format_by_identity(value)
        return value

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and value != "all-linear":
            raise ValueError(f"target_modules {value!r}: write 'all-linear' or a list of module names")
        if isinstance(value, list) and not value:
            raise ValueError("target_modules is an empty list; name modules or write 'all-linear'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LoraRecipe:
        if self.log_every > self.max_steps:
            raise ValueError(f"log_every ({self.log_every}) exceeds max_steps ({self.max_steps}); the loss "
                             "curve would have one point only — lower log_every")
        if self.alpha / self.r > 16:
            raise ValueError(f"alpha / r = {self.alpha / self.r:g} scales the update too hard to train "
                             f"stably; lower alpha (say {2 * self.r}) or raise r")
        return self



class TrainResult(Frozen):
    adapter_dir: Path
    files: dict[str, str] = Field(description="every file in the adapter folder -> sha256")
    weights_sha256: str
    steps: int
    loss_curve: list[tuple[int, float]] = Field(description="(step, mean loss since the previous point)")
    final_loss: float = Field(description="mean target-token train loss over the last log window")
    eval_loss: float | None = Field(description="mean target-token loss on eval_pairs, if given")
    wall_seconds: float = Field(description="training loop wall time")
    tokens_per_s: float = Field(description="non-pad tokens per second of training")
    device: str
    hyperparameters: dict[str, object]


def _stable_config(path: Path) -> None:
    """peft writes ``target_modules`` from a set, in an order that follows the process's string hashing
    (PYTHONHASHSEED): the same training gave adapter folders of other hashes from one process to the next. Sorted,
    the folder is a function of the training alone."""
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        path.write_text(json.dumps(config, indent=2, sort_keys=True))


def train_lora(base_dir: Path, pairs: list[Pair], recipe: LoraRecipe, out_dir: Path, *,
               init_adapter: Path | None = None, eval_pairs: list[Pair] | None = None, threads: int = 1,
               progress: Progress | None = None, device: str | None = None) -> TrainResult:
    """Fine-tune a LoRA adapter on ``pairs`` and save it (adapter only) into ``out_dir``.

    ``device`` None picks CUDA when present; tests pin "cpu" (CUDA kernels are not bit-reproducible).
    """
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    _check_inputs(base_dir, pairs, out_dir, init_adapter, recipe)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fmt = format_by_identity(recipe.prompt_format)
    with torch_threads(threads):
        target = pick_device(device)
        tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
        if tokenizer.pad_token_id is None:  # a Hub base such as SmolLM2 has none: pad with eos, as serving does
            tokenizer.pad_token = tokenizer.eos_token
        base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
        model = _with_adapter(base, recipe, init_adapter).to(target)
        max_length = min(tokenizer.model_max_length, base.config.max_position_embeddings)
        examples = encode_pairs(tokenizer, pairs, fmt, max_length)
        outcome = train_loop(model, examples, recipe.loop_settings(), tokenizer.pad_token_id, target, progress)
        eval_loss = None
        if eval_pairs:
            eval_examples = encode_pairs(tokenizer, eval_pairs, fmt, max_length)
            eval_loss = evaluate_loss(model, eval_examples, recipe.batch_size, tokenizer.pad_token_id, target)
        with atomic_dir(out_dir) as tmp:
            # The head's base weights are frozen and shared: the adapter keeps its LoRA matrices only.
            model.save_pretrained(tmp, save_embedding_layers=False)
            _stable_config(tmp / "adapter_config.json")
    files = hash_tree(out_dir)
    return TrainResult(
        adapter_dir=out_dir, files=files, weights_sha256=weights_digest(files), steps=outcome.steps,
        loss_curve=outcome.loss_curve, final_loss=outcome.final_loss, eval_loss=eval_loss,
        wall_seconds=outcome.wall_s, tokens_per_s=outcome.tokens_per_s, device=outcome.device,
        hyperparameters=recipe.model_dump(mode="json"),
    )


def _check_inputs(base_dir: Path, pairs: list[Pair], out_dir: Path, init_adapter: Path | None,
                  recipe: LoraRecipe) -> None:
    if not pairs:
        raise ValueError("train_lora needs at least one training pair")
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(f"base model folder {base_dir} does not exist or has no config.json")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new folder or remove it first")
    if init_adapter is None:
        return
    config_file = Path(init_adapter) / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"init_adapter {init_adapter} is not a PEFT adapter folder "
                                "(no adapter_config.json)")
    saved = json.loads(config_file.read_text())
    if saved.get("r") != recipe.r or float(saved.get("lora_alpha", 0)) != recipe.alpha:
        raise ValueError(f"init_adapter has r={saved.get('r')}, alpha={saved.get('lora_alpha')} but the "
                         f"recipe says r={recipe.r}, alpha={recipe.alpha:g}; set the recipe to the "
                         "adapter's values or set init_from_champion: false")


def _same_shape(saved, targets: list[str], recipe: LoraRecipe, init_adapter: Path) -> None:
    """An adapter continued from (``init_from_champion``) trains with its own settings, not the recipe's: refuse one
    whose target modules or dropout differ from what the recipe asks, rather than train (and record in the lineage)
    one thing while the recipe says another."""
    wanted = {"target_modules": sorted(targets), "lora_dropout": recipe.dropout}
    # peft saves 'all-linear' as full module paths (model.layers.0.mlp.up_proj): compared by their last names.
    found = {"target_modules": sorted({t.rsplit(".", 1)[-1] for t in saved.target_modules or []}),
             "lora_dropout": saved.lora_dropout}
    differ = [f"{k} {found[k]} (the recipe: {wanted[k]})" for k in wanted if found[k] != wanted[k]]
    if differ:
        raise ValueError(f"init_adapter {init_adapter} was trained with {'; '.join(differ)}: set the recipe to the "
                         "adapter's values or set init_from_champion: false")


def _with_adapter(base, recipe: LoraRecipe, init_adapter: Path | None):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    # Seeded here because the LoRA A matrices are drawn at wrap time.
    torch.manual_seed(recipe.seed)
    with warnings.catch_warnings():
        # peft 0.21 calls transformers 5's deprecated `is_gradient_checkpointing` on every wrap: noise.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        if init_adapter is not None:
            targets = _resolved_targets(base, recipe)  # of the bare base: wrapping replaces its Linears
            model = PeftModel.from_pretrained(base, init_adapter, is_trainable=True)
            _same_shape(model.peft_config["default"], targets, recipe, init_adapter)
            return model
        config = LoraConfig(r=recipe.r, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout,
                            target_modules=_target_modules(base, recipe), task_type="CAUSAL_LM")
        return get_peft_model(base, config)


def _resolved_targets(base, recipe: LoraRecipe) -> list[str]:
    """The module names :func:`_target_modules` means, 'all-linear' spelt out as peft resolves it (every Linear but
    the output head), as a saved adapter's config lists them."""
    import torch

    targets = _target_modules(base, recipe)
    if targets == "all-linear":
        head = base.get_output_embeddings()
        targets = {name.rsplit(".", 1)[-1] for name, module in base.named_modules()
                   if isinstance(module, torch.nn.Linear) and module is not head}
    return sorted(targets)


def _target_modules(base, recipe: LoraRecipe) -> str | list[str]:
    """peft's 'all-linear' skips the output head; with include_output_head, name every linear layer."""
    import torch

    if not recipe.include_output_head:
        return recipe.target_modules
    head = base.get_output_embeddings()
    head_name = next(name for name, module in base.named_modules() if module is head)
    if recipe.target_modules == "all-linear":
        names = {name.rsplit(".", 1)[-1] for name, module in base.named_modules()
                 if isinstance(module, torch.nn.Linear)}
    else:
        names = set(recipe.target_modules)
    return sorted(names | {head_name.rsplit(".", 1)[-1]})
