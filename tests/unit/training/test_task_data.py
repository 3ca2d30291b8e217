"""The BANKING77 worlds: sizes, separation of golden and training prompts, determinism, retrain mix."""

import hashlib
from collections import Counter

import pytest

from data_checks.readers import read_jsonl
from lifecycle.data import Pair, normalize_prompt
from lifecycle.settings import project_root
from lifecycle.task import load_task
from training.task_data import (
    WORLD_NAMES,
    build_task_data,
    ensure_task_data,
    read_split,
    retrain_mix,
    small_slice,
    split_worlds,
    stratified_sample,
)


@pytest.fixture(scope="module")
def spec():
    return load_task(project_root() / "configs" / "task.yaml", project_root())


@pytest.fixture(scope="module")
def worlds(spec):
    return split_worlds(spec)


@pytest.fixture(scope="module")
def built(spec, tmp_path_factory):
    return build_task_data(spec, tmp_path_factory.mktemp("worlds"))


def test_the_task_has_63_before_and_14_drifted_intents(spec):
    assert len(spec.labels) == 77
    assert len(spec.before_labels) == 63
    assert len(spec.drifted_labels) == 14
    assert all(any(k in label for k in ("virtual", "disposable", "top_up", "topping_up"))
               for label in spec.drifted_labels)


def test_world_sizes_are_the_documented_ones(built):
    rows = {name: f.fingerprint.rows for name, f in built.files.items()}
    # 8,414 raw before rows and 1,589 drifted rows, less normalized duplicates and conflicting labels.
    assert rows == {"before-train": 8401, "drifted-labelled": 1570, "golden-before": 1000, "golden-drifted": 500}
    c = built.cleaning
    assert (c.test_seen_in_train, c.test_duplicates, c.test_conflicting) == (25, 3, 2)
    assert (c.train_duplicates, c.train_conflicting, c.train_in_golden) == (30, 2, 0)


def test_golden_sets_are_stratified_over_their_world(spec, worlds):
    before = Counter(p.completion for p in worlds.golden_before)
    drifted = Counter(p.completion for p in worlds.golden_drifted)
    assert set(before) == set(spec.before_labels)
    assert set(drifted) == set(spec.drifted_labels)
    # 500 over 14 intents, as even as the unseen test items allow
    assert sorted(Counter(drifted.values()).items()) == [(34, 1), (35, 2), (36, 11)]
    assert sorted(Counter(before.values()).items()) == [(15, 8), (16, 55)]  # 1000 over 63


def test_no_golden_prompt_equals_any_train_prompt_after_normalization(spec, worlds):
    train = {normalize_prompt(p.prompt) for p in read_split(spec, "train")}
    golden = [normalize_prompt(p.prompt) for p in worlds.golden_before + worlds.golden_drifted]
    assert not train & set(golden)
    assert len(golden) == len(set(golden)) == 1500  # unique within and across the two sets


def test_training_worlds_partition_the_intents_and_exclude_golden(spec, worlds):
    assert {p.completion for p in worlds.before_train} == set(spec.before_labels)
    assert {p.completion for p in worlds.drifted_labelled} == set(spec.drifted_labels)
    golden = {normalize_prompt(p.prompt) for p in worlds.golden_before + worlds.golden_drifted}
    for rows in (worlds.before_train, worlds.drifted_labelled):
        keys = [(normalize_prompt(p.prompt), p.completion) for p in rows]
        assert len(keys) == len(set(keys))
        assert not golden & {k for k, _ in keys}


def test_files_hold_the_rows_and_their_sha_is_the_fingerprint(built, worlds):
    for name, rows in worlds.by_name().items():
        world_file = built.files[name]
        assert read_jsonl(world_file.path) == rows
        assert hashlib.sha256(world_file.path.read_bytes()).hexdigest() == world_file.fingerprint.sha256
        assert world_file.fingerprint.name == name and world_file.fingerprint.source == str(world_file.path)
    assert set(built.files) == set(WORLD_NAMES)


def test_same_seed_same_files_rebuilt_in_place_untouched(spec, built, worlds, tmp_path):
    again = build_task_data(spec, tmp_path)
    assert [(f.name, f.sha256, f.rows) for f in again.fingerprints] == \
        [(f.name, f.sha256, f.rows) for f in built.fingerprints]
    stamps = {name: f.path.stat().st_mtime_ns for name, f in again.files.items()}
    assert build_task_data(spec, tmp_path) == again
    assert {name: f.path.stat().st_mtime_ns for name, f in again.files.items()} == stamps
    reseeded = split_worlds(spec.model_copy(update={"seed": 1}))
    assert reseeded.golden_drifted != worlds.golden_drifted


def test_ensure_reuses_intact_files_and_rebuilds_stale_ones(spec, built):
    out_dir = built.before_train.path.parent
    assert ensure_task_data(spec, out_dir) == built
    reseeded = ensure_task_data(spec.model_copy(update={"seed": 1}), out_dir)  # other recipe: rebuilt
    assert reseeded.golden_before.fingerprint.sha256 != built.golden_before.fingerprint.sha256
    assert ensure_task_data(spec, out_dir) == built  # and back
    built.golden_drifted.path.write_text("tampered\n")
    assert ensure_task_data(spec, out_dir) == built  # a damaged file is rebuilt, not trusted
    assert read_jsonl(built.golden_drifted.path)[0].completion in spec.drifted_labels


def test_retrain_mix_is_all_drifted_rows_plus_seeded_replay(worlds):
    drifted, pool = worlds.drifted_labelled, worlds.before_train
    mix = retrain_mix(drifted, pool, replay_rows=3000, seed=7)
    assert len(mix) == len(drifted) + 3000
    assert Counter(mix) - Counter(pool) == Counter(drifted)  # every drifted row once, the rest from the pool
    fresh = set(drifted)
    replay = [p for p in mix if p not in fresh]
    assert len(replay) == 3000 and len(set(replay)) == 3000
    assert retrain_mix(drifted, pool, 3000, seed=7) == mix
    assert retrain_mix(drifted, pool, 3000, seed=8) != mix
    assert mix[: len(drifted)] != drifted  # shuffled, not appended


def test_retrain_mix_refuses_more_replay_than_the_pool(worlds):
    with pytest.raises(ValueError, match="replay_rows"):
        retrain_mix(worlds.drifted_labelled, worlds.golden_before, replay_rows=1001, seed=0)
    assert len(retrain_mix(worlds.drifted_labelled, [], replay_rows=0, seed=0)) == len(worlds.drifted_labelled)


def test_small_slice_is_stratified_and_seeded(worlds):
    piece = small_slice(worlds.before_train, 126, seed=3)
    assert set(Counter(p.completion for p in piece).values()) == {2}  # 126 rows over 63 intents
    assert small_slice(worlds.before_train, 126, seed=3) == piece
    assert len(small_slice(piece, 10_000, seed=0)) == 126


def test_stratified_sample_fills_up_from_larger_groups():
    import random

    pairs = [Pair(prompt=f"a{i}", completion="a") for i in range(2)] + \
            [Pair(prompt=f"b{i}", completion="b") for i in range(20)]
    picked = stratified_sample(pairs, 10, random.Random(0))
    assert Counter(p.completion for p in picked) == {"a": 2, "b": 8}
