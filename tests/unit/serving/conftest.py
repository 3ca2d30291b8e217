"""Adapters shared by the backend tests, trained once per session on the tiny base model."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def adapters(tiny_base_model, tiny_before_pairs, tiny_drifted_pairs, tmp_path_factory) -> dict[str, Path]:
    """'drift' learned the two new intents; 'mixed' learned them with replayed old rows (another seed)."""
    from training.lora import LoraRecipe, train_lora

    root = tmp_path_factory.mktemp("adapters")
    recipe = LoraRecipe(r=4, alpha=8, max_steps=100, batch_size=16, log_every=10, lr=2e-2)
    train_lora(tiny_base_model[0], tiny_drifted_pairs, recipe, root / "drift", device="cpu")
    train_lora(tiny_base_model[0], tiny_drifted_pairs + tiny_before_pairs[:100],
               recipe.model_copy(update={"seed": 1}), root / "mixed", device="cpu")
    return {"drift": root / "drift", "mixed": root / "mixed"}
