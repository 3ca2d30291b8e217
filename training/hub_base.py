"""Is a downloaded Hub folder a base the in-process backend and the LoRA trainer can use? Checked before v1.

What the rest of the code assumes about a base, and where a Hub model can differ from the offline one:

- a causal LM transformers knows natively (``AutoModelForCausalLM`` without ``trust_remote_code``, which this
  project never passes), with ``max_position_embeddings`` (the trainer reads it to cap a row);
- safetensors weights: serving's fused mode rereads base layers from them when the champion changes;
- a tokenizer with an eos token: a tokenizer without a pad token (SmolLM2's base has none) is padded with eos,
  by serving and by the trainer alike;
- the prompt format's completions survive tokenization: every label, written as the model must generate it
  (``completion_prefix + label + stop``), decodes back to itself, so no label is lost to unknown tokens;
- a context window longer than the prompt budget: serving keeps the last ``window - max_new_tokens`` prompt tokens.

Weights in bf16 (SmolLM2 stores bf16) load as bf16: transformers 5 keeps a checkpoint's dtype. That works on CPU
and GPU; it is recorded (``dtype``) so a slow CPU run can be explained.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import Field

from lifecycle.prompting import PromptFormat
from lifecycle.records import Frozen


class HubBaseError(ValueError):
    """The folder is not a base model this project can train and serve; the message says why."""


class HubBaseInfo(Frozen):
    """What was checked about a Hub base, recorded in v1's lineage recipe."""

    model_id: str = Field(description="hf://OWNER/NAME")
    revision: str = Field(description="the commit sha")
    path: Path
    model_type: str
    n_params: int
    dtype: str = Field(description="dtype of the stored weights, which transformers 5 loads as is")
    max_positions: int
    tokenizer_max_length: int
    pad_is_eos: bool = Field(description="the tokenizer has no pad token: eos pads (serving and training)")
    stop_is_one_token: bool = Field(description="the prompt format's stop string is one token (else stop_strings)")
    prompt_format: str
    wall_seconds: float = Field(default=0.0, description="download + checks")


#: Config fields by which a causal LM's forward changes its logits after the output head (Gemma 2/3's soft cap,
#: Cohere's scale, Granite's divisor): neutral values (None, 1, False) pass.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def check_base_folder(folder: Path, fmt: PromptFormat, labels: Iterable[str], *, model_id: str,
                      revision: str) -> HubBaseInfo:
    """Raise :class:`HubBaseError` naming the first broken assumption; else describe the base."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    folder = Path(folder)
    where = f"{model_id}@{revision[:12]}"
    if not (folder / "config.json").is_file():
        raise HubBaseError(f"{where} has no config.json: not a transformers model repository")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (ValueError, KeyError, OSError) as exc:
        raise HubBaseError(f"{where}: transformers cannot read its config ({exc}); models that need "
                           "trust_remote_code are not supported") from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise HubBaseError(f"{where} is a {config.model_type!r} model, not a causal LM transformers knows "
                           "(AutoModelForCausalLM); pick a decoder-only model such as SmolLM2 or Qwen2.5")
    # The trainer's loss reads the output head directly (training.loop.masked_loss): a model whose forward rescales
    # or caps its logits after the head would be trained on another objective than the one it is served with.
    rescaled = [f"{name}={value}" for name in LOGIT_TRANSFORMS
                if (value := getattr(config, name, None)) not in (None, 1, 1.0, False)]
    if rescaled:
        raise HubBaseError(f"{where}: its logits are transformed after the output head ({', '.join(rescaled)}), "
                           "which the LoRA trainer's loss does not apply; pick a model without it (SmolLM2, Qwen2.5)")
    positions = getattr(config, "max_position_embeddings", None)
    if not positions:
        raise HubBaseError(f"{where}: its config has no max_position_embeddings, which the LoRA trainer reads")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise HubBaseError(f"{where} has no .safetensors weights (only .bin?): serving's fused mode rereads base "
                           "layers from safetensors; pick a revision that has them")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise HubBaseError(f"{where}: its tokenizer has neither a pad nor an eos token; batches cannot be padded")
    _check_labels(tokenizer, fmt, labels, where)
    window = min(positions, tokenizer.model_max_length or positions)
    if window <= fmt.max_new_tokens + 32:
        raise HubBaseError(f"{where}: a context window of {window} tokens leaves no room for a prompt")
    stop = tokenizer.encode(fmt.stop, add_special_tokens=False)
    dtype = str(getattr(config, "dtype", None) or "float32").removeprefix("torch.")
    return HubBaseInfo(model_id=model_id, revision=revision, path=folder, model_type=config.model_type,
                       n_params=_count_params(weights), dtype=dtype,
                       max_positions=positions, tokenizer_max_length=min(tokenizer.model_max_length, 2**31 - 1),
                       pad_is_eos=tokenizer.pad_token_id is None,
                       stop_is_one_token=len(stop) == 1 and tokenizer.decode(stop) == fmt.stop,
                       prompt_format=fmt.identity)


def _check_labels(tokenizer, fmt: PromptFormat, labels: Iterable[str], where: str) -> None:
    """Each completion must decode to exactly what was encoded, or the model cannot spell that label."""
    broken = []
    for label in labels:
        target = f"{fmt.completion_prefix}{label}{fmt.stop}"
        if tokenizer.decode(tokenizer.encode(target, add_special_tokens=False)) != target:
            broken.append(label)
    if broken:
        raise HubBaseError(f"{where}: its tokenizer cannot write {len(broken)} label(s) back exactly, e.g. "
                           f"{broken[:3]}; the model could never answer them")


def _count_params(weights: list[Path]) -> int:
    """Parameters from the safetensors headers, without loading the weights."""
    from safetensors import safe_open

    total = 0
    for file in weights:
        with safe_open(file, "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                n = 1
                for dim in handle.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total
