"""The registry store: versions and their statuses, aliases with history, lineage, evals, the audit chain.

Every write is one short transaction that also appends its audit event, so a decision and its record
land together or not at all. Serialization points: the model's row (version numbers, alias moves) and
the audit head (one chain per registry) are locked for the length of the transaction — ``FOR UPDATE`` on
PostgreSQL, the database write lock (``BEGIN IMMEDIATE``) on SQLite. Slow work that must not run twice at
once (publishing a version's files, retiring a version) holds a named lock of the registry instead
(:mod:`registry.locks`), outside any transaction, so the other writers never wait behind it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Connection, Engine, and_, create_engine, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from lifecycle.audit import (
    GENESIS_HASH,
    AuditEvent,
    ChainHead,
    RegistryRecords,
    VerifyResult,
    canonical_json,
    next_event,
    parse_payload,
    verify,
)
from lifecycle.names import check_model_name
from lifecycle.predictions import as_utc
from lifecycle.records import AliasMove, EvalReport, Lineage, ModelVersion, storable
from lifecycle.status import INITIAL_STATUSES, Alias, VersionStatus, check_transition
from registry import schema as t
from registry.db import from_db, is_postgres, make_engine, write_tx
from registry.locks import LockLost, named_lock
from registry.migrate import upgrade

#: Publish callback: given the allocated version number, store the artifact and return (uri, files).
Publish = Callable[[int], tuple[str, dict[str, str]]]

#: How long a registration waits for another registration of the same model to finish publishing its files.
REGISTER_WAIT_S = 1800.0

#: What a ``version.registered`` event records of the version itself: a caller's ``audit_payload`` may not set them.
REGISTERED_FACTS = ("status", "reason", "artifact_uri", "files")


class NotFoundError(LookupError):
    """A model, version or alias that the registry does not hold."""


class ConcurrentChangeError(RuntimeError):
    """An alias was moved by someone else between reading it and changing it."""


class ChampionReplaced(ConcurrentChangeError):
    """A candidate's registration found another champion than the one its gate compared it with."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def in_utc(clock: Callable[[], datetime]) -> Callable[[], datetime]:
    """``clock`` read in UTC. SQLite's DateTime drops the offset (12:00+02:00 would read back as 12:00Z), so every
    time the store writes is converted first; a naive time names no instant at all and is refused."""
    def now() -> datetime:
        value = clock()
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"the registry's clock returned {value!r}, a time without a time zone: "
                             "give it one (e.g. datetime.now(UTC))")
        return value.astimezone(UTC)
    return now


def _of_actions_about(actions: list[str], model: str):
    """Audit events of one of ``actions`` about ``model`` or one of its versions (``MODEL:...``; never another
    model whose name starts the same: ``router-b`` is not ``router``)."""
    subject = t.audit_events.c.subject
    return and_(t.audit_events.c.action.in_(actions),
                or_(subject == model, subject.startswith(f"{model}:", autoescape=True)))


