"""Build the small offline base model: a BPE tokenizer and a Llama-shaped causal LM trained from scratch.

This stands in for a Hub base model when there is no network: everything is built from config and the
training pairs, and the folder it writes loads with ``AutoModelForCausalLM`` / ``AutoTokenizer``.
Measured on BANKING77 "before" rows, one thread: see ``configs/base_model.yaml``.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from lifecycle.data import Pair
from lifecycle.files import atomic_dir, hash_tree
from lifecycle.prompting import INTENT_V1, format_by_identity
from lifecycle.records import Frozen
from training.artifacts import weights_digest
from training.loop import LoopRecipe, Progress, encode_pairs, pick_device, torch_threads, train_loop


class BaseModelConfig(LoopRecipe):
    """How to build the base model. Defaults: ~1.2M parameters, ~150 s on one CPU thread."""

    prompt_format: str = Field(default=INTENT_V1.identity, description="identity of the prompt template")
    vocab_size: int = Field(default=2000, ge=300, description="BPE vocabulary incl. 256 bytes + specials")
    min_frequency: int = Field(default=2, ge=1, description="BPE merges need at least this many occurrences")
    hidden_size: int = Field(default=128, ge=8, description="model width")
    intermediate_size: int = Field(default=256, ge=8, description="MLP width")
    num_layers: int = Field(default=4, ge=1, description="transformer blocks")
    num_heads: int = Field(default=4, ge=1, description="attention heads; must divide hidden_size")
    num_kv_heads: int | None = Field(default=None, ge=1, description="grouped-query KV heads; None = num_heads")
    max_positions: int = Field(default=256, ge=16, description="RoPE positions the model supports")
    max_length: int = Field(default=192, ge=16, description="tokens per row (prompt + completion); longer "
                            "prompts lose their start. BANKING77's longest row is ~150")
    tie_embeddings: bool = Field(default=False, description="share input and output embeddings")
    batch_size: int = Field(default=32, ge=1, description="rows per step")
    lr: float = Field(default=2e-3, gt=0, description="peak AdamW learning rate")
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="share of the run spent warming up")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine decays to lr * this")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay on matrices")
    grad_clip: float = Field(default=1.0, gt=0, description="global gradient-norm clip")
    max_steps: int = Field(default=900, ge=1, description="step budget")
    max_seconds: float | None = Field(default=None, gt=0, description="optional wall-clock cap; the schedule "
                                      "then follows whichever budget runs out first, so the weights depend on "
                                      "machine load as soon as a step is slower than max_seconds / max_steps. "
                                      "None (the default): reproducible bit for bit")
    seed: int = Field(default=0, description="seeds weights init and batch order")
    log_every: int = Field(default=50, ge=1, description="loss-curve / progress interval in steps")

    @field_validator("prompt_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        format_by_identity(value)
        return value

    @model_validator(mode="after")
    def _shapes(self) -> BaseModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads "
                             f"({self.num_heads}); change one of them")
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                             f"({self.num_kv_heads}); change num_kv_heads")
        if self.max_length > self.max_positions:
            raise ValueError(f"max_length ({self.max_length}) exceeds max_positions ({self.max_positions}); "
                             "lower max_length or raise max_positions")
        if self.log_every > self.max_steps:
            raise ValueError(f"log_every ({self.log_every}) exceeds max_steps ({self.max_steps}); the loss "
                             "curve would have one point only — lower log_every")
        return self



class BaseModelInfo(Frozen):
    """What was built: where, how big, its content hash, and how the training went."""

    path: Path
    n_params: int
    weights_sha256: str = Field(description="sha256 of the weights file (BaseModelRef.revision)")
    files: dict[str, str] = Field(description="every file in the folder -> sha256")
    prompt_format: str
    steps: int
    train_loss: float = Field(description="mean target-token loss over the last log window")
    loss_curve: list[tuple[int, float]]
    wall_seconds: float = Field(description="tokenizer + training + saving")
    tokens_per_s: float = Field(description="non-pad training tokens per second of the training loop")
    device: str
    config: dict[str, object]


def build_base_model(pairs: list[Pair], out_dir: Path, config: BaseModelConfig,
                     progress: Progress | None = None, *, threads: int = 1,
                     device: str | None = None) -> BaseModelInfo:
    """Train tokenizer + model on ``pairs`` and save both into ``out_dir`` (which must not exist).

    ``device`` None picks CUDA when present (bf16 autocast, fused AdamW), else the CPU.
    """
    if not pairs:
        raise ValueError("build_base_model needs at least one training pair")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new folder or remove it first")
    from training.tokenizer import train_tokenizer

    start = time.perf_counter()
    fmt = format_by_identity(config.prompt_format)
    tokenizer = train_tokenizer(("".join(fmt.training_text(p.prompt, p.completion)) for p in pairs),
                                config.vocab_size, min_frequency=config.min_frequency,
                                model_max_length=config.max_length)
    with torch_threads(threads):
        target = pick_device(device)
        model = _init_model(config, tokenizer).to(target)
        examples = encode_pairs(tokenizer, pairs, fmt, config.max_length)
        outcome = train_loop(model, examples, config.loop_settings(), tokenizer.pad_token_id, target, progress)
        with atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    files = hash_tree(out_dir)
    return BaseModelInfo(
        path=out_dir, n_params=sum(p.numel() for p in model.parameters()),
        weights_sha256=weights_digest(files), files=files, prompt_format=fmt.identity,
        steps=outcome.steps, train_loss=outcome.final_loss, loss_curve=outcome.loss_curve,
        wall_seconds=time.perf_counter() - start, tokens_per_s=outcome.tokens_per_s, device=outcome.device,
        config=config.model_dump(mode="json"),
    )


def _init_model(config: BaseModelConfig, tokenizer):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    llama = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads or config.num_heads,
        max_position_embeddings=config.max_positions, tie_word_embeddings=config.tie_embeddings,
        pad_token_id=pad, bos_token_id=eos, eos_token_id=eos,
    )
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(llama)
    model.generation_config = GenerationConfig(pad_token_id=pad, eos_token_id=eos, bos_token_id=eos,
                                               do_sample=False)
    return model
