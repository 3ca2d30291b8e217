"""The in-process backend: one base model, several LoRA adapters on top, batched greedy generation.

This is the only code that loads a model version and generates with it; the benchmark and the gateway
both call it, so what was benchmarked is what is served.

Four ways to serve several versions of one base model (``adapter_mode``):

- "fused": one copy of the base weights, with the *home* version — the one that served most of the recent
  rows, i.e. the champion — merged into them, so a batch of home rows costs exactly one plain model. Every
  other version is a low-rank delta applied only to its own rows, inside each targeted Linear, in the SAME
  ``generate`` call as the home rows: for a version v and home h, W_v - W_h = B_v·s_v·A_v - B_h·s_h·A_h is
  itself a LoRA of rank r_v + r_h (A = [A_v; A_h], B = [B_v·s_v, -B_h·s_h]). A batch of home rows only does
  no delta work at all; the other rows, placed after the home rows so they form one block (a view, not a
  gather), take two small matmuls per targeted layer, added back in place (a 0/1 column mask sorts several
  other versions apart). Memory: one base plus the factors.
  When the traffic's majority moves (a promotion), the home moves with it: the old home's layers are reread
  from the base checkpoint (exact, no drift from repeated merge/unmerge) and the new home is merged in.
  Greedy answers equal each version served alone except where float rounding (merged weights against a
  low-rank delta) flips an argmax: none in the tests' prompts. Linear LoRA layers only (no DoRA, LoRA bias,
  embedding LoRA or ``modules_to_save``): load those in "unmerged" mode.
- "auto" (the default): fused, plus a merged copy of each version while the copies fit in
  ``merged_memory_limit_mb``: a batch holding one non-home version only (what a lone caller sends) then runs
  through its plain copy. A mixed batch takes the cheapest of three ways, by thresholds measured on the
  1.2M-parameter demo model (CPU, 1 thread, CPU time per batch, the same rows every way; bench/RESULTS.md
  "Two live versions"):
  * stacked, on models of at most ``stack_max_params`` parameters (default ``STACK_MAX_PARAMS``, 4M): when every
    version of the batch has full weights (the home, or a merged copy) and padding its version groups to equal
    size adds at most ``STACK_MAX_PADDING`` (15 %) of its rows (each group is padded with repeats of its own last
    row, whose answers are dropped), one pass in which every Linear the versions' adapters touch is ONE batched
    matmul over the versions' stacked weights, each group of rows on its own (serving.fused_lora): one call where
    the fused delta takes five. Stacked / fused: 0.87-0.93 at 2+2 to 16+16 rows, 0.92-0.96 with 9-14 % padding
    (6+5, 5+4, 4+3, 9+7), 0.98-1.02 at 17-25 % (7+5, 3+2, 5+3). Batches of up to ``stack_max_rows`` rows (default
    ``STACK_MAX_ROWS``, 32: the gateway's whole batch); stacked / split, Intel Xeon VM (bench/mixed_batches.py
    --compare bigstack): 0.83-0.91 at 9+8, 10+10 and 12+12, 0.90-0.95 at 16+15, 15+16, 16+16 and 14+17 (an AMD
    EPYC VM measured the split ahead from 12+12, under load). It reads every version's weights, so it pays only
    where calls, not weight reads, are the cost: small models (bench/mixed_batches.py --compare stack, random init
    models of 2.2-12.2M parameters: 2+2 and 4+4 groups 0.92-0.96 at 2.2M, 0.97 at 3.6M, 1.04-1.15 from 8.2M; 8+8
    0.76-0.91 at every size, against the split; bench/RESULTS.md). Memory: per set of versions served together, one
    more copy of each version's adapted layers (the stacks, kept until the home or the set of versions changes),
    counted with the merged copies in ``merged_memory_limit_mb``: a stack that would not fit is not built, and the
    batch takes the fused pass.
    Groups that need more padding — up to ``stack_max_decode_padding`` (default ``STACK_MAX_DECODE_PADDING``, half
    the rows) and ``stack_max_decode_rows`` (default ``STACK_MAX_DECODE_ROWS``, 16; nor ``stack_max_rows``) rows a
    step — are stacked in their decode steps only (``_decode_stacked``, a greedy loop of our own: ``generate`` keeps
    one batch for every step): the prompts are read in one fused pass of the rows themselves, the prompt cache is
    copied out to the padded layout once, and each step is stacked, where a padding row costs next to nothing.
    Against the fused pass, CPU per batch (bench/mixed_batches.py: same rows, 8 batches a shape, min of 3): 0.94 at
    3+1 and 1+3, 0.91 at 2+1, 0.94 at 5+3 and 5+2, 0.97 at 6+2; at 7+1, 12+4 and 14+2 (75 % padding, or more than
    16 rows a step) 1.02-1.06, hence the limits. Up to 32 rows a step (``--compare decoderows``, 12+6 to 16+8):
    0.94-0.99 on an Intel Xeon VM (one run), 0.94-1.00 on an AMD EPYC VM (means of 2-3 runs; identical-path shapes
    read 0.95-1.02): no gain this probe can tell from its noise, so 16 stands. Only on models of at most
    ``stack_max_decode_params`` (default ``STACK_MAX_DECODE_PARAMS``, 2M): 0.96-1.02 at 2.2M parameters, 1.06-1.17
    at 3.6M, 1.07-1.19 at 8.2M, 1.22-1.31 at 12.2M.
    It needs one-token stops (``_single_token_stops``); with a multi-token stop string such groups take the fused
    pass;
  * split, when the batch has more than ``stack_max_rows`` rows or cannot stack: each non-home version with
    a copy and at least ``split_min_rows`` rows (default ``SPLIT_MIN_ROWS``, 8) on its copy, the rest (at least
    as many rows; the home's) on the base, one ``generate`` each. Split / fused: 1.18 for 4 + 4 rows, 1.03-1.09
    for 4-6 + 6-8, 0.96-0.97 at 8 + 8, 0.80-0.93 from 12 + 10 (stacked there: 0.87-0.96);
  * fused: the rest (groups too unequal for either stacking, more than ``stack_max_rows`` rows that cannot split,
    the bare base beside a home, no copies).
  Over the memory limit it is plain fused. Through the micro-batcher (bench/two_versions_bench.py) tokens/s
  against one merged model: see bench/RESULTS.md; two weight sets in turn cost 1-6 % even at concurrency 1,
  and a fused pass of a small mixed batch costs 7-22 % more per step than a plain one on a model this small
  (per-call overhead, not FLOPs).
- "merged": each adapter merged into its own copy of the base weights (a plain model per version). A batch is
  split by version, each group its own ``generate`` call: on a tiny model the per-step overhead, not the
  FLOPs, dominates, so a mixed batch costs nearly two batches (0.68-0.94x one model), and every version costs
  one full model of memory. Kept as the reference the fused mode is tested against.
- "unmerged": one base model with every adapter on top through peft; batches mixing adapters go through
  peft's per-row ``adapter_names`` path ("__base__" for rows without an adapter). One model of memory, any
  adapter peft supports; the slowest (0.28-0.55x on the demo model: peft's per-layer Python overhead).

torch, transformers and peft are imported inside the methods: ``import serving.backend`` stays fast.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from lifecycle.prompting import PromptFormat
from lifecycle.records import Frozen
from serving.fused_lora import FusedLora, lora_factors, quiet_peft

BASE_ADAPTER = "__base__"
AdapterMode = Literal["fused", "merged", "unmerged", "auto"]
#: Auto mode: a mixed batch runs as plain passes on the merged copies when every pass gets at least this many
#: rows, else as one fused pass. Measured on the demo model, CPU (module docstring, "auto"): the smallest group
#: size at which the split won in every measured batch shape; 4-6 lost in some.
SPLIT_MIN_ROWS = 8
#: Auto mode: a mixed batch of up to STACK_MAX_ROWS rows (the gateway's whole batch) runs as one stacked pass (module
#: docstring) on models of at most STACK_MAX_PARAMS parameters, when padding its version groups to equal size adds at
#: most STACK_MAX_PADDING of its rows; bigger batches split first where they can. Measured on the demo model (module
#: docstring, "auto"). STACK_MAX_ROWS was 16 until 2026-11-28, set by session 6's measurement on an AMD EPYC VM
#: (split beat stacking at 12+12 and 16+16, with another benchmark on the other core); re-measured quiet on an Intel
#: Xeon VM, stacking beats the split at every shape from 9+8 to 16+16 (bench/RESULTS.md, session 14).
STACK_MAX_PARAMS = 4_000_000
STACK_MAX_PADDING = 0.15
STACK_MAX_ROWS = 32
#: Auto mode: a small mixed batch whose groups need more padding than STACK_MAX_PADDING, up to this share of its
#: rows (and STACK_MAX_DECODE_ROWS rows a step, padding included), reads its prompts in one fused pass and runs only
#: its decode steps stacked (``_decode_stacked``): a padded row costs a whole prompt's work in the first, next to
#: nothing in the second.
#: Measured on the demo model (module docstring); only on models of at most STACK_MAX_DECODE_PARAMS parameters
#: (random-init models: break-even at 2.2M, a loss from 3.6M).
STACK_MAX_DECODE_PADDING = 0.5
STACK_MAX_DECODE_PARAMS = 2_000_000
STACK_MAX_DECODE_ROWS = 16


def merged_model(base_dir: Path, adapter_dir: Path, device="cpu") -> object:
    """A plain model: the base from ``base_dir`` with the LoRA adapter in ``adapter_dir`` merged into its weights.

    A base whose output head shares the input embedding (tied, as SmolLM2's) is untied first: merging would fold
    the head's delta into the shared matrix and so change the input embedding too (by up to 0.55 on a tiny tied
    test model), while training and peft's unmerged forward apply it to the head only.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True).to(device)
    head, embed = base.get_output_embeddings(), base.get_input_embeddings()
    if head is not None and embed is not None and head.weight is embed.weight:
        head.weight = torch.nn.Parameter(embed.weight.detach().clone(), requires_grad=False)
        base.config.tie_word_embeddings = False  # saved copies stay untied too
    with quiet_peft():
        wrapped = PeftModel.from_pretrained(base, adapter_dir, torch_device=str(device))
    return neutral_generation(wrapped.merge_and_unload().to(device))


