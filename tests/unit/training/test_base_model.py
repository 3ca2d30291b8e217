"""The offline base model: tokenizer round-trips, masked loss, batching, the build and its failure modes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lifecycle.files import sha256_file
from lifecycle.prompting import INTENT_V1
from training.base_model import BaseModelConfig, build_base_model
from training.loop import IGNORE, collate, encode_pairs, length_grouped_batches, lr_factor, masked_loss

REPO = Path(__file__).resolve().parents[3]


def test_build_lowers_the_loss_and_writes_a_loadable_folder(tiny_base_model):
    folder, info = tiny_base_model
    assert info.loss_curve[0][1] > 3 * info.loss_curve[-1][1]
    assert info.steps == 80 and info.train_loss == info.loss_curve[-1][1]
    assert info.weights_sha256 == sha256_file(folder / "model.safetensors")
    assert set(info.files) >= {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert info.tokens_per_s > 0 and info.device == "cpu" and info.prompt_format == INTENT_V1.identity
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) == info.n_params
    assert not list(folder.parent.glob(".*tmp*")), "the temporary folder was left behind"


def test_every_label_and_the_stop_string_round_trip(tiny_base_model):
    """Byte-level BPE: even labels the tokenizer never saw decode back to themselves."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base_model[0], local_files_only=True)
    labels = json.loads((REPO / "data/banking77/categories.json").read_text())
    for text in [*labels, INTENT_V1.stop, "Où est ma carte? 💳"]:
        context, target = INTENT_V1.training_text("hi", text)
        assert tok.decode(tok.encode(target, add_special_tokens=False)) == target
    assert len(tok.encode(INTENT_V1.stop, add_special_tokens=False)) == 1
    assert tok.pad_token_id != tok.eos_token_id


def test_same_config_same_weights_even_under_a_time_cap_that_does_not_bind(
        tiny_base_model, tiny_before_pairs, tiny_base_config, tmp_path):
    capped = tiny_base_config.model_copy(update={"max_seconds": 600.0})
    info = build_base_model(tiny_before_pairs, tmp_path / "again", capped, device="cpu")
    assert info.weights_sha256 == tiny_base_model[1].weights_sha256


def test_context_is_masked_and_padding_does_not_leak(tiny_base_model, tiny_before_pairs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_base_model[0]
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    examples = encode_pairs(tok, tiny_before_pairs[:8], INTENT_V1, max_length=192)
    ids, labels = collate(examples, tok.pad_token_id, "cpu")
    for row, e in enumerate(examples):
        assert (labels[row, : e.n_context] == IGNORE).all() and (labels[row, len(e.ids):] == IGNORE).all()
        target = tok.decode(list(e.ids[e.n_context:]))
        assert target == f" {tiny_before_pairs[row].completion}\n"
    with torch.no_grad():
        batch_loss, n = masked_loss(model, ids, labels)
        alone = [masked_loss(model, *collate([e], tok.pad_token_id, "cpu")) for e in examples]
    per_token = sum(float(loss) * k for loss, k in alone) / sum(k for _, k in alone)
    assert n == sum(k for _, k in alone)
    assert float(batch_loss) == pytest.approx(per_token, rel=1e-4)


def test_long_prompts_lose_their_start_not_their_target(tiny_base_model):
    from transformers import AutoTokenizer

    from lifecycle.data import Pair

    tok = AutoTokenizer.from_pretrained(tiny_base_model[0], local_files_only=True)
    [e] = encode_pairs(tok, [Pair(prompt="card " * 300, completion="card_arrival")], INTENT_V1, max_length=48)
    # The context serving keeps (serving.backend: the window less the answer's budget), not more.
    assert e.n_context == 48 - INTENT_V1.max_new_tokens
    assert tok.decode(list(e.ids[e.n_context:])) == " card_arrival\n"
    assert tok.decode(list(e.ids[: e.n_context])).endswith("### Intent:")


def test_a_special_token_typed_in_a_prompt_is_text_in_training_and_serving(tiny_base_model):
    """A user who types "<|eos|>" must not end the context with the control token (in training or when served)."""
    from transformers import AutoTokenizer

    from lifecycle.data import Pair
    from serving.backend import InProcessBackend

    tok = AutoTokenizer.from_pretrained(tiny_base_model[0], local_files_only=True)
    prompt = f"where is my card {tok.eos_token} and {tok.pad_token}"
    [e] = encode_pairs(tok, [Pair(prompt=prompt, completion="card_arrival")], INTENT_V1, max_length=192)
    context = list(e.ids[:e.n_context])
    assert tok.eos_token_id not in context and tok.pad_token_id not in context
    backend = InProcessBackend(tiny_base_model[0], INTENT_V1, threads=1, device="cpu", adapter_mode="unmerged")
    [gen] = backend.generate([prompt], [None])
    assert gen.prompt_tokens == len(context)  # the same tokens as in training


def test_length_grouped_batches_cover_each_row_once_with_little_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 100) for _ in range(1000)]
    batches = length_grouped_batches(lengths, 32, random.Random(1))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(lengths)
    assert batches != length_grouped_batches(lengths, 32, random.Random(2))


@pytest.mark.parametrize(("progress", "expected"), [(0.0, 0.0), (0.05, 0.5), (0.1, 1.0), (0.55, 0.55), (1.0, 0.1)])
def test_lr_warms_up_then_decays_to_the_floor(progress, expected):
    """Warmup 10 %: half-way through it, half the peak; cosine mid-point 0.1 + 0.9 / 2; the floor at the end."""
    assert lr_factor(progress, warmup_ratio=0.1, min_ratio=0.1) == pytest.approx(expected)


def test_time_cap_stops_early(tiny_before_pairs, tiny_base_config, tmp_path):
    config = tiny_base_config.model_copy(update={"max_steps": 100_000, "max_seconds": 0.5})
    info = build_base_model(tiny_before_pairs, tmp_path / "capped", config, device="cpu")
    assert 0 < info.steps < 100_000


def test_existing_folder_and_empty_data_are_refused(tiny_base_model, tiny_before_pairs, tiny_base_config):
    with pytest.raises(FileExistsError, match="already exists"):
        build_base_model(tiny_before_pairs, tiny_base_model[0], tiny_base_config, device="cpu")
    with pytest.raises(ValueError, match="at least one"):
        build_base_model([], tiny_base_model[0].parent / "new", tiny_base_config, device="cpu")


def test_a_crash_leaves_nothing_half_written(tiny_before_pairs, tiny_base_config, tmp_path):
    def boom(step, total, loss):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        build_base_model(tiny_before_pairs, tmp_path / "base", tiny_base_config, progress=boom, device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_yaml_is_the_default_config_and_bad_shapes_say_what_to_change(tmp_path):
    assert BaseModelConfig.from_yaml(REPO / "configs/base_model.yaml") == BaseModelConfig()
    with pytest.raises(ValueError, match="multiple of num_heads"):
        BaseModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="lower max_length or raise max_positions"):
        BaseModelConfig(max_length=300, max_positions=256)
    with pytest.raises(ValueError, match="unknown prompt format"):
        BaseModelConfig(prompt_format="nope@123")
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden_size: 128\nhiden_layers: 3\n")
    with pytest.raises(ValueError, match="hiden_layers"):
        BaseModelConfig.from_yaml(bad)
