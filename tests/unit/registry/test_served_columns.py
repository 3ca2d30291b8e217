"""``PredictionStore.served_columns``: the drift monitor's bulk read — served rows only, in time order,
texts None under hash-only logging — on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lifecycle.predictions import Prediction, sha256_text
from registry.predictions import PredictionStore
from registry.store import RegistryStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def row(i: int, *, role: str = "champion", prompt: str | None = "p", outcome: str = "ok") -> Prediction:
    return Prediction(ts=T0 + timedelta(seconds=i), request_id=f"r{i}", model="m", version=1, role=role,
                      user_hash="u", prompt=None if prompt is None else f"{prompt}{i}",
                      prompt_sha256=sha256_text(f"x{i}"), completion=f"c{i}", latency_ms=float(i), outcome=outcome,
                      served=role != "shadow")


def test_served_columns_of_a_window(db_url):
    store = RegistryStore.open(db_url)
    try:
        log = PredictionStore(store.engine)
        log.insert_many([row(3), row(1, outcome="model_error"), row(2, role="shadow"), row(4, prompt=None),
                         row(99)])
        cols = log.served_columns("m", T0, T0 + timedelta(seconds=10))
        assert cols.prompt == ["p1", "p3", None] and cols.completion == ["c1", "c3", "c4"]
        assert cols.outcome == ["model_error", "ok", "ok"] and cols.latency_ms == [1.0, 3.0, 4.0]
        assert log.served_columns("other", T0, T0 + timedelta(seconds=10)).prompt == []
    finally:
        store.close()
