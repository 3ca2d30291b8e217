import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from lifecycle.records import BaseModelRef, EvalReport, Lineage
from lifecycle.status import Alias, TransitionError, VersionStatus
from registry.locks import LockBusy, LockLost, LockUnavailable
from registry.store import ConcurrentChangeError, NotFoundError, RegistryStore

S = VersionStatus


def register(store, model="router", status=S.CANDIDATE, **kw):
    return store.register_version(
        model, status=status, prompt_format="intent-v1@abc", reason="test", actor="tester",
        publish=lambda n: (f"local://models/{model}/v{n}", {"README.md": "0" * 64}), **kw)


def lineage():
    return Lineage(base_model=BaseModelRef(model_id="local://base/b", revision="f" * 64),
                   prompt_format="intent-v1@abc", recipe={"r": 16, "lr": 1e-3}, libraries={"torch": "2.13.0"})


def test_versions_are_numbered_and_round_trip(store):
    report = EvalReport(version="router:v1", benchmark="golden-before", benchmark_sha256="s", n_items=1,
                        exact_match=1.0, per_route_accuracy={"a": 1.0}, malformed_rate=0.0, latency_p50_ms=1,
                        latency_p95_ms=1, latency_p99_ms=1, tokens_per_s=1, peak_memory_mb=1)
    v1 = register(store, lineage=lineage(), evals=[report])
    v2 = register(store, status=S.REJECTED)
    assert (v1.number, v2.number) == (1, 2)
    got = store.get_version("router", 1)
    assert got.lineage == lineage()
    assert got.evals == [report]
    assert got.files == {"README.md": "0" * 64}
    assert got.created_at.tzinfo is not None
    assert [v.ref for v in store.list_versions("router")] == ["router:v1", "router:v2"]
    assert store.get_version("router", 2).status is S.REJECTED


def test_failed_publish_leaves_nothing(store, monkeypatch):
    import registry.store as store_mod

    monkeypatch.setattr(store_mod, "REGISTER_WAIT_S", 2.0)
    undone = []

    def publish(n):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.register_version("router", status=S.CANDIDATE, prompt_format="f", reason="r", actor="a",
                               publish=publish, unpublish=undone.append)
    assert store.list_versions() == []
    assert undone == []  # nothing was published, nothing to undo
    assert store.verify_audit().checked == 0
    assert register(RegistryStore(store.engine)).number == 1  # the lock went with the failure; no number was spent


def test_failure_after_publish_is_undone(store):
    undone = []
    report = EvalReport(version="router:v1", benchmark="golden", benchmark_sha256="s", n_items=1, exact_match=1,
                        per_route_accuracy={}, malformed_rate=0, latency_p50_ms=1, latency_p95_ms=1,
                        latency_p99_ms=1, tokens_per_s=1, peak_memory_mb=1)
    with pytest.raises(IntegrityError):  # the same golden set twice breaks a unique constraint mid-way
        store.register_version("router", status=S.CANDIDATE, prompt_format="f", reason="r", actor="a",
                               publish=lambda n: ("uri", {}), unpublish=undone.append, evals=[report, report])
    assert undone == [1]
    assert store.list_versions() == []


def test_status_moves_only_by_the_table(store):
    register(store)
    store.set_status("router", 1, S.PROMOTED, actor="a", reason="r")
    with pytest.raises(TransitionError, match="from promoted to candidate"):
        store.set_status("router", 1, S.CANDIDATE, actor="a", reason="r")
    assert [h["to_status"] for h in store.status_history("router", 1)] == ["candidate", "promoted"]
    with pytest.raises(NotFoundError, match="router:v9"):
        store.set_status("router", 9, S.ARCHIVED, actor="a", reason="r")


def test_registering_initial_status_only(store):
    with pytest.raises(ValueError, match="candidate or rejected"):
        register(store, status=S.PROMOTED)


def test_promotion_moves_champion_previous_and_challenger(store):
    for _ in range(3):
        register(store)
    store.promote("router", 1, actor="bootstrap", reason="first")
    store.move_alias("router", Alias.CHALLENGER, 2, actor="rollout", reason="canary")
    store.promote("router", 2, actor="rollout", reason="won the canary")
    assert store.aliases("router") == {"champion": 2, "previous": 1}
    history = store.alias_history("router", "champion")
    assert [(h.previous_version, h.version) for h in history] == [(None, 1), (1, 2)]
    assert history[1].reason == "won the canary" and history[1].actor == "rollout"
    assert store.get_version("router", 2).status is S.PROMOTED
    assert store.promote("router", 2, actor="a", reason="again") == 2  # idempotent
    assert len(store.alias_history("router", "champion")) == 2