def neutral_generation(model):
    """``model`` with transformers' default generation settings instead of its folder's generation_config.json,
    whose logits processors (a Hub instruct model's repetition_penalty, no_repeat_ngram_size, suppress_tokens, ...)
    model.generate would apply but the stacked decode (a plain argmax) and training would not: the same row would
    answer otherwise by the path its batch took. Serving is greedy and nothing else; every call passes its own
    budget, stops and padding. The special tokens stay (a row still ends at the model's end-of-sequence token)."""
    from transformers import GenerationConfig

    shipped = model.generation_config
    model.generation_config = GenerationConfig(**{k: getattr(shipped, k, None) for k in (
        "bos_token_id", "eos_token_id", "pad_token_id")})
    return model


def _by_version(adapters: Sequence[str | None], rows: Iterable[int]) -> dict[str | None, list[int]]:
    """``rows`` (positions into ``adapters``) grouped by the version each asks for, every group in ``rows``' order."""
    groups: dict[str | None, list[int]] = {}
    for j in rows:
        groups.setdefault(adapters[j], []).append(j)
    return groups


class Generation(Frozen):
    text: str = Field(description="the raw decoded continuation, up to and including the stop string")
    completion: str = Field(description="prompt_format.parse(text)")
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float = Field(description="wall time of the batch this row was generated in, all its passes "
                                          "(fused, auto, unmerged), or of the whole generate call (merged mode: "
                                          "what a caller in it waited)")
    adapter: str | None = Field(description="adapter name, None for the bare base model")
    finish_reason: Literal["stop", "length"] = Field(
        default="stop", description="'length' when the answer took the whole token budget without a stop token")
    clipped: str | None = Field(default=None, description="a client's max_tokens below the answer's length: "
                                "prompt_format.parse of its first max_tokens tokens (what that client is sent; "
                                "text and completion stay whole, as they are judged and logged)")


