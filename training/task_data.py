"""The BANKING77 worlds: what the model knew before, what drifted, and the golden sets that judge both.

The task (``configs/task.yaml``) splits the 77 intents in two. The *before* world is the 63 intents the
bank had from the start; the *drifted* world is the 14 intents of products launched later (names with
virtual, disposable, top_up, topping_up). From the raw CSVs this module derives four data files:

``before-train``
    every train.csv row of a before intent: the base model's pretraining corpus, the first champion's
    training data, and the pool that replay samples are drawn from.
``drifted-labelled``
    the train.csv rows of the drifted intents: the fresh labelled drop a labelling team produces once
    monitoring shows the new traffic.
``golden-before`` / ``golden-drifted``
    ``spec.golden_before_size`` / ``spec.golden_drifted_size`` benchmark items, drawn from test.csv,
    stratified by intent as evenly as the data allows. Every gate compares champion and challenger on
    these same items.

Why golden sets exclude normalized duplicates: BANKING77 holds near-duplicates ("top up" vs "top-up",
a stray newline, a trailing " ?") inside and across its splits. An item whose normalized prompt
(:func:`lifecycle.data.normalize_prompt`, the same rule the data validator applies) also appears in
any training row is one the model may have memorized; scoring it would flatter every version. So test
rows matching any train.csv prompt are dropped, golden items are unique under normalization, and,
as a second guard, no training row may share a normalized prompt with a golden item. Training rows are
likewise reduced to one row per normalized (prompt, completion), and prompts labelled with two different
intents are dropped: contradictory labels teach noise, and the validator refuses duplicate pairs.

Everything is deterministic given ``spec.seed``: the same spec gives byte-identical files and fingerprints.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pydantic import Field

from lifecycle.audit import canonical_json
from lifecycle.data import Pair, fingerprint, normalize_prompt, read_pairs, write_jsonl
from lifecycle.files import write_bytes_atomic
from lifecycle.records import DatasetFingerprint, Frozen
from lifecycle.task import TaskSpec

BEFORE_TRAIN = "before-train"
DRIFTED_LABELLED = "drifted-labelled"
GOLDEN_BEFORE = "golden-before"
GOLDEN_DRIFTED = "golden-drifted"
WORLD_NAMES = (BEFORE_TRAIN, DRIFTED_LABELLED, GOLDEN_BEFORE, GOLDEN_DRIFTED)
MANIFEST = "task_data.json"
# Bump when the derivation below changes, so files built by older code are rebuilt, not reused.
DERIVATION_VERSION = 1


class CleaningStats(Frozen):
    """How many raw rows each near-duplicate rule removed (all counted under normalize_prompt)."""

    test_seen_in_train: int = Field(description="test rows whose prompt also appears in train.csv")
    test_duplicates: int = Field(description="test rows repeating an earlier test prompt")
    test_conflicting: int = Field(description="test rows whose prompt carries two different intents")
    train_duplicates: int = Field(description="train rows repeating an earlier (prompt, completion)")
    train_conflicting: int = Field(description="train rows whose prompt carries two different intents")
    train_in_golden: int = Field(description="train rows sharing a prompt with a golden item (0 by design)")


class Worlds(Frozen):
    """The four datasets in memory, before they are written."""

    before_train: list[Pair] = Field(repr=False)
    drifted_labelled: list[Pair] = Field(repr=False)
    golden_before: list[Pair] = Field(repr=False)
    golden_drifted: list[Pair] = Field(repr=False)
    cleaning: CleaningStats

    def by_name(self) -> dict[str, list[Pair]]:
        return {BEFORE_TRAIN: self.before_train, DRIFTED_LABELLED: self.drifted_labelled,
                GOLDEN_BEFORE: self.golden_before, GOLDEN_DRIFTED: self.golden_drifted}


class WorldFile(Frozen):
    path: Path
    fingerprint: DatasetFingerprint


class TaskData(Frozen):
    """Where the four files were written and exactly what they hold."""

    before_train: WorldFile
    drifted_labelled: WorldFile
    golden_before: WorldFile
    golden_drifted: WorldFile
    cleaning: CleaningStats

    @property
    def files(self) -> dict[str, WorldFile]:
        return {BEFORE_TRAIN: self.before_train, DRIFTED_LABELLED: self.drifted_labelled,
                GOLDEN_BEFORE: self.golden_before, GOLDEN_DRIFTED: self.golden_drifted}

    @property
    def fingerprints(self) -> list[DatasetFingerprint]:
        return [f.fingerprint for f in self.files.values()]


class _Manifest(Frozen):
    recipe: str = Field(description="sha256 of the derivation version, spec fields and raw CSV bytes")
    data: TaskData


def read_split(spec: TaskSpec, split: str) -> list[Pair]:
    """Rows of ``<data_dir>/<split>.csv`` as raw pairs; a label outside the task's 77 is an error."""
    path = spec.data_dir / f"{split}.csv"
    known = set(spec.labels)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [Pair(prompt=r[spec.text_column], completion=r[spec.label_column]) for r in csv.DictReader(handle)]
    unknown = sorted({p.completion for p in rows} - known)
    if unknown:
        raise ValueError(f"{path}: labels not in categories.json: {', '.join(unknown[:5])}")
    return rows