def test_compare_and_swap_alias(store):
    register(store)
    register(store)
    store.promote("router", 1, actor="a", reason="r")
    with pytest.raises(ConcurrentChangeError, match="champion is v1, not v2"):
        store.promote("router", 2, actor="a", reason="r", expected_champion=2)
    with pytest.raises(ConcurrentChangeError):
        store.move_alias("router", "challenger", 2, actor="a", reason="r", expected=1)
    assert store.aliases("router") == {"champion": 1}
    with pytest.raises(ValueError):
        store.move_alias("router", "king", 2, actor="a", reason="r")


def test_racing_promotions_leave_exactly_one_champion(db_url):
    stores = [RegistryStore.open(db_url) for _ in range(4)]
    for _ in range(5):
        register(stores[0])
    stores[0].promote("router", 1, actor="a", reason="bootstrap")
    barrier = threading.Barrier(4)
    outcomes = []

    def race(store, number):
        barrier.wait()
        try:
            store.promote("router", number, actor=f"p{number}", reason="race", expected_champion=1)
            outcomes.append(("won", number))
        except ConcurrentChangeError:
            outcomes.append(("lost", number))

    threads = [threading.Thread(target=race, args=(s, n)) for s, n in zip(stores, [2, 3, 4, 5], strict=True)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    winners = [n for what, n in outcomes if what == "won"]
    assert len(winners) == 1
    assert stores[0].aliases("router")["champion"] == winners[0]
    assert stores[0].verify_audit().ok
    for s in stores:
        s.close()


def test_concurrent_registrations_get_distinct_numbers(db_url):
    stores = [RegistryStore.open(db_url) for _ in range(3)]
    barrier = threading.Barrier(3)

    def many(store):
        barrier.wait()
        for _ in range(5):
            register(store)

    threads = [threading.Thread(target=many, args=(s,)) for s in stores]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    numbers = [v.number for v in stores[0].list_versions("router")]
    assert numbers == list(range(1, 16))
    result = stores[0].verify_audit()
    assert result.ok and result.checked == 15
    for s in stores:
        s.close()


def test_a_publish_in_progress_holds_no_database_lock(tmp_path):
    """On SQLite a write transaction is the database's one write lock: a publish inside it (a Hub upload of
    minutes) stalled every other process's writes, the gateways' prediction log first, into the busy timeout."""
    path = tmp_path / "registry.db"
    store = RegistryStore.open(f"sqlite:///{path}")
    writes = []

    def publish(n):
        other = sqlite3.connect(path, timeout=0.5, isolation_level=None)  # another process's writer
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO models (name, created_at, last_version) VALUES ('other', '2026-11-29', 0)")
            other.execute("COMMIT")
            writes.append(n)
        finally:
            other.close()
        return f"local://models/router/v{n}", {}

    version = store.register_version("router", status=S.CANDIDATE, prompt_format="f", reason="r", actor="a",
                                     publish=publish)
    assert (version.number, writes) == (1, [1])
    assert store.verify_audit().ok
    store.close()


def test_registrations_of_one_model_take_turns_while_one_publishes(db_url, monkeypatch):
    """Publishing runs outside any transaction, under the model's registration lock: a second registration waits
    for the first to be recorded (no number taken twice, no gap), and one that waits too long is refused by name."""
    import registry.store as store_mod

    stores = [RegistryStore.open(db_url) for _ in range(3)]
    publishing, go, seen, results = threading.Event(), threading.Event(), [], {}

    def slow(n):
        seen.append(("first", n))
        publishing.set()
        assert go.wait(timeout=30)
        return f"local://models/router/v{n}", {}

    def quick(n):
        seen.append(("second", n))
        return f"local://models/router/v{n}", {}

    def run(name, store, publish):
        try:
            results[name] = store.register_version("router", status=S.CANDIDATE, prompt_format="f", reason=name,
                                                   actor="a", publish=publish).number
        except Exception as exc:  # noqa: BLE001 - the test reads it
            results[name] = exc

    first = threading.Thread(target=run, args=("first", stores[0], slow))
    first.start()
    assert publishing.wait(timeout=30)
    monkeypatch.setattr(store_mod, "REGISTER_WAIT_S", 0.3)
    run("impatient", stores[1], quick)
    assert isinstance(results["impatient"], LockBusy)
    assert "another registration of router is still publishing its files" in str(results["impatient"])
    monkeypatch.setattr(store_mod, "REGISTER_WAIT_S", 30.0)
    second = threading.Thread(target=run, args=("second", stores[2], quick))
    second.start()
    second.join(timeout=0.5)
    assert seen == [("first", 1)]  # still waiting for the first: it has not been given a number
    go.set()
    first.join()
    second.join()
    assert (results["first"], results["second"]) == (1, 2)
    assert seen == [("first", 1), ("second", 2)]
    assert [v.reason for v in stores[0].list_versions("router")] == ["first", "second"]
    assert stores[0].verify_audit().checked == 2
    for s in stores:
        s.close()


@pytest.mark.postgres
def test_a_registration_whose_lock_died_while_publishing_records_nothing_and_keeps_the_files(pg_database_url):
    """A PostgreSQL lock lives as long as its connection (a server restart, an idle timeout): once it has ended,
    another registration may hold the number and the files stored under it, so this one must neither record the
    version nor remove what is stored."""
    store, undone = RegistryStore.open(pg_database_url), []

    def publish(n):
        with store.engine.connect() as conn:
            pid = conn.execute(text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())")).scalar_one()
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
        return f"local://models/router/v{n}", {}

    with pytest.raises(LockLost, match="lost with its database connection"):
        store.register_version("router", status=S.CANDIDATE, prompt_format="f", reason="r", actor="a",
                               publish=publish, unpublish=undone.append)
    assert undone == [] and store.list_versions() == [] and store.verify_audit().checked == 0
    assert register(store).number == 1
    store.close()


def test_a_registration_refuses_to_run_unserialized_where_files_cannot_be_locked(tmp_path, monkeypatch):
    import errno

    from registry import locks

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    store = RegistryStore.open(f"sqlite:///{tmp_path / 'registry.db'}")
    monkeypatch.setattr(locks.fcntl, "flock", no_locks)
    with pytest.raises(LockUnavailable, match="must not run unserialized"):
        register(store)
    assert store.list_versions() == []
    store.close()


def test_a_named_lock_is_released_when_its_process_dies(db_url):
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from registry.db import make_engine\n"
            "from registry.store import RegistryStore\n"
            "store = RegistryStore(make_engine(sys.argv[1]))\n"
            "with store.lock('retire/router/v2', wait_s=5, busy='x'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n"), db_url],
        stdout=subprocess.PIPE, text=True)
    store = RegistryStore.open(db_url)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy, match="busy here"), store.lock("retire/router/v2", wait_s=0.3, busy="busy here"):
            pass
        with store.lock("retire/router/v3", wait_s=0.3, busy="another name is another lock"):
            pass
        holder.kill()
        holder.wait(timeout=30)
        with store.lock("retire/router/v2", wait_s=10, busy="not released by the dead holder"):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
        store.close()


