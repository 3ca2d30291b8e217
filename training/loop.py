"""The one training loop, shared by the base-model build and LoRA: loss on the completion tokens only.

Plain torch rather than the HF Trainer: on a ~1M-parameter model the Trainer's per-step overhead is a
large share of the step, and the masking and batching here are exactly what serving needs.

* Each row is ``context + target`` tokenized separately, exactly as serving tokenizes the rendered
  prompt and then generates the target, so the token boundary at the completion is identical.
* Batches group rows of similar length and pad (on the right) only to the batch's longest row.
* Rows never share a sequence (no packing), so nothing leaks between examples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from lifecycle.config import load_yaml_config
from lifecycle.data import Pair
from lifecycle.prompting import PromptFormat
from lifecycle.records import Frozen

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int, float], None]
IGNORE = -100
# Sorting inside pools of this many batches keeps padding low while batch order stays random.
_POOL_BATCHES = 50


@dataclass(frozen=True)
class Example:
    ids: tuple[int, ...]
    n_context: int


@dataclass(frozen=True)
class LoopSettings:
    lr: float
    batch_size: int
    max_steps: int
    max_seconds: float | None
    warmup_ratio: float
    min_lr_ratio: float
    weight_decay: float
    grad_clip: float
    seed: int
    log_every: int


class LoopRecipe(Frozen):
    """Base of the configs that drive :func:`train_loop` (base model build, LoRA): each declares the
    loop's fields with its own defaults and descriptions; this turns them into :class:`LoopSettings`."""

    def loop_settings(self) -> LoopSettings:
        return LoopSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LoopSettings)})

    @classmethod
    def from_yaml(cls, path: Path, **overrides: object) -> Self:
        return load_yaml_config(cls, path, **overrides)


@dataclass(frozen=True)
class LoopOutcome:
    steps: int
    loss_curve: list[tuple[int, float]]
    final_loss: float
    wall_s: float
    tokens: int
    device: str

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0


def encode_pairs(tokenizer, pairs: Sequence[Pair], fmt: PromptFormat, max_length: int) -> list[Example]:
    """Tokenize context and target separately; an over-long context loses its start, as in serving, and keeps what
    serving keeps: ``max_length - fmt.max_new_tokens`` tokens (``serving.backend``: the window less the answer's
    budget). Kept to ``max_length - len(target)`` instead, the model learnt from contexts reaching further back than
    any it would be served."""
    contexts, targets = zip(*(fmt.training_text(p.prompt, p.completion) for p in pairs), strict=True)
    # split_special_tokens: a user's "<|eos|>" is text, as serving reads it, never the control token.
    ctx_ids = tokenizer(list(contexts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    tgt_ids = tokenizer(list(targets), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    served = max(1, max_length - fmt.max_new_tokens)
    examples = []
    for ctx, tgt in zip(ctx_ids, tgt_ids, strict=True):
        tgt = tgt[: max_length - 1]
        ctx = ctx[-min(served, max_length - len(tgt)):]
        examples.append(Example(ids=tuple(ctx + tgt), n_context=len(ctx)))
    return examples


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of index batches: shuffled, sorted by length within pools, batch order shuffled."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * _POOL_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        group = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches.extend(group[j:j + batch_size] for j in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Example], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        labels[row, e.n_context: len(e.ids)] = torch.tensor(e.ids[e.n_context:])
    return ids.to(device), labels.to(device)


def masked_loss(model, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over target tokens, and their count.

    No attention mask: padding is on the right and attention is causal, so real tokens never attend
    to pads (and SDPA keeps its fast causal path). The output head runs on target positions only.
    """
    import torch.nn.functional as F

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = lm.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = lm.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep]), int(keep.sum())


def lr_factor(progress: float, warmup_ratio: float, min_ratio: float) -> float:
    """Linear warmup, then cosine decay to ``min_ratio``; progress runs from 0 to 1."""
    if warmup_ratio > 0 and progress < warmup_ratio:
        return progress / warmup_ratio
    span = max(1e-9, 1.0 - warmup_ratio)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup_ratio) / span)))
    return min_ratio + (1 - min_ratio) * cosine


def pick_device(device: str | None = None) -> torch.device:
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Set torch's intra-op threads for the block (FACTS.md: 2 threads on 2 busy cores collapse)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def autocast(device: torch.device):
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _optimizer(model, s: LoopSettings, device: torch.device):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    # Decay matrices only; norms and biases keep their scale.
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": s.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def _batches_forever(examples: Sequence[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    rng = random.Random(seed)
    lengths = [len(e.ids) for e in examples]
    while True:
        for batch in length_grouped_batches(lengths, batch_size, rng):
            yield [examples[i] for i in batch]


def train_loop(model, examples: Sequence[Example], s: LoopSettings, pad_id: int,
               device: torch.device, progress: Progress | None = None) -> LoopOutcome:
    """Train until ``max_steps`` or ``max_seconds``, whichever comes first.

    The schedule advances by max(step fraction, time fraction), so a run cut short by the clock still
    warms up and decays fully. That also means a cap shapes the schedule as soon as a step takes longer
    than ``max_seconds / max_steps`` (a busy machine), not only when it stops the run: only without a cap
    is the run deterministic on CPU (same seed, same weights) whatever the load.
    """
    import torch

    torch.manual_seed(s.seed)
    opt = _optimizer(model, s, device)
    model.train()
    curve: list[tuple[int, float]] = []
    window, window_n, tokens, step = torch.zeros((), device=device), 0, 0, 0
    start = time.perf_counter()
    for batch in _batches_forever(examples, s.batch_size, s.seed):
        elapsed = time.perf_counter() - start
        if step >= s.max_steps or (s.max_seconds is not None and elapsed >= s.max_seconds):
            break
        frac = max((step + 1) / s.max_steps, elapsed / s.max_seconds if s.max_seconds else 0.0)
        for group in opt.param_groups:
            group["lr"] = s.lr * lr_factor(frac, s.warmup_ratio, s.min_lr_ratio)
        ids, labels = collate(batch, pad_id, device)
        with autocast(device):
            loss, _ = masked_loss(model, ids, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], s.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step, window_n, tokens = step + 1, window_n + 1, tokens + sum(len(e.ids) for e in batch)
        window += loss.detach()
        if step % s.log_every == 0 or step == s.max_steps:
            curve.append((step, float(window) / window_n))
            window, window_n = torch.zeros((), device=device), 0
            if progress is not None:
                progress(step, s.max_steps, curve[-1][1])
    if window_n:
        curve.append((step, float(window) / window_n))
    model.eval()
    final = curve[-1][1] if curve else float("nan")
    return LoopOutcome(step, curve, final, time.perf_counter() - start, tokens, str(device))


def evaluate_loss(model, examples: Sequence[Example], batch_size: int, pad_id: int,
                  device: torch.device) -> float:
    """Mean loss per target token over all examples (no dropout, no gradients)."""
    import torch

    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            ids, labels = collate([examples[i] for i in order[start:start + batch_size]], pad_id, device)
            with autocast(device):
                loss, n = masked_loss(model, ids, labels)
            total, count = total + float(loss) * n, count + n
    model.train(was_training)
    return total / max(count, 1)
