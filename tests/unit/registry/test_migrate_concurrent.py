"""Several processes opening one fresh SQLite registry at once (a gateway and a worker starting together on a new
home, or after an upgrade brings a new migration) all succeed: the migration runs in a write transaction taken up
front, so the others wait for it (busy timeout) and then find the schema at head."""

from __future__ import annotations

import multiprocessing
import queue

from sqlalchemy import inspect

from registry.db import make_engine
from registry.migrate import upgrade
from registry.store import RegistryStore

PROCESSES = 4
TRIALS = 8

# Run in each spawned process by ``exec`` (tests are imported with --import-mode=importlib, so a function of this
# module could not be unpickled there). The imports come first so that every process meets the barrier warm.
WORKER = """
import threading
from alembic import command, config  # noqa: F401  (imported lazily by registry.migrate: warm it up)
from registry.store import RegistryStore

for path in paths:
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        results.put("barrier broken")
        break
    try:
        RegistryStore.open(f"sqlite:///{path}").close()
        results.put("ok")
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}"[:300])
"""


def test_processes_opening_a_fresh_sqlite_registry_at_once_all_succeed(tmp_path):
    """Before: "database is locked" at once, on the WAL switch of a fresh file or on the first CREATE TABLE (a
    deferred BEGIN cannot wait to become a write transaction in WAL mode)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    paths = [str(tmp_path / f"trial-{i}" / "registry.db") for i in range(TRIALS)]
    for path in paths[1::2]:  # every other trial: a store two releases old, with migrations pending
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine, "0004")
        engine.dispose()
    workers = [ctx.Process(target=exec, args=(WORKER, {"paths": paths, "barrier": barrier, "results": results}))
               for _ in range(PROCESSES)]
    for w in workers:
        w.start()
    try:
        outcomes = [results.get(timeout=120) for _ in range(PROCESSES * TRIALS)]
    except queue.Empty:
        outcomes = ["no answer"]
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()
    assert [o for o in outcomes if o != "ok"] == []
    for path in paths:
        store = RegistryStore.open(f"sqlite:///{path}")
        try:
            assert "rollouts" in inspect(store.engine).get_table_names()
            assert {"split_revision", "pinned", "shadow_shed"} <= {
                c["name"] for c in inspect(store.engine).get_columns("predictions")}
        finally:
            store.close()


def test_an_in_memory_registry_still_migrates():
    store = RegistryStore.open("sqlite:///:memory:")
    try:
        assert {"versions", "aliases", "rollouts", "predictions"} <= set(inspect(store.engine).get_table_names())
        upgrade(store.engine)  # at head: nothing to do
    finally:
        store.close()


def test_a_pending_migration_runs_when_the_store_is_at_an_older_revision(tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = make_engine(url)
    upgrade(engine, "0004")
    engine.dispose()
    store = RegistryStore.open(url)
    try:
        columns = {c["name"] for c in inspect(store.engine).get_columns("predictions")}
        assert {"split_revision", "pinned", "shadow_shed"} <= columns
    finally:
        store.close()
