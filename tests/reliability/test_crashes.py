"""Crashes: the gateway killed with SIGKILL in the middle of a rollout comes back as it was.

``slm serve`` runs as its own process, serving through an upstream (a :class:`FakeUpstream` on loopback, so
nothing generates in-process) while a rollout holds v2 in shadow. It is killed with ``kill -9`` while clients
are sending, then started again: it must come back with the split the registry holds (same revision, v2
still the shadow) and both versions loaded, answer again, log the shadow copies again, and leave the
registry database whole (SQLite integrity check, audit chain). Rows still queued in the prediction log's
writer when the process died are lost — the writer batches in memory; the test reports how many.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from lifecycle.rollout_plan import RolloutPlan
from serving.server import free_port
from tests.reliability.helpers import MODEL, FakeUpstream, serve_config, start_serving

V1, V2 = f"{MODEL}:v1", f"{MODEL}:v2"
GUARD = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.3}]
PLAN = RolloutPlan.model_validate({
    "name": "crash", "version": 1, "approval_before_last_stage": False, "settle_s": 0,
    "stage_defaults": {"min_requests_per_arm": 1000, "max_duration_s": 3600, "guardrails": GUARD},
    "stages": [{"name": "shadow", "share": 0}, {"name": "full", "share": 100}]})


def complete(port: int, user: str) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=30,
                      json={"model": MODEL, "prompt": "where is my card", "user": user})


def test_a_gateway_killed_mid_rollout_comes_back_with_the_split_and_its_versions(weightless_candidate, tmp_path):
    from registry import rollout_exec
    from registry.predictions import PredictionStore
    from registry.service import open_registry
    from registry.traffic import get_split

    port, log = free_port(), tmp_path / "serve.log"
    with FakeUpstream({V1: "ok", V2: "ok"}) as upstream, open_registry() as reg:
        store = reg.store
        rollout_exec.begin(store, MODEL, 2, PLAN, actor="test", emit=lambda *a: None)
        split = get_split(store, MODEL)
        assert (split.champion, split.shadow) == (1, 2)
        config = serve_config(tmp_path, upstream)
        since = datetime.now(UTC)

        proc = start_serving(config, port, log)
        statuses: list[int] = []
        stop = threading.Event()

        def clients() -> None:  # traffic that is in flight when the process dies
            k = 0
            while not stop.is_set():
                try:
                    statuses.append(complete(port, f"before-{k}").status_code)
                except httpx.TransportError:
                    statuses.append(-1)  # the connection died with the process
                k += 1

        sender = threading.Thread(target=clients)
        sender.start()
        deadline = time.monotonic() + 60
        while upstream.received[V2] < 100:  # shadow copies flow: the split is live, the writer has stored batches
            assert time.monotonic() < deadline, (upstream.received, log.read_text()[-2000:])
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        stop.set()
        sender.join(timeout=60)
        answered_before = statuses.count(200)
        assert answered_before >= 100 and 500 not in statuses

        proc = start_serving(config, port, log)
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
            assert ready["split_revision"] == get_split(store, MODEL).revision == split.revision
            assert ready["live_versions"] == ["v1", "v2"]
            restarted = datetime.now(UTC)
            answers = [complete(port, f"after-{k}") for k in range(10)]
            assert [a.status_code for a in answers] == [200] * 10
            assert {a.headers["x-slm-version"] for a in answers} == {V1}  # shadow answers are never returned
        finally:
            proc.send_signal(signal.SIGTERM)  # a clean stop flushes the log
            proc.wait(timeout=60)

        rows = PredictionStore(store.engine).window(MODEL, since, datetime.now(UTC) + timedelta(seconds=1),
                                                    limit=None)
        after = [r for r in rows if r.ts >= restarted]
        assert sorted((r.version, r.role) for r in after) == [(1, "champion")] * 10 + [(2, "shadow")] * 10
        # Rows the writer had not stored died with the process: at most its flush interval's worth.
        before = [r for r in rows if r.ts < restarted and r.role == "champion"]
        print(f"gateway kill -9: {answered_before} answered before the kill, {len(before)} of them logged "
              f"({answered_before - len(before)} lost with the writer's queue)")
        assert store.verify_audit().ok
    database = Path(os.environ["SLM_HOME"]) / "registry.db"
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_queued_predictions_reach_the_registry_within_the_flush_interval(weightless_candidate):
    """What a kill -9 may lose is what the writer has not stored yet: by design at most ``flush_interval_s``
    (0.2 s) of rows. Checked with a bound 25 times that, and no flush() call: a gateway calls none on its own."""
    from lifecycle.predictions import Prediction
    from registry.predictions import PredictionStore, PredictionWriter
    from registry.service import open_registry

    since = datetime.now(UTC)
    with open_registry() as reg:
        store = PredictionStore(reg.store.engine)
        writer = PredictionWriter(store)
        try:
            for k in range(5):
                writer.write(Prediction(ts=datetime.now(UTC), request_id=f"light-{k}", model=MODEL, version=1,
                                        role="champion", user_hash="u", prompt="p", completion="card_arrival",
                                        latency_ms=1.0, outcome="ok", served=True))
            deadline = time.monotonic() + 30  # that the rows are stored, not how fast
            while writer.pending() and time.monotonic() < deadline:
                time.sleep(0.05)
            stored = store.window(MODEL, since, datetime.now(UTC) + timedelta(seconds=1), limit=None)
            assert len([r for r in stored if r.request_id.startswith("light-")]) == 5
        finally:
            writer.close()