def test_audit_chain_records_every_change_and_detects_tampering(store):
    register(store)
    store.promote("router", 1, actor="a", reason="r")
    store.append_audit(actor="gate", action="gate.decided", subject="router:v1", payload={"verdict": "pass"})
    result = store.verify_audit()
    assert result.ok
    actions = [e.action for e in store.audit_events()]
    assert actions == ["version.registered", "version.status", "alias.moved", "gate.decided"]
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET payload = '{\"verdict\":\"fail\"}' WHERE seq = 4"))
    result = store.verify_audit()
    assert not result.ok and any("seq 4" in p and "edited" in p for p in result.problems)


def test_deleting_the_newest_audit_event_is_detected(store):
    register(store)
    store.promote("router", 1, actor="a", reason="r")
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)"))
    assert not store.verify_audit().ok


def test_clock_is_injectable(db_url):
    fixed = datetime(2026, 5, 1, 12, tzinfo=UTC)
    store = RegistryStore.open(db_url, clock=lambda: fixed)
    register(store)
    assert store.get_version("router", 1).created_at == fixed
    assert store.audit_events()[0].ts == fixed.isoformat()
    store.close()


def test_reopening_runs_migrations_idempotently(db_url):
    RegistryStore.open(db_url).close()
    store = RegistryStore.open(db_url)
    register(store)
    assert store.models() == ["router"]
    store.close()


