"""A retry of a retrain flow run keeps the run's id, so its folder: the adapter an earlier attempt trained (and never
registered: that attempt failed later) is removed, and the fine-tune runs again, instead of FileExistsError."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace


def test_a_retry_removes_the_adapter_its_earlier_attempt_left(tmp_path, monkeypatch):
    import tasks.training
    from tasks.training import fine_tune

    run_dir = tmp_path / "runs" / "run-7"
    stale = run_dir / "adapter"
    stale.mkdir(parents=True)
    (stale / "adapter_model.safetensors").write_bytes(b"the earlier attempt's weights")
    champion_dir = tmp_path / "champion"
    champion_dir.mkdir()
    registry = SimpleNamespace(base_dir=lambda v: tmp_path / "base", version_dir=lambda v: champion_dir)
    seen = {}

    def train_lora(base_dir, pairs, recipe, out_dir, **kwargs):
        seen["out_existed"] = out_dir.exists()  # train_lora refuses an existing folder
        return SimpleNamespace(loss_curve=[(1, 1.0)], steps=1, wall_seconds=1.0, tokens_per_s=1.0, device="cpu",
                               final_loss=1.0)

    monkeypatch.setattr(tasks.training, "open_registry", lambda: contextlib.nullcontext(registry))
    monkeypatch.setattr(tasks.training, "load_yaml_config", lambda cls, path: SimpleNamespace(
        init_from_champion=False, r=4))
    monkeypatch.setattr(tasks.training, "train_lora", train_lora)
    monkeypatch.setattr(tasks.training, "create_markdown_artifact", lambda **kwargs: None)
    plan = SimpleNamespace(config=SimpleNamespace(recipe=tmp_path / "recipe.yaml"), champion=None, run_dir=run_dir)
    fine_tune.fn(plan, SimpleNamespace(pairs=[]))
    assert seen == {"out_existed": False} and not stale.exists()