class RegistryStore:
    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = in_utc(clock)  # every writer, here and in registry.*, reads the time through it
        self._lock_engine: Engine | None = None  # PostgreSQL: unpooled connections for named locks

    @classmethod
    def open(cls, url: str, clock: Callable[[], datetime] = utcnow) -> RegistryStore:
        engine = make_engine(url)
        upgrade(engine)
        return cls(engine, clock)

    def close(self) -> None:
        self.engine.dispose()
        if self._lock_engine is not None:
            self._lock_engine.dispose()

    # -- transactions and locks ----------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with write_tx(self.engine) as conn:
            yield conn

    def lock(self, name: str, *, wait_s: float, busy: str, required: bool = False):
        """A named lock of this registry, held outside any transaction (see :mod:`registry.locks`); raises
        :class:`registry.locks.LockBusy`, whose message starts with ``busy``, after ``wait_s``. Yields a
        :class:`registry.locks.Held`."""
        engine = self.engine
        if is_postgres(engine):  # a waiter holds a connection as long as it waits: not one of the pool's
            if self._lock_engine is None:
                self._lock_engine = create_engine(engine.url, poolclass=NullPool)
            engine = self._lock_engine
        return named_lock(engine, name, wait_s=wait_s, busy=busy, required=required)

    def _lock_model(self, conn: Connection, model: str, *, create: bool = False) -> int:
        """Lock the model's row for this transaction; return its last version number."""
        query = select(t.models.c.last_version).where(t.models.c.name == model).with_for_update()
        last = conn.execute(query).scalar_one_or_none()
        if last is not None:
            return last
        if not create:
            raise NotFoundError(f"model {model!r} is not in the registry")
        try:
            with conn.begin_nested():
                conn.execute(t.models.insert().values(name=model, created_at=self.clock(), last_version=0))
        except IntegrityError:
            pass  # created by a concurrent registration: lock the row it made
        return conn.execute(query).scalar_one()

    def _lock_head(self, conn: Connection):
        """Lock the audit head's row for this transaction, creating it (count 0) if the log has never had one.

        ``FOR UPDATE`` locks only a row that exists: before the first event two transactions would both find none,
        both take seq 1, and one fail. Inserting it with ON CONFLICT DO NOTHING first makes the second wait for the
        first's row, then lock it."""
        query = select(t.audit_head).where(t.audit_head.c.id == 1).with_for_update()
        row = conn.execute(query).first()
        if row is None:
            insert = (postgresql if is_postgres(self.engine) else sqlite).insert(t.audit_head)
            conn.execute(insert.values(id=1, count=0, last_hash=GENESIS_HASH).on_conflict_do_nothing())
            row = conn.execute(query).one()
        return row

    def _audit(self, conn: Connection, actor: str, action: str, subject: str,
               payload: dict[str, object]) -> AuditEvent:
        row = self._lock_head(conn)
        head = ChainHead(count=row.count, last_hash=row.last_hash)
        event = next_event(head, ts=self.clock(), actor=actor, action=action, subject=subject, payload=payload)
        conn.execute(t.audit_events.insert().values(
            seq=event.seq, ts=event.ts, actor=actor, action=action, subject=subject,
            payload=canonical_json(event.payload), prev_hash=event.prev_hash, hash=event.hash))
        conn.execute(update(t.audit_head).where(t.audit_head.c.id == 1)
                     .values(count=event.seq, last_hash=event.hash))
        return event

    # -- versions ------------------------------------------------------------------------------------

    def register_version(
        self, model: str, *, status: VersionStatus, prompt_format: str, reason: str, actor: str,
        publish: Publish, lineage: Lineage | None = None, evals: list[EvalReport] = (),
        unpublish: Callable[[int], None] | None = None, audit_payload: dict[str, object] | None = None,
        champion: int | None = None,
    ) -> ModelVersion:
        """Allocate the next number, publish the artifact, record the version — all or nothing.

        ``publish`` runs once the number is known, under the model's registration lock (:meth:`lock`) and outside
        any transaction: an upload of minutes holds no database lock (on SQLite the write lock of every process),
        and no other registration of the model can take its number meanwhile, so numbers have no gaps. If
        anything after it fails, ``unpublish`` removes what it stored, so no half-registered version is ever left
        behind.

        ``champion``: the number of the champion a candidate was gated against; checked in the recording transaction,
        under the model's lock: :class:`ChampionReplaced` (and nothing registered) if another is champion now.
        """
        if status not in INITIAL_STATUSES:
            raise ValueError(f"a version is registered as candidate or rejected, not {status}")
        check_model_name(model)  # the artifact paths and every MODEL:vN reference are built from it
        # Everything that could refuse to be stored is refused here, before publishing: after it, a refusal
        # would leave a published version unrecorded (or, without unpublish, its files behind).
        texts = _storable_texts(lineage, evals, audit_payload)
        with self.lock(f"register/{model}", wait_s=REGISTER_WAIT_S, required=True,
                       busy=f"another registration of {model} is still publishing its files") as held:
            number = self._last_version(model) + 1
            published: int | None = None
            try:
                uri, files = publish(number)
                published = number
                with self._tx() as conn:
                    last = self._lock_model(conn, model, create=True)
                    try:
                        held.check()
                    except LockLost:  # another registration may hold the number, and its files, now: keep them
                        published = None
                        raise
                    if last + 1 != number:  # a registration that skipped the lock: code from before it, mid-upgrade
                        published = None  # the number, and what is stored under it, are the other one's now
                        raise ConcurrentChangeError(f"{model}:v{number} was registered by another process while "
                                                    "this one published its files; every writer of the registry "
                                                    "must run this version of the code")
                    now = self._alias(conn, model, Alias.CHAMPION.value) if champion is not None else None
                    if now is not None and now != champion:  # (a model with no champion has none to compare with)
                        raise ChampionReplaced(f"{model}:v{number} was gated against {model}:v{champion}, and the "
                                               f"champion is {model}:v{now} now")
                    self._insert_version(conn, model, number, status=status, prompt_format=prompt_format,
                                         reason=reason, actor=actor, uri=uri, files=files, texts=texts,
                                         audit_payload=audit_payload)
            except BaseException:
                if published is not None and unpublish is not None:
                    unpublish(published)
                raise
        return self.get_version(model, number)

    def _last_version(self, model: str) -> int:
        with self.engine.connect() as conn:
            last = conn.execute(select(t.models.c.last_version).where(t.models.c.name == model)).scalar_one_or_none()
        return last or 0

    def _insert_version(self, conn: Connection, model: str, number: int, *, status: VersionStatus,
                        prompt_format: str, reason: str, actor: str, uri: str, files: dict[str, str],
                        texts: _Texts, audit_payload: dict[str, object] | None) -> None:
        now = self.clock()
        conn.execute(t.versions.insert().values(
            model=model, number=number, status=status.value, created_at=now, artifact_uri=uri,
            prompt_format=prompt_format, reason=reason, files_json=canonical_json(files), lineage_json=texts.lineage))
        conn.execute(update(t.models).where(t.models.c.name == model).values(last_version=number))
        for benchmark, report_json in texts.evals:
            conn.execute(t.evals.insert().values(model=model, number=number, benchmark=benchmark,
                                                 report_json=report_json))
        conn.execute(t.status_history.insert().values(
            model=model, number=number, from_status=None, to_status=status.value, at=now,
            actor=actor, reason=reason))
        self._audit(conn, actor, "version.registered", f"{model}:v{number}",
                    {**(audit_payload or {}), "status": status.value, "reason": reason, "artifact_uri": uri,
                     "files": files})  # the facts last: they win (colliding keys were refused before publishing)

    def set_status(self, model: str, number: int, status: VersionStatus, *, actor: str, reason: str) -> None:
        with self._tx() as conn:
            self._lock_model(conn, model)
            self._set_status(conn, model, number, status, actor=actor, reason=reason)

    def _set_status(self, conn: Connection, model: str, number: int, status: VersionStatus, *,
                    actor: str, reason: str) -> None:
        current = self._status(conn, model, number)
        check_transition(current, status)
        conn.execute(update(t.versions).where(t.versions.c.model == model, t.versions.c.number == number)
                     .values(status=status.value))
        conn.execute(t.status_history.insert().values(
            model=model, number=number, from_status=current.value, to_status=status.value,
            at=self.clock(), actor=actor, reason=reason))
        self._audit(conn, actor, "version.status", f"{model}:v{number}",
                    {"from": current.value, "to": status.value, "reason": reason})

    def _status(self, conn: Connection, model: str, number: int) -> VersionStatus:
        value = conn.execute(select(t.versions.c.status).where(
            t.versions.c.model == model, t.versions.c.number == number)).scalar_one_or_none()
        if value is None:
            raise NotFoundError(f"version {model}:v{number} is not in the registry")
        return VersionStatus(value)

    def get_version(self, model: str, number: int) -> ModelVersion:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.versions).where(
                t.versions.c.model == model, t.versions.c.number == number)).first()
            if row is None:
                raise NotFoundError(f"version {model}:v{number} is not in the registry")
            reports = conn.execute(select(t.evals.c.report_json).where(
                t.evals.c.model == model, t.evals.c.number == number).order_by(t.evals.c.benchmark)).scalars()
            return _version(row, [EvalReport.model_validate_json(r) for r in reports])

    def list_versions(self, model: str | None = None) -> list[ModelVersion]:
        query = select(t.versions).order_by(t.versions.c.model, t.versions.c.number)
        if model is not None:
            query = query.where(t.versions.c.model == model)
        with self.engine.connect() as conn:
            return [_version(row, []) for row in conn.execute(query)]

    def models(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(t.models.c.name).order_by(t.models.c.name)).scalars())

    def status_history(self, model: str, number: int) -> list[dict[str, object]]:
        query = select(t.status_history).where(t.status_history.c.model == model,
                                               t.status_history.c.number == number).order_by(t.status_history.c.id)
        with self.engine.connect() as conn:
            return [{**row._mapping, "at": from_db(row.at)} for row in conn.execute(query)]

    # -- aliases ---------------------------------------------------------------------------------------

    def get_alias(self, model: str, alias: Alias | str) -> int | None:
        with self.engine.connect() as conn:
            return self._alias(conn, model, str(alias))

    def aliases(self, model: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.aliases.c.alias, t.aliases.c.number).where(t.aliases.c.model == model))
            return {r.alias: r.number for r in rows}

    def _alias(self, conn: Connection, model: str, alias: str) -> int | None:
        return conn.execute(select(t.aliases.c.number).where(
            t.aliases.c.model == model, t.aliases.c.alias == alias)).scalar_one_or_none()

    def _move(self, conn: Connection, model: str, alias: str, number: int | None, *, actor: str,
              reason: str) -> int | None:
        current = self._alias(conn, model, alias)
        if current == number:
            return current
        if number is not None:
            self._status(conn, model, number)  # must exist
        now = self.clock()
        where = (t.aliases.c.model == model, t.aliases.c.alias == alias)
        if number is None:
            conn.execute(t.aliases.delete().where(*where))
        elif current is None:
            conn.execute(t.aliases.insert().values(model=model, alias=alias, number=number, updated_at=now))
        else:
            conn.execute(update(t.aliases).where(*where).values(number=number, updated_at=now))
        conn.execute(t.alias_history.insert().values(model=model, alias=alias, number=number,
                                                     previous_number=current, moved_at=now, actor=actor,
                                                     reason=reason))
        self._audit(conn, actor, "alias.moved", model,
                    {"alias": alias, "from": current, "to": number, "reason": reason})
        return current

    def move_alias(self, model: str, alias: Alias | str, number: int | None, *, actor: str, reason: str,
                   expected: int | None | type[...] = ...) -> int | None:
        """Point ``alias`` at ``number`` (None clears it); returns what it pointed to before.

        ``expected`` makes it a compare-and-swap: if the alias no longer points there, nothing changes
        and :class:`ConcurrentChangeError` says who holds it now.
        """
        alias = Alias(alias).value
        with self._tx() as conn:
            self._lock_model(conn, model)
            current = self._alias(conn, model, alias)
            if expected is not ... and current != expected:
                raise ConcurrentChangeError(f"{model} {alias} points to v{current}, not v{expected} as expected: "
                                            "someone else moved it; re-read and decide again")
            return self._move(conn, model, alias, number, actor=actor, reason=reason)

    def promote(self, model: str, number: int, *, actor: str, reason: str,
                expected_champion: int | None | type[...] = ...) -> int | None:
        """Make ``number`` the champion: old champion becomes ``previous``, status → promoted.

        One transaction under the model lock: two racing promotions serialize, and with
        ``expected_champion`` the second one fails instead of silently overriding the first.
        Returns the former champion.
        """
        with self._tx() as conn:
            return self._promote(conn, model, number, actor=actor, reason=reason, expected_champion=expected_champion)

    def _promote(self, conn: Connection, model: str, number: int, *, actor: str, reason: str,
                 expected_champion: int | None | type[...] = ...) -> int | None:
        """:meth:`promote` inside the caller's transaction."""
        self._lock_model(conn, model)
        champion = self._alias(conn, model, Alias.CHAMPION)
        if expected_champion is not ... and champion != expected_champion:
            raise ConcurrentChangeError(f"{model} champion is v{champion}, not v{expected_champion}: "
                                        "another promotion won; nothing was changed")
        if champion == number:
            return champion
        self._set_status(conn, model, number, VersionStatus.PROMOTED, actor=actor, reason=reason)
        self._move(conn, model, Alias.CHAMPION, number, actor=actor, reason=reason)
        if champion is not None:
            self._move(conn, model, Alias.PREVIOUS, champion, actor=actor,
                       reason=f"replaced as champion by v{number}")
        if self._alias(conn, model, Alias.CHALLENGER) == number:
            self._move(conn, model, Alias.CHALLENGER, None, actor=actor, reason="promoted to champion")
        return champion

    def rollback_champion(self, model: str, *, actor: str, reason: str) -> tuple[int, int]:
        """Instant rollback: ``previous`` becomes champion again, the demoted champion is ``rolled_back``.

        One transaction under the model lock. Returns (restored champion, rolled-back version).
        """
        with self._tx() as conn:
            return self._rollback_champion(conn, model, actor=actor, reason=reason)

    def _rollback_champion(self, conn: Connection, model: str, *, actor: str, reason: str) -> tuple[int, int]:
        """:meth:`rollback_champion` inside the caller's transaction."""
        self._lock_model(conn, model)
        champion = self._alias(conn, model, Alias.CHAMPION)
        previous = self._alias(conn, model, Alias.PREVIOUS)
        if champion is None or previous is None:
            raise NotFoundError(f"{model} has no previous champion to roll back to "
                                f"(champion v{champion}, previous {previous and f'v{previous}'})")
        self._move(conn, model, Alias.CHAMPION, previous, actor=actor, reason=reason)
        self._move(conn, model, Alias.PREVIOUS, None, actor=actor, reason=f"v{previous} restored as champion")
        self._set_status(conn, model, champion, VersionStatus.ROLLED_BACK, actor=actor, reason=reason)
        return previous, champion

    def alias_history(self, model: str, alias: Alias | str) -> list[AliasMove]:
        query = select(t.alias_history).where(t.alias_history.c.model == model,
                                              t.alias_history.c.alias == str(alias)).order_by(t.alias_history.c.id)
        with self.engine.connect() as conn:
            return [AliasMove(model=r.model, alias=r.alias, version=r.number, previous_version=r.previous_number,
                              moved_at=from_db(r.moved_at), actor=r.actor, reason=r.reason)
                    for r in conn.execute(query)]

    # -- audit -----------------------------------------------------------------------------------------

    def append_audit(self, *, actor: str, action: str, subject: str, payload: dict[str, object]) -> AuditEvent:
        with self._tx() as conn:
            return self._audit(conn, actor, action, subject, payload)

    def last_event_at(self, actions: list[str], model: str) -> datetime | None:
        """When the newest event of one of ``actions`` about ``model`` or one of its versions (``MODEL:...``) was
        logged; None if none was. An indexed query, not a read of the whole log."""
        event = self.last_event(actions, model)
        return None if event is None else event.at

    def last_event(self, actions: list[str], model: str) -> AuditEvent | None:
        """The newest event of one of ``actions`` about ``model`` or one of its versions; None if none was logged."""
        query = (select(t.audit_events).where(_of_actions_about(actions, model))
                 .order_by(t.audit_events.c.seq.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _event(row)

    def events_about(self, model: str, actions: list[str]) -> list[AuditEvent]:
        """The events of ``actions`` about ``model`` or one of its versions, oldest first (an indexed query)."""
        query = select(t.audit_events).where(_of_actions_about(actions, model)).order_by(t.audit_events.c.seq)
        with self.engine.connect() as conn:
            return [_event(row) for row in conn.execute(query)]

    def append_audit_unless_since(self, *, actor: str, action: str, subject: str, payload: dict[str, object],
                                  since: datetime) -> tuple[bool, AuditEvent]:
        """Append, unless an event of ``action`` about ``subject`` was logged at or after ``since``. Returns (True,
        the event appended) or (False, that earlier event). One transaction under the audit head's lock (the write
        lock on SQLite), so two processes deciding at once cannot both append, as a check and then an append could
        (the drift monitor's trigger: two monitor runs finding one drift started two retrains)."""
        with self._tx() as conn:
            self._lock_head(conn)  # created if missing: two first-ever appends must queue here too
            last = conn.execute(select(t.audit_events).where(t.audit_events.c.action == action,
                                                             t.audit_events.c.subject == subject)
                                .order_by(t.audit_events.c.seq.desc()).limit(1)).first()
            if last is not None and (earlier := _event(last)).at >= as_utc(since):
                return False, earlier
            return True, self._audit(conn, actor, action, subject, payload)

    def audit_events(self) -> list[AuditEvent]:
        """Every event in order; a row edited past parsing comes back as a stand-in (:func:`is_unreadable`), so
        the log can still be read where it matters most, after tampering (``verify_audit`` reports it)."""
        with self.engine.connect() as conn:
            return [_read_event(r) for r in conn.execute(select(t.audit_events).order_by(t.audit_events.c.seq))]

    def has_event(self, action: str, subject: str) -> bool:
        """Is there an audit event of ``action`` about ``subject``? (One indexed query, not the whole log.)"""
        query = select(t.audit_events.c.seq).where(t.audit_events.c.action == action,
                                                   t.audit_events.c.subject == subject).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def audit_head(self) -> ChainHead | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.audit_head).where(t.audit_head.c.id == 1)).first()
            return ChainHead(count=row.count, last_hash=row.last_hash) if row else None

    def verify_audit(self) -> VerifyResult:
        # Lock the head first (appenders wait on it), then read the events: under PostgreSQL's READ COMMITTED
        # each statement has its own snapshot, so without the lock an append in between would look like
        # tampering. On SQLite the write transaction already excludes appenders.
        # Every write of versions, status_history and alias_history appends its event in the same transaction, so
        # under the head's lock the counts read here are consistent with the events.
        with self._tx() as conn:
            head = conn.execute(select(t.audit_head).where(t.audit_head.c.id == 1).with_for_update()).first()
            rows = conn.execute(select(t.audit_events).order_by(t.audit_events.c.seq)).all()
            records = _records(conn)
        stored_head = ChainHead(count=head.count, last_hash=head.last_hash) if head else None
        events, unreadable = [], []
        for position, row in enumerate(rows, start=1):
            try:
                events.append(_event(row))
            except ValueError as exc:  # a payload edited into non-JSON or NaN, a seq below 1, a ts that is not text
                events.append(_unreadable_event(row))
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                unreadable.append(f"event at position {position} (seq {row.seq}) cannot even be read back ({reason}): "
                                  "it was edited")
        result = verify(events, stored_head, records)
        # The chain's own findings come first: they are in row order, so the first one names the first bad row.
        return result.model_copy(update={"problems": result.problems + unreadable}) if unreadable else result