def test_instant_rollback_restores_the_previous_champion(store):
    for _ in range(2):
        register(store)
    store.promote("router", 1, actor="a", reason="first")
    with pytest.raises(NotFoundError, match="no previous champion"):
        store.rollback_champion("router", actor="ops", reason="3 a.m.")
    store.promote("router", 2, actor="a", reason="won the canary")
    restored, demoted = store.rollback_champion("router", actor="ops", reason="error spike")
    assert (restored, demoted) == (1, 2)
    assert store.aliases("router") == {"champion": 1}
    assert store.get_version("router", 2).status is S.ROLLED_BACK
    assert store.alias_history("router", "champion")[-1].reason == "error spike"
    assert store.verify_audit().ok


def test_stores_opened_from_many_threads_at_once_all_migrate(tmp_path):
    """Alembic's command API is not thread-safe (module-global proxies): opening stores concurrently used
    to fail with KeyError: 'script' in one of the threads."""
    import threading

    errors = []

    def open_one(k):
        try:
            RegistryStore.open(f"sqlite:///{tmp_path / f'r{k % 2}.db'}").close()
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_racing_conditional_appends_leave_exactly_one_event(db_url):
    """Four monitor runs find one drift at once: each appends its trigger unless one came within the cooldown
    (here: since the race began). In one transaction under the audit lock, exactly one appends; the others get that
    event back."""
    stores = [RegistryStore.open(db_url) for _ in range(4)]
    stores[0].append_audit(actor="monitor", action="slm.drift.detected", subject="router", payload={"run": "old"})
    stores[0].append_audit(actor="monitor", action="slm.drift.detected", subject="router-b", payload={"run": "b"})
    stores[0].append_audit(actor="flow", action="slm.gate.failed", subject="router:v2", payload={})
    since = datetime.now(UTC)  # the old trigger is before it: outside the cooldown
    barrier, outcomes = threading.Barrier(4), []

    def race(store, k):
        barrier.wait()
        outcomes.append(store.append_audit_unless_since(actor="monitor", action="slm.drift.detected",
                                                        subject="router", payload={"run": k}, since=since))

    threads = [threading.Thread(target=race, args=(s, k)) for k, s in enumerate(stores)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    won = [event for appended, event in outcomes if appended]
    assert len(won) == 1 and all(event.seq == won[0].seq for _, event in outcomes)
    router = [e.payload["run"] for e in stores[0].audit_events() if e.subject == "router"]
    assert router == ["old", won[0].payload["run"]]
    # The newest event of the actions, about the model or one of its versions (never another model's).
    assert stores[0].last_event_at(["slm.drift.detected"], "router") == datetime.fromisoformat(won[0].ts)
    gate = next(e for e in stores[0].audit_events() if e.action == "slm.gate.failed")
    assert stores[0].last_event_at(["slm.gate.failed", "slm.data.rejected"], "router") == datetime.fromisoformat(
        gate.ts)
    assert stores[0].last_event_at(["slm.gate.failed"], "router-b") is None
    assert stores[0].verify_audit().ok
    for s in stores:
        s.close()


@pytest.mark.postgres
def test_times_read_back_from_a_server_in_another_time_zone_are_utc(pg_database_url):
    """PostgreSQL returns timestamptz in the session's zone (the server's TimeZone): the registry converts them to
    UTC, so listings and reports that print them as UTC are right (they printed 13:00 "UTC" for 12:00 on a server
    in Berlin)."""
    from datetime import timedelta

    from reporting.page import _time

    noon = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    store = RegistryStore.open(f"{pg_database_url}?options=-c%20TimeZone%3DEurope/Berlin", clock=lambda: noon)
    with store.engine.connect() as conn:
        assert conn.execute(text("SHOW TimeZone")).scalar_one() == "Europe/Berlin"
    register(store)
    created = store.get_version("router", 1).created_at
    assert created.utcoffset() == timedelta(0) and created.hour == 12
    assert _time(created) == "2026-11-29 12:00:00 UTC"
    assert _time(datetime(2026, 11, 29, 13, 0, tzinfo=timezone(timedelta(hours=1)))) == "2026-11-29 12:00:00 UTC"
    store.close()
