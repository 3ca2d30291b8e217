"""LoRA fine-tuning: it learns, it is reproducible, it continues from an adapter, it refuses bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.lora import LoraRecipe, train_lora

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def recipe() -> LoraRecipe:
    return LoraRecipe(r=4, alpha=8, max_steps=30, batch_size=16, log_every=5, lr=1e-2)


@pytest.fixture(scope="module")
def trained(tiny_base_model, tiny_drifted_pairs, recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "adapter"
    return train_lora(tiny_base_model[0], tiny_drifted_pairs, recipe, out,
                      eval_pairs=tiny_drifted_pairs[:20], threads=1, device="cpu")


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_lora_learns_the_new_intents_and_saves_an_adapter(trained, recipe):
    assert trained.loss_curve[0][1] > 2 * trained.final_loss
    assert trained.steps == 30 and trained.eval_loss is not None and trained.eval_loss < trained.loss_curve[0][1]
    assert (trained.adapter_dir / "adapter_config.json").is_file()
    assert trained.weights_sha256 == trained.files["adapter_model.safetensors"]
    assert not [k for k in _tensors(trained.adapter_dir) if "base_layer" in k], "shared base weights were saved"
    assert trained.hyperparameters == recipe.model_dump(mode="json")
    assert trained.device == "cpu" and trained.tokens_per_s > 0 and trained.wall_seconds > 0


def test_output_head_is_adapted_unless_switched_off(trained, tiny_base_model, tiny_drifted_pairs, recipe, tmp_path):
    targets = json.loads((trained.adapter_dir / "adapter_config.json").read_text())["target_modules"]
    assert targets == sorted(targets)  # as the project writes it (test_the_adapter_folder_does_not_depend_...)
    assert "lm_head" in targets and "q_proj" in targets and "down_proj" in targets
    plain = train_lora(tiny_base_model[0], tiny_drifted_pairs, recipe.model_copy(
        update={"include_output_head": False, "max_steps": 5}), tmp_path / "plain", device="cpu")
    assert "lm_head" not in json.loads((plain.adapter_dir / "adapter_config.json").read_text())["target_modules"]


def test_same_seed_gives_the_same_adapter_bit_for_bit(trained, tiny_base_model, tiny_drifted_pairs, recipe,
                                                       tmp_path):
    import torch

    again = train_lora(tiny_base_model[0], tiny_drifted_pairs, recipe, tmp_path / "again",
                       eval_pairs=tiny_drifted_pairs[:20], device="cpu")
    first, second = _tensors(trained.adapter_dir), _tensors(again.adapter_dir)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert again.loss_curve == trained.loss_curve and again.weights_sha256 == trained.weights_sha256
    other = train_lora(tiny_base_model[0], tiny_drifted_pairs, recipe.model_copy(update={"seed": 1}),
                       tmp_path / "other", device="cpu")
    assert other.weights_sha256 != trained.weights_sha256


def test_the_adapter_folder_does_not_depend_on_the_processs_string_hashing(tmp_path):
    """peft writes target_modules from a set: its order followed PYTHONHASHSEED, so the same training gave folders
    of other hashes in another process. The project sorts it; nothing else changes."""
    from training.lora import _stable_config

    config = tmp_path / "adapter_config.json"
    written = {"r": 4, "target_modules": ["o_proj", "lm_head", "k_proj", "q_proj"], "peft_type": "LORA"}
    config.write_text(json.dumps(written))
    _stable_config(config)
    assert json.loads(config.read_text()) == {**written, "target_modules": ["k_proj", "lm_head", "o_proj", "q_proj"]}
    shuffled = tmp_path / "other.json"
    shuffled.write_text(json.dumps({**written, "target_modules": ["q_proj", "k_proj", "o_proj", "lm_head"]}))
    _stable_config(shuffled)
    assert shuffled.read_bytes() == config.read_bytes()


def test_seeded_dropout_is_reproducible_and_changes_the_adapter(tiny_base_model, tiny_drifted_pairs, recipe, tmp_path):
    # The recipe's dropout is 0 by default since 2026-11-28, so the test above no longer draws any masks: dropout's
    # draws must come from the seeded generator too (same seed, same bits), and be drawn (another adapter than none).
    short = recipe.model_copy(update={"max_steps": 5})
    noisy = short.model_copy(update={"dropout": 0.05})
    runs = [train_lora(tiny_base_model[0], tiny_drifted_pairs, noisy, tmp_path / f"noisy{i}", device="cpu")
            for i in range(2)]
    plain = train_lora(tiny_base_model[0], tiny_drifted_pairs, short, tmp_path / "plain", device="cpu")
    assert runs[0].weights_sha256 == runs[1].weights_sha256
    assert runs[0].weights_sha256 != plain.weights_sha256


def test_continuing_from_an_adapter_starts_where_it_ended(trained, tiny_base_model, tiny_drifted_pairs, recipe,
                                                           tmp_path):
    more = train_lora(tiny_base_model[0], tiny_drifted_pairs, recipe.model_copy(update={"init_from_champion": True}),
                      tmp_path / "more", init_adapter=trained.adapter_dir, device="cpu")
    assert more.loss_curve[0][1] < trained.loss_curve[0][1] / 2
    with pytest.raises(ValueError, match="set the recipe to the adapter's values"):
        train_lora(tiny_base_model[0], tiny_drifted_pairs, recipe.model_copy(update={"r": 8}),
                   tmp_path / "mismatch", init_adapter=trained.adapter_dir, device="cpu")
    # What the adapter was trained on and with is what it goes on with: a recipe that says otherwise is refused,
    # not followed in name only (the lineage records the recipe).
    for change, says in (({"include_output_head": False}, "target_modules"), ({"dropout": 0.1}, "lora_dropout")):
        with pytest.raises(ValueError, match=f"{says} .* \\(the recipe: "):
            train_lora(tiny_base_model[0], tiny_drifted_pairs, recipe.model_copy(update=change),
                       tmp_path / "other", init_adapter=trained.adapter_dir, device="cpu")
        assert not (tmp_path / "other").exists()
    headless = recipe.model_copy(update={"include_output_head": False, "max_steps": 5})  # peft's 'all-linear'
    first = train_lora(tiny_base_model[0], tiny_drifted_pairs, headless, tmp_path / "headless", device="cpu")
    train_lora(tiny_base_model[0], tiny_drifted_pairs, headless.model_copy(update={"init_from_champion": True}),
               tmp_path / "headless-more", init_adapter=first.adapter_dir, device="cpu")  # the same shape: goes on


def test_bad_inputs_fail_clearly(trained, tiny_base_model, tiny_drifted_pairs, recipe, tmp_path):
    base = tiny_base_model[0]
    with pytest.raises(FileNotFoundError, match="no config.json"):
        train_lora(tmp_path / "nowhere", tiny_drifted_pairs, recipe, tmp_path / "a", device="cpu")
    with pytest.raises(FileExistsError, match="already exists"):
        train_lora(base, tiny_drifted_pairs, recipe, trained.adapter_dir, device="cpu")
    with pytest.raises(ValueError, match="at least one"):
        train_lora(base, [], recipe, tmp_path / "b", device="cpu")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        train_lora(base, tiny_drifted_pairs, recipe, tmp_path / "c", init_adapter=tmp_path, device="cpu")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_recipe_yaml_is_the_default_and_checks_say_what_to_change():
    assert LoraRecipe.from_yaml(REPO / "configs/recipe_lora.yaml") == LoraRecipe()
    with pytest.raises(ValueError, match="lower log_every"):
        LoraRecipe(max_steps=10, log_every=20)
    with pytest.raises(ValueError, match="lower alpha"):
        LoraRecipe(r=1, alpha=64)
    with pytest.raises(ValueError, match="all-linear"):
        LoraRecipe(target_modules="all_linear")
    with pytest.raises(ValueError, match="empty list"):
        LoraRecipe(target_modules=[])
    assert LoraRecipe(target_modules=["q_proj", "v_proj"]).target_modules == ["q_proj", "v_proj"]