class _Texts(NamedTuple):
    """What a registration stores as JSON text, serialized before anything is published."""

    lineage: str | None
    evals: list[tuple[str, str]]  # (benchmark, report JSON)


def _storable_texts(lineage: Lineage | None, evals: list[EvalReport],
                    audit_payload: dict[str, object] | None) -> _Texts:
    """Validate and serialize a registration's records, or raise ValueError naming what cannot be stored: a
    non-finite float in a required field (:mod:`lifecycle.records`; optional ones become None), an audit payload
    key that would overwrite the event's own facts, anything with no JSON text."""
    if clash := sorted(set(audit_payload or {}) & set(REGISTERED_FACTS)):
        raise ValueError(f"audit_payload may not set {', '.join(clash)}: the version.registered event records "
                         "the version's own")
    lineage = storable(lineage) if lineage is not None else None
    evals = [storable(report) for report in evals]
    try:
        canonical_json(audit_payload or {}).encode("utf-8")
        texts = _Texts(lineage=_text(lineage.model_dump(mode="json")) if lineage is not None else None,
                       evals=[(r.benchmark, _text(r.model_dump(mode="json"))) for r in evals])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the registration cannot be stored: {exc}") from None
    return texts


def _text(value: object) -> str:
    text = canonical_json(value)
    text.encode("utf-8")  # a lone surrogate has no UTF-8: refused now, not by the database after publishing
    return text


