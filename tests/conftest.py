"""Shared fixtures: one thread for torch everywhere, and a tiny base model built once per session.

The tiny model (1 layer, width 32, ~40k parameters) is trained on 200 BANKING77 rows of four intents
in about a second; it answers them well enough for behavioural tests of training and serving.
"""

from __future__ import annotations

import contextlib
import csv
import os
import sys
import uuid
from pathlib import Path

import pytest

from lifecycle.data import Pair

REPO = Path(__file__).resolve().parents[1]
BEFORE_INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "cash_withdrawal_charge")
DRIFTED_INTENTS = ("top_up_failed", "getting_virtual_card")


def pytest_configure(config):
    # Before any test module imports torch: torch reads OMP_NUM_THREADS once, at import.
    os.environ["OMP_NUM_THREADS"] = "1"
    # Before Prefect is imported: every flow run of the tests sends a heartbeat at the stack's rate, so the test
    # stack's crash automation (90 s without one, tests/integration/conftest.py) never takes a live run for dead.
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = "30"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """FACTS.md: on 2 busy cores, 2 torch threads collapse. Import torch only if a test already did."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def banking_pairs(intents: tuple[str, ...], per_intent: int, split: str = "train") -> list[Pair]:
    """The first ``per_intent`` rows of each intent, interleaved so any prefix mixes intents."""
    by_intent: dict[str, list[Pair]] = {i: [] for i in intents}
    with (REPO / "data/banking77" / f"{split}.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            rows = by_intent.get(row["category"])
            if rows is not None and len(rows) < per_intent:
                rows.append(Pair(prompt=row["text"], completion=row["category"]))
    return [rows[k] for k in range(per_intent) for rows in by_intent.values() if k < len(rows)]


@pytest.fixture(scope="session")
def tiny_before_pairs() -> list[Pair]:
    return banking_pairs(BEFORE_INTENTS, 50)


@pytest.fixture(scope="session")
def tiny_drifted_pairs() -> list[Pair]:
    return banking_pairs(DRIFTED_INTENTS, 50)


@pytest.fixture(scope="session")
def tiny_base_config():
    from training.base_model import BaseModelConfig

    return BaseModelConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                           max_steps=80, max_seconds=None, lr=5e-3, log_every=10)


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory, tiny_before_pairs, tiny_base_config):
    """(folder, BaseModelInfo) of a tiny base trained on the four "before" intents."""
    from training.base_model import build_base_model

    out = tmp_path_factory.mktemp("tiny-base") / "base"
    info = build_base_model(tiny_before_pairs, out, tiny_base_config, threads=1, device="cpu")
    return out, info


PG_URL = os.environ.get("SLM_TEST_POSTGRES_URL")


@contextlib.contextmanager
def _temporary_pg_database():
    """A PostgreSQL database of its own, dropped afterwards. Skips when SLM_TEST_POSTGRES_URL is unset
    (CI's .ci/run sets it, so CI never skips)."""
    if not PG_URL:
        pytest.skip("SLM_TEST_POSTGRES_URL is not set (CI sets it)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"slm_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database():
    """``with pg_database() as url: ...`` — see _temporary_pg_database."""
    return _temporary_pg_database


def _send_synthetic_traffic(store, predictions, since, until, *, bad: bool, requests: int = 200,
                            model: str = "router", candidate: int = 2) -> None:
    """Log ``requests`` requests spread over [since, until) the way a gateway would: routed by the stored
    split (the challenger answers exactly its percent of each hundred, so the split is honoured to the
    request), a shadow answering every request too, and feedback on each served answer. A ``bad``
    candidate gets every other answer wrong: a model error, and an unhappy user."""
    import itertools

    from lifecycle.predictions import Feedback, Prediction
    from registry.traffic import get_split

    split = get_split(store, model)
    ids = _REQUEST_IDS.setdefault("ids", itertools.count())
    rows, feedback = [], []
    for i in range(requests):
        ts = since + (until - since) * ((i + 0.5) / requests)
        rid = f"req-{next(ids)}"
        # (37 i) mod 100 runs through 0..99 in a scattered order: the challenger's share holds in any stretch of time.
        served = (split.challenger if split.challenger and (37 * i) % 100 < split.challenger_percent
                  else split.champion)
        answers = [(served, "challenger" if served == split.challenger else "champion", True)]
        if split.shadow:
            answers.append((split.shadow, "shadow", False))
        for version, role, is_served in answers:
            wrong = bad and version == candidate and i % 2 == 0
            rows.append(Prediction(ts=ts, request_id=rid, model=model, version=version, role=role, user_hash=rid,
                                   prompt="p", completion="c", latency_ms=5.0,
                                   outcome="model_error" if wrong else "ok", served=is_served,
                                   split_revision=split.revision))
            if is_served:
                feedback.append(Feedback(request_id=rid, outcome="failure" if wrong else "success", ts=ts))
    predictions.insert_many(rows)
    for f in feedback:
        predictions.record_feedback(f)


_REQUEST_IDS: dict = {}


@pytest.fixture(scope="session")
def synthetic_traffic():
    """``send(store, predictions, since, until, bad=..., requests=...)``: see _send_synthetic_traffic."""
    return _send_synthetic_traffic


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server for the whole session (flows and integration tests share it; startup
    takes 11-30 s here). A fresh PREFECT_HOME keeps persisted task results of earlier runs from turning
    into Cached states."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def _write_tiny_configs(configs: Path, *, model: str) -> Path:
    """Configs for flows that run in seconds: a 1-layer base model, a short LoRA, small golden sets."""
    import yaml

    configs.mkdir(parents=True, exist_ok=True)
    task = yaml.safe_load((REPO / "configs/task.yaml").read_text())
    task.update(data_dir=str(REPO / "data/banking77"), golden_before_size=60, golden_drifted_size=60, min_train_rows=20)
    files = {
        "task.yaml": task,
        "base_model.yaml": {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64, "num_layers": 1,
                            "num_heads": 2, "max_steps": 40, "max_seconds": None, "batch_size": 32,
                            "log_every": 10},
        "recipe_lora.yaml": {"r": 4, "alpha": 8, "max_steps": 20, "batch_size": 16, "log_every": 5},
        "gate.yaml": yaml.safe_load((REPO / "configs/gate.yaml").read_text()),
    }
    for name, content in files.items():
        (configs / name).write_text(yaml.safe_dump(content))
    retrain = {"model": model, "task": str(configs / "task.yaml"), "recipe": str(configs / "recipe_lora.yaml"),
               "gate": str(configs / "gate.yaml"), "replay_rows": 200, "benchmark_batch_size": 32}
    (configs / "retrain.yaml").write_text(yaml.safe_dump(retrain))
    return configs


@pytest.fixture(scope="session")
def write_tiny_configs():
    """``write(folder, model=...)`` -> folder of tiny configs: see _write_tiny_configs."""
    return _write_tiny_configs
