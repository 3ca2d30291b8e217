"""Shared by the drift tests: BANKING77's worlds as the monitor sees them."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_checks.drift import frame_from_pairs
from lifecycle.task import load_task
from training.task_data import read_split, split_worlds

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def world():
    spec = load_task(REPO / "configs/task.yaml", REPO)
    worlds = split_worlds(spec)
    test = read_split(spec, "test")
    before = frame_from_pairs([p for p in test if not spec.is_drifted(p.completion)])
    # The champion never learned the new intents: it routes their prompts to a few old ones.
    old = spec.before_labels
    drifted = frame_from_pairs(worlds.drifted_labelled)
    drifted["completion"] = [old[i % 5] for i in range(len(drifted))]
    return {"reference": frame_from_pairs(worlds.before_train), "before": before, "drifted": drifted}
