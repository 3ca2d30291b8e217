"""training.hub_base: what a Hub folder must be for the backend and the LoRA trainer, checked before v1."""

from __future__ import annotations

import json
import shutil

import pytest

from lifecycle.prompting import INTENT_V1
from tests.conftest import BEFORE_INTENTS
from training.hub_base import HubBaseError, check_base_folder

SHA = "a" * 40


def _check(folder, labels=BEFORE_INTENTS):
    return check_base_folder(folder, INTENT_V1, labels, model_id="hf://acme/tiny", revision=SHA)


def test_the_tiny_base_passes_and_is_described(tiny_base_model):
    folder, built = tiny_base_model
    info = _check(folder)
    assert info.n_params == built.n_params and info.model_type == "llama" and info.dtype == "float32"
    assert info.stop_is_one_token and not info.pad_is_eos and info.prompt_format == INTENT_V1.identity


def test_what_the_backend_or_trainer_cannot_use_is_refused(tiny_base_model, tmp_path):
    folder = shutil.copytree(tiny_base_model[0], tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "t5", "architectures": ["T5Model"]}))
    with pytest.raises(HubBaseError, match="not a causal LM"):
        _check(folder)
    (folder / "config.json").write_text(json.dumps(config))
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(HubBaseError, match="no .safetensors weights"):
        _check(folder)
    (folder / "config.json").unlink()
    with pytest.raises(HubBaseError, match="no config.json"):
        _check(folder)


@pytest.mark.parametrize(("field", "value"), [("final_logit_softcapping", 30.0), ("logit_scale", 0.0625),
                                             ("logits_scaling", 8.0)])
def test_a_model_that_transforms_its_logits_after_the_head_is_refused(tiny_base_model, tmp_path, field, value):
    """Gemma 2's soft cap, Cohere's scale, Granite's divisor: the trainer's loss reads the head directly, so it would
    train another objective than the one served."""
    folder = shutil.copytree(tiny_base_model[0], tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(HubBaseError, match=f"{field}={value}"):
        _check(folder)
    (folder / "config.json").write_text(json.dumps({**config, field: None}))
    _check(folder)  # a neutral value passes
