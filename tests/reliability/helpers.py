"""Helpers of the reliability suite (fixtures are in conftest.py)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lifecycle.data import Pair, write_jsonl
from lifecycle.records import Lineage
from lifecycle.status import VersionStatus

REPO = Path(__file__).resolve().parents[2]
MODEL = "intent-router"


def banking_rows(intents: tuple[str, ...], per_intent: int, split: str, skip: int = 0) -> list[Pair]:
    """Rows ``skip .. skip + per_intent`` of each intent of a BANKING77 split, interleaved."""
    by_intent: dict[str, list[Pair]] = {i: [] for i in intents}
    seen: dict[str, int] = dict.fromkeys(intents, 0)
    with (REPO / "data/banking77" / f"{split}.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            intent = row["category"]
            if intent in by_intent:
                seen[intent] += 1
                if seen[intent] > skip and len(by_intent[intent]) < per_intent:
                    by_intent[intent].append(Pair(prompt=row["text"], completion=intent))
    return [rows[k] for k in range(per_intent) for rows in by_intent.values() if k < len(rows)]


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for the block; restore them afterwards."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def register_base_version(reg, model: str, lineage: Lineage, reason: str) -> int:
    """A version without adapter files (a base model version): what bootstrap registers as v1."""
    version = reg.register(model, staged=None, status=VersionStatus.CANDIDATE, reason=reason, actor="test",
                           lineage=lineage, evals=[], task="banking77")
    return version.number


def start_gateway(**overrides):
    """A gateway on a loopback port (not started: use it as a context manager), and its state."""
    from serving.app import build_app, load_serve_config
    from serving.server import BackgroundServer

    config = load_serve_config(REPO / "configs/serve.yaml").model_copy(update=overrides)
    app, state = build_app(config)
    server = BackgroundServer(app)
    server.state = state
    return server


def write_golden_sets(home: Path) -> dict[str, list[Pair]]:
    """The golden sets plan_retrain expects under SLM_HOME/data (small: only their prompts are read)."""
    golden = {"golden-before": banking_rows(("card_arrival", "exchange_rate"), 20, "test"),
              "golden-drifted": banking_rows(("top_up_failed", "getting_virtual_card"), 20, "test")}
    for name, pairs in golden.items():
        write_jsonl(home / "data" / f"{name}.jsonl", pairs)
    return golden
