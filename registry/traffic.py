"""The persisted traffic split: what every gateway replica serves, changed only through here.

One row per model. Each change bumps ``revision`` (compare-and-swap on it, so two admins cannot
silently overwrite each other) and writes an audit event in the same transaction. Replicas poll the
revision — one indexed read — and reload when it moved.
"""

from __future__ import annotations

import json

from sqlalchemy import select, update

from lifecycle.audit import canonical_json
from lifecycle.routing import TrafficSplit, check_new_split
from lifecycle.status import VersionStatus
from registry import schema as t
from registry.store import ConcurrentChangeError, RegistryStore


def get_split(store: RegistryStore, model: str) -> TrafficSplit | None:
    with store.engine.connect() as conn:
        return read_split(conn, model)


def read_split(conn, model: str) -> TrafficSplit | None:
    """:func:`get_split` inside the caller's transaction."""
    row = conn.execute(select(t.traffic_splits).where(t.traffic_splits.c.model == model)).first()
    return None if row is None else TrafficSplit(**json.loads(row.split_json), revision=row.revision)


def split_revision(store: RegistryStore, model: str) -> int | None:
    with store.engine.connect() as conn:
        return conn.execute(select(t.traffic_splits.c.revision).where(
            t.traffic_splits.c.model == model)).scalar_one_or_none()


def set_split(store: RegistryStore, split: TrafficSplit, *, actor: str, reason: str,
              expected_revision: int | None | type[...] = ...) -> TrafficSplit:
    """Persist ``split`` (its ``revision`` field is ignored) and return it with its new revision.

    Every version it names must exist and not be retired (archived or decommissioned: ValueError).
    ``expected_revision`` makes it a compare-and-swap: if another
    change landed since, nothing is written and :class:`ConcurrentChangeError` says so.
    """
    with store._tx() as conn:
        return write_split(store, conn, split, actor=actor, reason=reason, expected_revision=expected_revision)


def write_split(store: RegistryStore, conn, split: TrafficSplit, *, actor: str, reason: str,
                expected_revision: int | None | type[...] = ...) -> TrafficSplit:
    """:func:`set_split` inside the caller's transaction (``store._tx()``), so a split can move in one commit with
    the aliases it follows (``registry.operations``)."""
    check_new_split(split)
    store._lock_model(conn, split.model)
    for number in split.live_versions:
        status = store._status(conn, split.model, number)  # raises NotFoundError for an unknown version
        if status in (VersionStatus.ARCHIVED, VersionStatus.DECOMMISSIONED):
            raise ValueError(f"{split.model}:v{number} is {status} (retired): it cannot take traffic")
    current = conn.execute(select(t.traffic_splits.c.revision, t.traffic_splits.c.split_json).where(
        t.traffic_splits.c.model == split.model)).first()
    revision = current.revision if current else None
    if expected_revision is not ... and revision != expected_revision:
        raise ConcurrentChangeError(f"{split.model} split is at revision {revision}, not {expected_revision}: "
                                    "someone else changed it; re-read and decide again")
    body = canonical_json(split.model_dump(exclude={"revision"}))
    new = (revision or 0) + 1
    values = {"split_json": body, "revision": new, "updated_at": store.clock()}
    if current is None:
        conn.execute(t.traffic_splits.insert().values(model=split.model, **values))
    else:
        conn.execute(update(t.traffic_splits).where(t.traffic_splits.c.model == split.model).values(**values))
    store._audit(conn, actor, "traffic.split", split.model, {
        "from": json.loads(current.split_json) if current else None, "to": json.loads(body),
        "revision": new, "reason": reason})
    return split.model_copy(update={"revision": new})