def split_worlds(spec: TaskSpec) -> Worlds:
    """Derive the four worlds from train.csv and test.csv (pure, deterministic in ``spec.seed``)."""
    train, test = read_split(spec, "train"), read_split(spec, "test")
    norm = functools.cache(normalize_prompt)  # each prompt is normalized several times below
    train_norms = {norm(p.prompt) for p in train}
    unseen = [p for p in test if norm(p.prompt) not in train_norms]
    candidates, test_dups, test_conflicts = _dedupe(unseen, norm)
    golden_before = stratified_sample([p for p in candidates if not spec.is_drifted(p.completion)],
                                      spec.golden_before_size, _rng(spec.seed, GOLDEN_BEFORE))
    golden_drifted = stratified_sample([p for p in candidates if spec.is_drifted(p.completion)],
                                       spec.golden_drifted_size, _rng(spec.seed, GOLDEN_DRIFTED))
    for name, items, size in ((GOLDEN_BEFORE, golden_before, spec.golden_before_size),
                              (GOLDEN_DRIFTED, golden_drifted, spec.golden_drifted_size)):
        if len(items) < size:
            raise ValueError(f"{name}: only {len(items)} unseen test items, the task asks for {size}")
    golden_norms = {norm(p.prompt) for p in golden_before + golden_drifted}
    kept, train_dups, train_conflicts = _dedupe(train, norm)
    clean = [p for p in kept if norm(p.prompt) not in golden_norms]
    stats = CleaningStats(test_seen_in_train=len(test) - len(unseen), test_duplicates=test_dups,
                          test_conflicting=test_conflicts, train_duplicates=train_dups,
                          train_conflicting=train_conflicts, train_in_golden=len(kept) - len(clean))
    return Worlds(before_train=[p for p in clean if not spec.is_drifted(p.completion)],
                  drifted_labelled=[p for p in clean if spec.is_drifted(p.completion)],
                  golden_before=golden_before, golden_drifted=golden_drifted, cleaning=stats)


def build_task_data(spec: TaskSpec, out_dir: Path) -> TaskData:
    """Write the four worlds as ``<out_dir>/<name>.jsonl``, plus a manifest that lets
    :func:`ensure_task_data` reuse them. Idempotent: identical files are left as they are."""
    out_dir = Path(out_dir)
    worlds = split_worlds(spec)
    files: dict[str, WorldFile] = {}
    for name, pairs in worlds.by_name().items():
        path = write_jsonl(out_dir / f"{name}.jsonl", pairs)
        identity = DatasetFingerprint(name=name, sha256=fingerprint(pairs), rows=len(pairs), source=str(path))
        files[name.replace("-", "_")] = WorldFile(path=path, fingerprint=identity)
    data = TaskData(**files, cleaning=worlds.cleaning)
    manifest = _Manifest(recipe=_recipe_key(spec), data=data)
    write_bytes_atomic(out_dir / MANIFEST, manifest.model_dump_json(indent=2).encode("utf-8"))
    return data


def ensure_task_data(spec: TaskSpec, out_dir: Path) -> TaskData:
    """The files under ``out_dir`` if they were built from this spec and these CSVs and are intact
    (every sha256 re-checked), else a fresh :func:`build_task_data`."""
    try:
        cached = _Manifest.model_validate_json((Path(out_dir) / MANIFEST).read_bytes())
    except (OSError, ValueError):  # absent or unreadable manifest: build
        return build_task_data(spec, out_dir)
    intact = all(f.path.is_file() and hashlib.sha256(f.path.read_bytes()).hexdigest() == f.fingerprint.sha256
                 for f in cached.data.files.values())
    if intact and cached.recipe == _recipe_key(spec):
        return cached.data
    return build_task_data(spec, out_dir)


