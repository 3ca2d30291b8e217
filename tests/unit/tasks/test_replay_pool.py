"""The replay pool: every row the model line has learnt from, carried from version to version, so the old
intents are replayed as fully after the fifth retrain as after the first (sampling each retrain's pool from the
champion's training set, itself a sample, thinned the old rows with each generation)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from lifecycle.data import Pair, write_jsonl


@pytest.fixture
def reg(tmp_path, monkeypatch):
    import tasks.data
    from registry.artifacts import LocalArtifactStore
    from registry.service import Registry
    from registry.store import RegistryStore

    registry = Registry(RegistryStore.open(f"sqlite:///{tmp_path / 'r.db'}"), LocalArtifactStore(tmp_path / "a"), "m")
    monkeypatch.setattr(tasks.data, "open_registry", lambda: contextlib.nullcontext(registry))
    yield registry
    registry.close()


def retrain(tmp_path, datasets, drop: list[Pair], generation: int, replay_rows: int):
    from tasks.data import assemble_training_data

    path = write_jsonl(tmp_path / f"drop-{generation}.jsonl", drop)
    plan = SimpleNamespace(data_source=str(path), golden={}, config=SimpleNamespace(replay_rows=replay_rows),
                           task=SimpleNamespace(seed=generation),
                           champion=SimpleNamespace(ref=f"m:v{generation}", lineage=SimpleNamespace(datasets=datasets)))
    return assemble_training_data.fn(plan, None)


def test_old_rows_are_replayed_from_the_whole_line_not_from_a_sample_of_a_sample(reg, tmp_path):
    from data_checks.readers import read_jsonl

    old = [Pair(prompt=f"old question {k}", completion="card_arrival") for k in range(200)]
    datasets = [reg.snapshot_dataset("train", old, "v1 train")]
    for generation in range(1, 5):
        drop = [Pair(prompt=f"drop {generation} question {k}", completion="top_up_failed") for k in range(50)]
        data = retrain(tmp_path, datasets, drop, generation, replay_rows=100)
        names = {d.name: d for d in data.datasets}
        pool = read_jsonl(reg.artifacts.dataset_path(names["replay-pool"].snapshot))
        assert sum(p.prompt.startswith("old") for p in pool) == 200  # every old row, every generation
        assert len(pool) == 200 + 50 * generation  # and each drop learnt so far
        assert f"m:v{generation} {'train' if generation == 1 else 'replay-pool'}" in names["train"].source
        assert len(data.pairs) == 150
        datasets = data.datasets  # the new champion's lineage
    # Before: the pool was the champion's train (drop + 100 replayed): by v5 about 100 * (100/150)^3 old rows.


def test_a_prompt_the_drop_relabels_leaves_the_pool_under_the_normalization_of_same_input(reg, tmp_path):
    """'Where  is my card?' (two spaces) and 'where is my card' render to the same model input: the old label must
    not be replayed beside the drop's new one."""
    old = [Pair(prompt="Where  is my card?", completion="card_arrival"),
           *(Pair(prompt=f"old question {k}", completion="card_arrival") for k in range(10))]
    datasets = [reg.snapshot_dataset("train", old, "v1 train")]
    drop = [Pair(prompt="where is my card", completion="lost_or_stolen_card")]
    data = retrain(tmp_path, datasets, drop, 1, replay_rows=100)
    assert [p for p in data.pairs if "card?" in p.prompt] == []
    assert len(data.pairs) == 11
    assert "1 rows also in the drop left out of the pool" in next(d for d in data.datasets if d.name == "train").source


def test_a_champion_with_no_snapshot_to_replay_from_is_refused_by_name(reg, tmp_path):
    from lifecycle.records import DatasetFingerprint

    bare = DatasetFingerprint(name="train", rows=3, sha256="0" * 64, source="elsewhere")
    with pytest.raises(ValueError, match="m:v1 records no training-data snapshot"):
        retrain(tmp_path, [bare], [Pair(prompt="q", completion="card_arrival")], 1, replay_rows=1)


def test_a_golden_set_prompt_in_the_pool_is_never_replayed(reg, tmp_path):
    """A golden set regenerated (or a snapshot edited by hand) after the pool was made: its prompts stay out of
    training, counted, so the gate never scores what the candidate was trained on."""
    from tasks.data import assemble_training_data

    old = [Pair(prompt=f"old question {k}", completion="card_arrival") for k in range(10)]
    golden = write_jsonl(tmp_path / "golden-before.jsonl", [Pair(prompt="OLD question 3!", completion="card_arrival")])
    drop = write_jsonl(tmp_path / "drop.jsonl", [Pair(prompt="old question 0", completion="top_up_failed")])
    plan = SimpleNamespace(data_source=str(drop), golden={"golden-before": golden},
                           config=SimpleNamespace(replay_rows=100), task=SimpleNamespace(seed=0),
                           champion=SimpleNamespace(ref="m:v1", lineage=SimpleNamespace(
                               datasets=[reg.snapshot_dataset("train", old, "v1 train")])))
    data = assemble_training_data.fn(plan, None)
    assert "old question 3" not in {p.prompt for p in data.pairs} and len(data.pairs) == 9
    mixed = next(d for d in data.datasets if d.name == "train")
    assert "(1 rows also in the drop, 1 rows on a golden set left out of the pool)" in mixed.source