class InProcessBackend:
    """Thread-safe: one lock serializes model use (a 1-thread CPU model gains nothing from overlap).

    ``mode`` is the resolved adapter mode, "fused", "merged" or "unmerged" (see the module docstring).
    """

    def __init__(self, base_dir: Path, prompt_format: PromptFormat, threads: int = 1,
                 device: str | None = None, adapter_mode: AdapterMode = "auto",
                 merged_memory_limit_mb: float = 2048, split_min_rows: int | None = SPLIT_MIN_ROWS,
                 stack_max_params: int | None = STACK_MAX_PARAMS,
                 stack_max_decode_padding: float = STACK_MAX_DECODE_PADDING,
                 stack_max_decode_params: int | None = STACK_MAX_DECODE_PARAMS,
                 stack_max_rows: int = STACK_MAX_ROWS, stack_max_decode_rows: int = STACK_MAX_DECODE_ROWS) -> None:
        if adapter_mode not in ("fused", "merged", "unmerged", "auto"):
            raise ValueError(f"adapter_mode must be 'fused', 'merged', 'unmerged' or 'auto', got {adapter_mode!r}")
        if split_min_rows is not None and split_min_rows < 1:
            raise ValueError(f"split_min_rows must be at least 1 (or None: never split), got {split_min_rows}")
        for setting, value, off in (("stack_max_rows", stack_max_rows, "stack_max_params=None turns stacking off"),
                                    ("stack_max_decode_rows", stack_max_decode_rows,
                                     "stack_max_decode_padding=0 turns decode-only stacking off")):
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"{setting} must be a whole number of rows, at least 2 (two versions, a row each; "
                                 f"{off}), got {value!r}")
        if not stack_max_decode_padding >= 0:
            raise ValueError(f"stack_max_decode_padding must be a share of a batch's rows, 0 or more (0: never "
                             f"stack the decode steps alone), got {stack_max_decode_padding}")
        base_dir = Path(base_dir)
        if not (base_dir / "config.json").is_file():
            raise FileNotFoundError(f"base model folder {base_dir} does not exist or has no config.json; "
                                    "build or download the base model first")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.base_dir, self.prompt_format, self.threads = base_dir, prompt_format, threads
        self.split_min_rows, self.stack_max_padding = split_min_rows, STACK_MAX_PADDING
        self.stack_max_decode_padding, self.stack_max_rows = stack_max_decode_padding, stack_max_rows
        self.stack_max_decode_rows = stack_max_decode_rows
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._lock = threading.Lock()
        self._set_threads()
        # Left padding: every row's last prompt token sits at the end, where generation continues.
        self.tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True,
                                                       padding_side="left", truncation_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._model = neutral_generation(AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True))
        self._model.to(self.device).eval()
        self._peft = None
        self._adapters: dict[str, Path] = {}
        self._merged: dict[str, object] = {}  # merged mode: adapter name -> its own plain merged model
        self.mode: Literal["fused", "merged", "unmerged"] = "fused" if adapter_mode == "auto" else adapter_mode
        self._fused = FusedLora(self._model, base_dir) if self.mode == "fused" else None
        # "auto" also keeps a merged copy per version while the copies fit in merged_memory_limit_mb: a batch of
        # one non-home version then runs plain (what a lone caller sends), mixed batches still run fused.
        self._param_bytes = sum(p.numel() * p.element_size() for p in self._model.parameters())
        self._copy_budget_mb = merged_memory_limit_mb if adapter_mode == "auto" else 0.0
        n_params = sum(p.numel() for p in self._model.parameters())
        self._stack = adapter_mode == "auto" and stack_max_params is not None and n_params <= stack_max_params
        # Decode-only stacking loses on bigger models (module docstring): off above stack_max_decode_params.
        self._stack_decode = self._stack and stack_max_decode_params is not None and n_params <= stack_max_decode_params
        self._stop_ids = self._single_token_stops()
        # _decode_stacked calls the model itself, with these (and needs one-token stops too).
        accepts = set(inspect.signature(self._model.forward).parameters)
        self._forward_takes_cache = {"cache", "position_ids", "logits_to_keep"} <= accepts
        positions = getattr(self._model.config, "max_position_embeddings", None) or 2048
        window = min(positions, self.tokenizer.model_max_length or positions)
        self._max_prompt_tokens = window - prompt_format.max_new_tokens

    @property
    def home(self) -> str | None:
        """Fused mode: the version merged into the base weights (None: the bare base, or another mode)."""
        return self._fused.home if self._fused is not None else None

    def _set_threads(self) -> None:
        import torch

        # Per call, not once: OpenMP thread counts are per OS thread, and the gateway calls from several.
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)

    def _single_token_stops(self) -> list[int] | None:
        """Token ids that end a row: eos, plus the stop string when it is one token (cheapest check)."""
        ids = self.tokenizer.encode(self.prompt_format.stop, add_special_tokens=False)
        if len(ids) != 1 or self.tokenizer.decode(ids) != self.prompt_format.stop:
            return None
        eos = self.tokenizer.eos_token_id
        return ids + ([eos] if eos is not None and eos != ids[0] else [])

    def _build_merged(self, adapter_dir: Path) -> object:
        """A plain model with the adapter merged into a fresh copy of the base weights (fused mode's own base may
        hold its home version)."""
        return merged_model(self.base_dir, adapter_dir, self.device).eval()

    def _attach_unmerged(self, name: str, adapter_dir: Path) -> None:
        from peft import PeftModel

        with quiet_peft():
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self._model, adapter_dir, adapter_name=name,
                                                       torch_device=str(self.device))
                self._peft.eval()
            else:
                self._peft.load_adapter(adapter_dir, adapter_name=name, torch_device=str(self.device))

    def load_adapter(self, name: str, adapter_dir: Path) -> None:
        adapter_dir = Path(adapter_dir)
        if not name or name == BASE_ADAPTER:
            raise ValueError(f"adapter name {name!r} is reserved or empty; choose another name")
        if not (adapter_dir / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter_dir} is not a PEFT adapter folder (no adapter_config.json)")
        with self._lock:
            if name in self._adapters:
                raise ValueError(f"adapter {name!r} is already loaded (from {self._adapters[name]}); "
                                 "unload it first or use another name")
            if self.mode == "fused":
                self._fused.add(name, lora_factors(self._model, adapter_dir, self.device))
                if self._param_bytes * (len(self._merged) + 2) / 2**20 <= self._copy_budget_mb:
                    self._merged[name] = self._build_merged(adapter_dir)
            elif self.mode == "merged":
                self._merged[name] = self._build_merged(adapter_dir)
            else:
                self._attach_unmerged(name, adapter_dir)
            self._adapters[name] = adapter_dir

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self._adapters:
                raise KeyError(f"adapter {name!r} is not loaded; loaded: {sorted(self._adapters)}")
            if self.mode == "fused":
                self._fused.remove(name)  # the home goes back to the bare base first if it was this one
                self._merged.pop(name, None)
            elif self.mode == "merged":
                del self._merged[name]  # its copy of the weights goes with it
            elif len(self._adapters) == 1:
                # The last adapter: strip the LoRA layers so the base runs bare again.
                self._model = self._peft.unload()
                self._peft = None
            else:
                self._peft.delete_adapter(name)
            del self._adapters[name]

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._adapters)

    def peak_memory_mb(self) -> float:
        """The CUDA allocator's peak on a GPU, else this process's peak resident memory."""
        if self.device.type == "cuda":
            import torch

            return torch.cuda.max_memory_allocated(self.device) / 2**20
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

    def generate(self, prompts: Sequence[str], adapters: Sequence[str | None],
                 max_batch: int = 64, max_tokens: Sequence[int | None] | None = None) -> list[Generation]:
        """Greedy completions, returned in input order. ``max_tokens``: a limit per row (None: none); a row whose
        answer is longer gets ``clipped`` (every row decodes to the prompt format's budget all the same).

        Rows are batched by prompt length (``max_batch`` at a time) so little compute goes to padding:
        1.5x the throughput of batching in arrival order on BANKING77. A row's answer does not depend
        on its batch-mates (tests check this), only its ``latency_ms`` does.

        In merged mode rows are grouped by version first, each group running through its own plain model,
        and every row's ``latency_ms`` is the wall time of the whole call.
        """
        if len(prompts) != len(adapters):
            raise ValueError(f"{len(prompts)} prompts but {len(adapters)} adapter names; give one per prompt")
        limits = list(max_tokens) if max_tokens is not None else [None] * len(prompts)
        if len(limits) != len(prompts) or any(limit is not None and limit < 1 for limit in limits):
            raise ValueError(f"max_tokens: one limit (1 or more, or None) per prompt, got {max_tokens}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if not prompts:
            return []
        with self._lock:
            unknown = sorted({a for a in adapters if a is not None and a not in self._adapters})
            if unknown:
                raise KeyError(f"adapters {unknown} are not loaded; loaded: {sorted(self._adapters)}")
            self._set_threads()
            # split_special_tokens: a caller's "<|eos|>" or "<|im_start|>" is text, never a control token it could
            # end or restructure the prompt with (training reads it so too).
            encoded = self.tokenizer([self.prompt_format.render(p) for p in prompts], truncation=True,
                                     max_length=self._max_prompt_tokens, add_special_tokens=False,
                                     split_special_tokens=True)["input_ids"]
            order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
            if self.mode == "merged":
                return self._generate_merged(encoded, adapters, order, max_batch, limits)
            results: dict[int, Generation] = {}
            for start in range(0, len(order), max_batch):
                rows = order[start:start + max_batch]  # length-sorted, and so is every pass taken from it
                started, new = time.perf_counter(), {}
                for part in self._passes([adapters[i] for i in rows]):
                    members = [rows[j] for j in part]
                    ids = self._generate_ids([encoded[i] for i in members], [adapters[i] for i in members])
                    new.update(zip(members, ids, strict=True))
                latency_ms = (time.perf_counter() - started) * 1000  # every row waits for all the batch's passes
                results.update((i, self._row(new[i], encoded[i], adapters[i], latency_ms, limits[i])) for i in rows)
            if self._fused is not None:
                self._fused.observe(adapters)  # may move the home, between calls
        return [results[i] for i in range(len(prompts))]

    def _generate_merged(self, encoded: list[list[int]], adapters: Sequence[str | None], order: list[int],
                         max_batch: int, limits: list[int | None]) -> list[Generation]:
        """Merged mode, under the lock: one plain batch stream per version, results in input order."""
        import torch

        started = time.perf_counter()
        groups = _by_version(adapters, order)  # ``order`` is length-sorted, so each group stays length-sorted
        outputs: dict[int, list[int]] = {}
        for adapter, members in groups.items():
            model = self._model if adapter is None else self._merged[adapter]
            for start in range(0, len(members), max_batch):
                rows = members[start:start + max_batch]
                enc = self.tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, padding=True,
                                         return_tensors="pt").to(self.device)
                with torch.inference_mode():
                    output = model.generate(**enc, **self._generate_kwargs())
                outputs.update(zip(rows, output[:, enc["input_ids"].shape[1]:].tolist(), strict=True))
        latency_ms = (time.perf_counter() - started) * 1000
        return [self._row(outputs[i], encoded[i], adapters[i], latency_ms, limits[i]) for i in range(len(encoded))]

    def _row(self, new_ids: list[int], prompt_ids: list[int], adapter: str | None, latency_ms: float,
             limit: int | None = None) -> Generation:
        ids = new_ids[: self._completion_length(new_ids)]
        clipped = (self.prompt_format.parse(self.tokenizer.decode(ids[:limit], skip_special_tokens=True))
                   if limit is not None and len(ids) > limit else None)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        # Stopped: cut before the pad of a row that ended earlier, at a stop token, or holding the stop string
        # (a multi-token stop); else the row ran through the whole budget.
        stopped = (len(ids) < len(new_ids) or self.prompt_format.stop in text
                   or (self._stop_ids is not None and ids[-1:] and ids[-1] in self._stop_ids))
        return Generation(text=text, completion=self.prompt_format.parse(text), prompt_tokens=len(prompt_ids),
                          completion_tokens=len(ids), latency_ms=latency_ms, adapter=adapter,
                          finish_reason="stop" if stopped or len(ids) < self.prompt_format.max_new_tokens
                          else "length", clipped=clipped)

    def _passes(self, adapters: list[str | None]) -> list[list[int]]:
        """How one batch runs: lists of row positions, one ``generate`` pass each (module docstring, "auto").

        Auto mode (fused with merged copies): a batch that can stack (``_stack_groups``: up to ``stack_max_rows``
        rows) is one pass (``_generate_ids`` stacks it). Otherwise a non-home version with a merged copy and at least
        ``split_min_rows`` rows in the batch runs as its own plain pass when at least ``split_min_rows`` rows
        stay for the rest, which takes one pass (stacked if it can, else fused; plain when only home rows are
        left). Fused and auto mode put the home rows of that pass first, so the other versions' rows are one
        contiguous block (a view for the delta, not a gather). Every other mode: the whole batch, in order, one pass.
        """
        everything = list(range(len(adapters)))
        if self._fused is None or self._stack_groups(adapters) is not None:
            return [everything]
        passes, left, limit = [], len(adapters), self.split_min_rows
        if self._merged and limit is not None and left >= 2 * limit:
            biggest_first = sorted(_by_version(adapters, everything).items(), key=lambda g: -len(g[1]))
            for a, members in biggest_first:
                if a != self.home and a in self._merged and len(members) >= limit and left - len(members) >= limit:
                    passes.append(members)
                    left -= len(members)
        split = {j for members in passes for j in members}
        rest = sorted((j for j in everything if j not in split), key=lambda j: adapters[j] != self.home)  # stable
        return passes + [rest]

    def _stack_groups(self, adapters: Sequence[str | None]) -> dict[str | None, list[int]] | None:
        """The row positions of each version when this batch runs as one stacked pass (home first), else None.

        Auto mode, small models (``stack_max_params``): every version of a mixed batch has full weights (the home,
        or a merged copy), and padding the groups to equal size adds at most ``stack_max_padding`` of the rows (of
        at most ``stack_max_rows``), or at most ``stack_max_decode_padding`` of them and no more than
        ``stack_max_decode_rows`` (nor ``stack_max_rows``) in all when only the decode
        steps will be stacked (``_decode_stacked``: it needs the one-token stops of ``_single_token_stops`` and a
        model forward that takes ``cache``, ``position_ids`` and ``logits_to_keep``, as transformers' causal LMs do).
        """
        if not self._stack:
            return None
        groups = _by_version(adapters, range(len(adapters)))
        if len(groups) < 2 or not all(self._fused.stackable(v, self._merged) for v in groups):
            return None
        padding, rows = self._padding(groups), len(adapters)
        whole = padding <= self.stack_max_padding * rows and rows <= self.stack_max_rows
        # (A batch refused the whole pass for its rows alone is refused this too: more rows a step than it allows.)
        decode_only = (self._stack_decode and self._stop_ids is not None and self._forward_takes_cache
                       and padding <= self.stack_max_decode_padding * rows
                       and rows + padding <= min(self.stack_max_decode_rows, self.stack_max_rows))
        if not (whole or decode_only):
            return None
        ordered = dict(sorted(groups.items(), key=lambda g: (g[0] != self.home, str(g[0]))))
        return ordered if self._stack_fits(list(ordered)) else None

    def _stack_fits(self, versions: list[str | None]) -> bool:
        """The base, the merged copies, the stacks built and the one ``versions`` needs fit in the memory budget
        (``merged_memory_limit_mb``): past it, such batches take the fused pass, which needs no more weights."""
        held = self._param_bytes * (len(self._merged) + 1) + self._fused.stack_bytes()
        return (held + self._fused.stack_bytes(versions)) / 2**20 <= self._copy_budget_mb

    @staticmethod
    def _padding(groups: dict[str | None, list[int]]) -> int:
        """Rows added when every group is padded to the biggest one's size."""
        return len(groups) * max(map(len, groups.values())) - sum(map(len, groups.values()))

    def _generate_ids(self, encoded: list[list[int]], adapters: list[str | None]) -> list[list[int]]:
        """One pass (``generate``, or ``_decode_stacked``): the new token ids of each row, padding and stop tokens
        included.

        A stacked pass lays its version groups out one after the other, each padded to the biggest with repeats of
        its own last row (whose answers are dropped). With little padding the whole pass is stacked; with more, the
        prompts are read in one fused pass of the rows themselves and only the decode steps run stacked.
        """
        import torch

        groups = self._stack_groups(adapters)
        if groups is None:
            layout, context = list(range(len(encoded))), self._adapter_context(adapters)
        else:
            n = max(map(len, groups.values()))
            layout = [j for rows in groups.values() for j in rows + rows[-1:] * (n - len(rows))]
            if self._padding(groups) > self.stack_max_padding * len(encoded):
                return self._decode_stacked(encoded, adapters, groups, layout)
            context = self._stacked_context(list(groups))
        enc = self.tokenizer.pad({"input_ids": [encoded[j] for j in layout]}, padding=True,
                                 return_tensors="pt").to(self.device)
        with torch.inference_mode(), context as (model, kwargs):
            output = model.generate(**enc, **kwargs, **self._generate_kwargs())
        return self._unpad(layout, output[:, enc["input_ids"].shape[1]:].tolist())

    @staticmethod
    def _unpad(layout: list[int], rows: list[list[int]]) -> list[list[int]]:
        """Each row's new ids from a pass laid out as ``layout`` (row positions, a padding row repeating one)."""
        new: dict[int, list[int]] = {}
        for j, ids in zip(layout, rows, strict=True):
            new.setdefault(j, ids)  # a padding row's answer is its original's: the original's is kept
        return [new[j] for j in sorted(new)]  # the layout holds every row position at least once

    def _decode_stacked(self, encoded: list[list[int]], adapters: list[str | None],
                        groups: dict[str | None, list[int]], layout: list[int]) -> list[list[int]]:
        """Greedy decoding, as ``generate`` does it, of a mixed batch whose prompts are read in one fused pass of its
        own rows (home first, each version one block) and whose decode steps run stacked on ``layout``.

        Why not ``generate``: its batch is the same for every step, so padding rows would read their whole prompts
        too. Here the prompt cache is copied out to the padded layout once (a repeated row's keys and values are
        its original's), and each step costs one batched matmul per adapted Linear instead of the fused delta's
        five calls. Positions and masks as ``generate`` makes them (left padding); finished rows get the pad token;
        the loop ends when every row has stopped or after ``max_new_tokens``.
        """
        import torch

        order = [j for rows in groups.values() for j in rows]
        enc = self.tokenizer.pad({"input_ids": [encoded[j] for j in order]}, padding=True,
                                 return_tensors="pt").to(self.device)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 0)
        slot = {j: k for k, j in enumerate(order)}
        index = torch.tensor([slot[j] for j in layout], device=self.device)
        stops = torch.tensor(self._stop_ids, device=self.device)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            with self._adapter_context([adapters[j] for j in order]) as (model, kwargs):
                out = model(**enc, position_ids=positions, use_cache=True, logits_to_keep=1, **kwargs)
            cache, logits = out.cache, out.logits[:, -1].index_select(0, index)
            cache.reorder_cache(index)
            mask, position = mask.index_select(0, index), positions[:, -1:].index_select(0, index)
            ones = mask.new_ones(len(layout), 1)
            running = torch.ones(len(layout), dtype=torch.bool, device=self.device)
            steps = []
            with self._stacked_context(list(groups)) as (model, kwargs):
                for step in range(self.prompt_format.max_new_tokens):
                    token = logits.argmax(-1).masked_fill_(~running, pad)
                    steps.append(token)
                    running &= ~torch.isin(token, stops)
                    if step + 1 == self.prompt_format.max_new_tokens or not running.any():
                        break
                    mask, position = torch.cat([mask, ones], dim=1), position + 1
                    out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, cache=cache,
                                use_cache=True, logits_to_keep=1, **kwargs)
                    logits = out.logits[:, -1]
        return self._unpad(layout, torch.stack(steps, dim=1).tolist())

    @contextlib.contextmanager
    def _stacked_context(self, versions: list[str | None]) -> Iterator[tuple[object, dict[str, object]]]:
        with self._fused.stacked(versions, self._merged):
            yield self._model, {}

    @contextlib.contextmanager
    def _adapter_context(self, adapters: list[str | None]) -> Iterator[tuple[object, dict[str, object]]]:
        """The model to call and its extra kwargs for this batch's adapters.

        Fused mode: the plain model, with the other versions' deltas hooked in for this batch only.
        Unmerged mode: a batch with one adapter (or none) runs as plain LoRA: peft's per-row ``adapter_names``
        path costs ~40 % more on CPU. Mixed batches take the per-row path, "__base__" marking bare rows.
        """
        distinct = set(adapters)
        if self._fused is not None and len(distinct) == 1 and adapters[0] != self.home and adapters[0] in self._merged:
            yield self._merged[adapters[0]], {}  # auto: one non-home version, and its merged copy is there
        elif self._fused is not None:
            with self._fused.applied(adapters):
                yield self._model, {}
        elif self._peft is None:
            yield self._model, {}
        elif distinct == {None}:
            with self._peft.disable_adapter():
                yield self._peft, {}
        elif len(distinct) == 1:
            self._peft.set_adapter(adapters[0], inference_mode=True)
            yield self._peft, {}
        else:
            yield self._peft, {"adapter_names": [a or BASE_ADAPTER for a in adapters]}

    def _generate_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {
            "max_new_tokens": self.prompt_format.max_new_tokens, "do_sample": False,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if self._stop_ids is not None:
            kwargs["eos_token_id"] = self._stop_ids
        else:
            # A multi-token stop string: transformers' string criterion ends rows (and the batch) there.
            kwargs["stop_strings"] = [self.prompt_format.stop]
            kwargs["tokenizer"] = self.tokenizer
        return kwargs

    def _completion_length(self, ids: list[int]) -> int:
        """Generated tokens that belong to the row: through the stop token, or up to the padding."""
        for i, token in enumerate(ids):
            if self._stop_ids is not None and token in self._stop_ids:
                return i + 1
            if token == self.tokenizer.pad_token_id:
                return i
        return len(ids)