def golden_prompts(data: TaskData) -> list[str]:
    """Prompts of both golden sets: what training data must never contain."""
    return [p.prompt for f in (data.golden_before, data.golden_drifted) for p in read_pairs(f.path)]


def retrain_mix(drifted: list[Pair], replay_pool: list[Pair], replay_rows: int, seed: int) -> list[Pair]:
    """The retraining set: all drifted rows plus ``replay_rows`` old rows, shuffled.

    Replay is what keeps the old intents alive (FACTS.md: without it the challenger falls from 79 % to
    2 % on them). The replay sample is uniform, so it keeps the pool's own intent mix.
    """
    if not 0 <= replay_rows <= len(replay_pool):
        raise ValueError(f"replay_rows must be between 0 and the pool size {len(replay_pool)}, got {replay_rows}")
    rng = _rng(seed, "retrain-mix")
    mix = list(drifted) + rng.sample(list(replay_pool), replay_rows)
    rng.shuffle(mix)
    return mix


def small_slice(pairs: Sequence[Pair], n: int, seed: int) -> list[Pair]:
    """A seeded, intent-stratified slice of at most ``n`` rows (for tests and quick runs)."""
    return stratified_sample(pairs, n, _rng(seed, "small-slice"))


def stratified_sample(pairs: Iterable[Pair], n: int, rng: random.Random) -> list[Pair]:
    """Draw up to ``n`` items, as evenly over completions as their counts allow.

    Round robin over intents in a seeded order, each intent's rows in a seeded order: with 300 items over
    14 intents of 40 rows each, 6 intents give 22 and 8 give 21. An intent that runs out simply drops out
    of later rounds, so the total still reaches ``n`` whenever there are ``n`` rows. The result is shuffled.
    """
    groups: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        groups[pair.completion].append(pair)
    order = sorted(groups)
    rng.shuffle(order)
    for label in order:
        rng.shuffle(groups[label])
    picked: list[Pair] = []
    depth = 0
    while len(picked) < n and any(len(groups[label]) > depth for label in order):
        picked.extend(groups[label][depth] for label in order if len(groups[label]) > depth)
        depth += 1
    # The last round may overshoot; trimming it keeps the earlier (seeded) intents' extra item.
    picked = picked[:n]
    rng.shuffle(picked)
    return picked


def _dedupe(pairs: Sequence[Pair], norm: Callable[[str], str]) -> tuple[list[Pair], int, int]:
    """One row per normalized prompt; a prompt seen with two intents is dropped entirely.

    Returns (kept rows in first-seen order, repeated rows dropped, conflicting rows dropped).
    """
    labels: dict[str, set[str]] = defaultdict(set)
    for pair in pairs:
        labels[norm(pair.prompt)].add(pair.completion)
    kept: list[Pair] = []
    seen: set[str] = set()
    conflicting = 0
    for pair in pairs:
        key = norm(pair.prompt)
        if len(labels[key]) > 1:
            conflicting += 1
        elif key not in seen:
            seen.add(key)
            kept.append(pair)
    return kept, len(pairs) - len(kept) - conflicting, conflicting


def _recipe_key(spec: TaskSpec) -> str:
    """What the four files are a function of: the derivation, the spec fields it reads, the raw CSVs."""
    fields = spec.model_dump(mode="json", include={"text_column", "label_column", "drift_keywords",
                                                   "golden_before_size", "golden_drifted_size",
                                                   "seed", "labels"})
    digest = hashlib.sha256(canonical_json({"version": DERIVATION_VERSION, **fields}).encode("utf-8"))
    for split in ("train", "test"):
        digest.update((spec.data_dir / f"{split}.csv").read_bytes())
    return digest.hexdigest()


def _rng(seed: int, purpose: str) -> random.Random:
    # One stream per purpose, so drawing one golden set never shifts another (str seeds are stable
    # across processes: random hashes them with sha512, not with the salted hash()).
    return random.Random(f"{seed}/{purpose}")