def _records(conn: Connection) -> RegistryRecords:
    """What the registry's tables hold that the audit log must account for (see :func:`lifecycle.audit.verify`)."""
    versions = conn.execute(select(t.versions.c.model, t.versions.c.number)
                            .order_by(t.versions.c.model, t.versions.c.number)).all()
    status_changes, alias_moves = (conn.execute(select(func.count()).select_from(table)).scalar_one()
                                   for table in (t.status_history, t.alias_history))
    return RegistryRecords(versions=[f"{m}:v{n}" for m, n in versions], status_changes=status_changes,
                           alias_moves=alias_moves)


def _version(row, reports: list[EvalReport]) -> ModelVersion:
    return ModelVersion(
        model=row.model, number=row.number, status=VersionStatus(row.status), created_at=from_db(row.created_at),
        artifact_uri=row.artifact_uri, prompt_format=row.prompt_format, reason=row.reason,
        lineage=Lineage.model_validate_json(row.lineage_json) if row.lineage_json else None,
        evals=reports, files=json.loads(row.files_json))


def _read_event(row) -> AuditEvent:
    try:
        return _event(row)
    except ValueError:  # a payload edited into non-JSON or NaN, a seq below 1, a ts that is not text
        return _unreadable_event(row)


def is_unreadable(event: AuditEvent) -> bool:
    """A stand-in for a row that could not be read back (its payload holds only the raw text)."""
    return set(event.payload) == {"unreadable"}


def _unreadable_event(row) -> AuditEvent:
    """A stand-in for a row edited past parsing: its recomputed hash cannot match, so :func:`verify` reports it
    at its position like any other edit, and the rows after it are still checked."""
    return AuditEvent.model_construct(seq=row.seq, ts=str(row.ts), actor=str(row.actor), action=str(row.action),
                                      subject=str(row.subject), payload={"unreadable": str(row.payload)},
                                      prev_hash=str(row.prev_hash), hash=str(row.hash))


def _event(row) -> AuditEvent:
    """A stored event, or ValueError: its payload must be one :func:`lifecycle.audit.parse_payload` accepts (what
    could have been hashed), so every event read back can be hashed again."""
    return AuditEvent(seq=row.seq, ts=row.ts, actor=row.actor, action=row.action, subject=row.subject,
                      payload=parse_payload(row.payload), prev_hash=row.prev_hash, hash=row.hash)
