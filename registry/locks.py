"""Named locks shared by every process that uses one registry database, held outside any transaction.

Some work must not run twice at once but is too slow for a database transaction: publishing a version's files
(an upload to the Hub can take minutes) and retiring a version (moving its weights). Held in a write
transaction, it would hold SQLite's one write lock all along, and every other writer (the gateways' prediction
log, the rollout's audit events) would wait behind it and fail after the busy timeout.

- PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) on a connection of its own, so hosts sharing
  the registry exclude each other; the server releases it when the connection ends, a crashed process's included.
- SQLite: an exclusive ``flock`` on a file in ``<database>.locks/`` beside the database file (a SQLite database is
  only ever shared by processes on one host); the kernel releases it when the process dies.
- SQLite in memory: a lock of this process (nothing else can open that database).

A holder waits up to ``wait_s`` and then gets :class:`LockBusy`, whose message says what was under way. The
holder gets a :class:`Held`, whose :meth:`Held.check` raises :class:`LockLost` if the lock ended under it: on
PostgreSQL a lock lives as long as its connection, which a server restart, ``pg_terminate_backend`` or an idle
timeout can end while the holder still works (a transaction-pooling PgBouncer in between is not supported: it
hands the session, and the lock, to other clients). A flock cannot be lost while its file is open.

On a file system without ``flock`` (some FUSE and CIFS mounts) a lock taken with ``required=False`` logs a warning
and lets the work go on unserialized (retirement: each step is idempotent); ``required=True`` raises
:class:`LockUnavailable` instead (registration: two registrations sharing a number would delete each other's
files). Locks are not reentrant: a holder that asks for the same name again waits for itself until ``wait_s``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

POLL_S = 0.2
_in_process: dict[str, threading.Lock] = {}
_in_process_guard = threading.Lock()


class LockBusy(RuntimeError):
    """Another process has held a named lock for longer than the wait."""


class LockLost(RuntimeError):
    """A named lock ended while its holder still held it (its PostgreSQL connection was closed)."""


class LockUnavailable(RuntimeError):
    """A lock that the work requires cannot be taken on this file system."""


class Held:
    """A lock being held; :meth:`check` before making the work's outcome permanent."""

    def __init__(self, name: str, conn: Connection | None = None) -> None:
        self.name, self._conn = name, conn

    def check(self) -> None:
        """Raise :class:`LockLost` if the lock has ended (only a PostgreSQL lock can: with its connection)."""
        if self._conn is None:
            return
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.rollback()
        except Exception as exc:
            raise LockLost(f"the lock {self.name!r} was lost with its database connection ({type(exc).__name__}); "
                           "another process may have taken it since") from exc


def lock_file(database: str, name: str) -> Path:
    """Where the SQLite lock named ``name`` lives: readable, and distinct for distinct names."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    path = Path(database)
    return path.with_name(f"{path.name}.locks") / f"{safe}-{digest}.lock"


def advisory_key(name: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock``, from the name's sha256."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def named_lock(engine: Engine, name: str, *, wait_s: float, busy: str, required: bool = False) -> Iterator[Held]:
    """Hold the lock ``name`` of the registry behind ``engine``; ``busy`` starts the :class:`LockBusy` message.
    On PostgreSQL give an engine whose connections are not pooled (``NullPool``): a waiter holds one for as long
    as it waits, and a lock that escaped its release must end with its connection, not live on in a pool."""
    if engine.dialect.name == "postgresql":
        cm = _advisory(engine, name, wait_s, busy)
    elif engine.url.database and engine.url.database != ":memory:":
        cm = _flock(lock_file(engine.url.database, name), wait_s, busy, required)
    else:
        cm = _thread_lock(name, wait_s, busy)
    with cm as held:
        yield held


def _waited(busy: str, wait_s: float, where: str) -> LockBusy:
    return LockBusy(f"{busy} (lock {where} held for over {wait_s:.0f} s)")


@contextlib.contextmanager
def _advisory(engine: Engine, name: str, wait_s: float, busy: str) -> Iterator[Held]:
    key, deadline = advisory_key(name), time.monotonic() + wait_s
    conn = engine.connect()
    try:
        while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one():
            conn.rollback()
            if time.monotonic() > deadline:
                raise _waited(busy, wait_s, f"pg_advisory_lock {key} ({name})")
            time.sleep(POLL_S)
        conn.commit()  # a session lock outlives the transaction: the connection does not sit idle in one
    except BaseException:
        conn.invalidate()  # interrupted after the lock was granted, perhaps: end the session, and the lock with it
        conn.close()
        raise
    try:
        yield Held(name, conn)
    finally:
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
            conn.close()
        except Exception:  # the unlock did not reach the server: drop the connection, which ends the lock with it
            log.warning("could not release advisory lock %s (%s); closing its connection", key, name, exc_info=True)
            conn.invalidate()
            conn.close()


@contextlib.contextmanager
def _flock(path: Path, wait_s: float, busy: str, required: bool) -> Iterator[Held]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        locked = _acquire_flock(handle, path, wait_s, busy, required)
        try:
            yield Held(str(path))
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire_flock(handle, path: Path, wait_s: float, busy: str, required: bool) -> bool:
    """True once locked; False on a file system without locks when the lock is not ``required``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise _waited(busy, wait_s, str(path)) from None
            time.sleep(POLL_S)
        except OSError as exc:
            if required:
                raise LockUnavailable(f"{path} cannot be locked ({exc}); this work must not run unserialized: keep "
                                      "the registry database on a local file system, or use PostgreSQL") from exc
            log.warning("going on without a lock: %s cannot be locked (%s), so this work is not kept apart from "
                        "another process's (%s)", path, exc, busy)
            return False


@contextlib.contextmanager
def _thread_lock(name: str, wait_s: float, busy: str) -> Iterator[Held]:
    with _in_process_guard:
        lock = _in_process.setdefault(name, threading.Lock())
    if not lock.acquire(timeout=wait_s):
        raise _waited(busy, wait_s, f"in-process {name!r}")
    try:
        yield Held(name)
    finally:
        lock.release()
