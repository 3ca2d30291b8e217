"""The prediction log: every answer the gateway gave (or shadowed), the callers' feedback, and per-version
aggregates of a time window for the rollout and the drift monitor.

``PredictionStore`` is the table access: batched, idempotent inserts (a re-sent batch never doubles a
row), feedback, aggregates and windows. ``PredictionWriter`` sits in front of it in the gateway: ``write``
only appends to an in-memory queue, and one background thread stores the queue in batches, retrying with
backoff — a locked SQLite file or a PostgreSQL restart delays rows, it never loses them silently.

Windows are half-open, ``since <= ts < until``, so consecutive windows count every row exactly once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
from sqlalchemy import Engine, Float, and_, case, delete, distinct, false, func, literal, or_, select, true
from sqlalchemy.dialects import postgresql, sqlite

from lifecycle.predictions import ByCaller, Feedback, LoggedPrediction, Prediction, VersionAggregate, as_utc
from lifecycle.sequential import clustered_ratio_variance
from registry import schema as t
from registry.db import from_db, write_tx

log = logging.getLogger(__name__)
P, F = t.predictions, t.feedback
_PREDICTION_FIELDS = list(Prediction.model_fields)
_FLOAT_SUMS = ("latency_sum_ms", "latency_sum_sq_ms2")
# What the rollout tests, as (events, trials) sums: rates, and the mean latency of the ok answers. Seen by
# caller in VersionAggregate.by_caller.
_TESTED = (("model_errors", "requests"), ("infra_errors", "requests"), ("guardrail_flagged", "requests"),
           ("feedback_success", "feedback_count"), ("latency_sum_ms", "ok"))


class UnknownRequestError(LookupError):
    """Feedback names a request id that the prediction log does not hold (yet: see ``record_feedback``)."""


class BackpressureError(RuntimeError):
    """The writer's queue stayed full: the database has not kept up for ``max_queue`` rows."""


def _clean(text: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; replace it on both backends so they store the same text. The
    # sha256 columns keep the hash of the text as received.
    return None if text is None else text.replace("\x00", "\ufffd")


@dataclass(frozen=True)
class ServedColumns:
    """Served answers of a window as parallel columns (texts are None under hash-only logging)."""

    prompt: list[str | None]
    completion: list[str | None]
    outcome: list[str]
    latency_ms: list[float]


class PredictionStore:
    """The ``predictions`` and ``feedback`` tables. ``store_text=False`` is hash-only logging: prompts and
    completions are dropped before storage and only their sha256 is kept."""

    def __init__(self, engine: Engine, *, store_text: bool = True) -> None:
        self.engine = engine
        self.store_text = store_text
        # Both supported dialects speak INSERT ... ON CONFLICT; it is race-free between processes, where a
        # check-then-insert would not be.
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def _row(self, p: Prediction) -> dict[str, object]:
        row = p.model_dump(include=set(_PREDICTION_FIELDS))
        row.update(prompt=_clean(p.prompt) if self.store_text else None,
                   completion=_clean(p.completion) if self.store_text else None,
                   error=_clean(p.error), guardrail_flags=json.dumps(p.guardrail_flags))
        return row

    def insert_many(self, predictions: Sequence[Prediction]) -> None:
        """Store a batch in one transaction (one executemany).

        A prediction whose (request_id, role) is already stored is skipped, so re-sending a batch after
        an ambiguous failure (commit succeeded, connection lost before the reply) is safe. No count of
        new rows is returned: PostgreSQL reports none for executemany, and RETURNING made batches 3-4x
        slower there (measured: 28k against 7.5k rows/s for batches of 256).
        """
        if not predictions:
            return
        stmt = self._insert(P).on_conflict_do_nothing(index_elements=["request_id", "role"])
        with write_tx(self.engine) as conn:
            conn.execute(stmt, [self._row(p) for p in predictions])

    def record_feedback(self, feedback: Feedback) -> None:
        """Record the caller's feedback on a request; a later feedback for the same request replaces it
        (last write wins: callers may change their mind).

        Raises ``UnknownRequestError`` when no prediction of that request is stored — including one still
        queued in a ``PredictionWriter``: flush the writer and retry once before giving up.
        """
        values = {"request_id": feedback.request_id, "outcome": feedback.outcome, "score": feedback.score,
                  "ts": feedback.ts}
        stmt = self._insert(F).values(**values)
        upsert = stmt.on_conflict_do_update(index_elements=["request_id"],
                                            set_={k: stmt.excluded[k] for k in ("outcome", "score", "ts")})
        with write_tx(self.engine) as conn:
            known = conn.execute(select(P.c.id).where(P.c.request_id == feedback.request_id).limit(1)).first()
            if known is None:
                raise UnknownRequestError(f"no prediction with request id {feedback.request_id!r} is logged")
            conn.execute(upsert)

    @staticmethod
    def _window(model: str, since: datetime, until: datetime):
        start, end = as_utc(since), as_utc(until)
        if end <= start:
            raise ValueError(f"empty window: until ({end}) must be after since ({start})")
        # Feedback judges the answer the caller saw: it joins served rows only, never shadow rows.
        joined = P.outerjoin(F, and_(F.c.request_id == P.c.request_id, P.c.served))
        return start, end, joined, and_(P.c.model == model, P.c.ts >= start, P.c.ts < end)

    def aggregates(self, model: str, since: datetime, until: datetime, by_caller: bool = False,
                   min_split_revision: int | None = None, routed_only: bool = False,
                   mirrored_only: bool = False) -> list[VersionAggregate]:
        """One aggregate per (version, role) with rows in ``[since, until)``, sorted by version then role.
        ``by_caller``: also each tested sum seen by caller (``VersionAggregate.by_caller``; one more query,
        grouped by caller), what the rollout's tests need; other readers leave it out. ``min_split_revision``:
        only the rows of requests routed by that revision of the traffic split or a later one (a rollout's
        stage: never the requests a gateway still routed by the previous split). Rows without a revision (from a
        gateway older than the column, still running after an upgrade) count by time alone, as before it.
        ``routed_only``: leave out the requests whose caller named the version (``Prediction.pinned``), and their
        shadow copies: the split did not choose them (a rollout's arms). ``mirrored_only``: leave out the served
        requests whose shadow copy the gateway shed (``Prediction.shadow_shed``): a shadow stage's arms, compared on
        the requests that have a copy.

        Counts and the sums of ``ok`` latencies and of their squares (for the latency mean test) come from
        SQL; latency percentiles from the window's ``ok`` latencies with numpy, so SQLite and PostgreSQL give
        the same numbers (their percentile functions differ or are missing).
        """
        start, end, joined, in_window = self._window(model, since, until)
        if min_split_revision is not None:
            in_window = and_(in_window, or_(P.c.split_revision >= min_split_revision, P.c.split_revision.is_(None)))
        if routed_only:
            in_window = and_(in_window, P.c.pinned == false())
        if mirrored_only:
            in_window = and_(in_window, P.c.shadow_shed == false())

        counts = (select(P.c.version, P.c.role, *_tested_sums(),
                         func.count(distinct(P.c.user_hash)).label("users"), _count_where(P.c.served).label("served"),
                         _count_where(P.c.outcome == "input_error").label("input_errors"),
                         func.sum(P.c.prompt_tokens).label("prompt_tokens"),
                         func.sum(P.c.completion_tokens).label("completion_tokens"),
                         _ok_sum(P.c.latency_ms * P.c.latency_ms).label("latency_sum_sq_ms2"))
                  .select_from(joined).where(in_window).group_by(P.c.version, P.c.role)
                  .order_by(P.c.version, P.c.role))
        latencies = select(P.c.version, P.c.role, P.c.latency_ms).where(in_window, P.c.outcome == "ok")
        with self.engine.connect() as conn:
            groups = conn.execute(counts).all()
            by_group: dict[tuple[int, str], list[float]] = defaultdict(list)
            for version, role, ms in conn.execute(latencies):
                by_group[(version, role)].append(ms)
            callers = _by_caller(conn, joined, in_window) if by_caller else {}
        result = []
        for g in groups:
            ms = by_group.get((g.version, g.role))
            p50, p95, p99 = (float(x) for x in np.percentile(ms, [50, 95, 99])) if ms else (None, None, None)
            fields = {k: int(v) for k, v in g._mapping.items() if k not in ("version", "role", *_FLOAT_SUMS)}
            fields.update({k: float(g._mapping[k]) for k in _FLOAT_SUMS})
            result.append(VersionAggregate(
                model=model, version=g.version, role=g.role, latency_p50_ms=p50, latency_p95_ms=p95,
                latency_p99_ms=p99, window_start=start, window_end=end,
                by_caller=callers.get((g.version, g.role)), **fields))
        return result

    def stale_requests(self, model: str, since: datetime, until: datetime, min_split_revision: int) -> int:
        """The requests in ``[since, until)`` that a traffic split older than ``min_split_revision`` routed: what
        ``aggregates(..., min_split_revision=...)`` leaves out. Requests, not rows: a shadow copy is not counted; nor
        is a request whose caller named the version (the split did not route it)."""
        return self._routed_requests(model, since, until, P.c.split_revision < min_split_revision)

    def shed_requests(self, model: str, since: datetime, until: datetime, min_split_revision: int | None) -> int:
        """The requests in ``[since, until)``, routed by that revision of the split or a later one, that were served
        without their shadow copy (``Prediction.shadow_shed``): what ``aggregates(..., mirrored_only=True)`` leaves
        out of a shadow stage's arms."""
        revision = true() if min_split_revision is None else or_(P.c.split_revision >= min_split_revision,
                                                                 P.c.split_revision.is_(None))
        return self._routed_requests(model, since, until, revision, P.c.shadow_shed == true())

    def _routed_requests(self, model: str, since: datetime, until: datetime, *conditions) -> int:
        """Requests (not rows: shadow copies are not counted) in the window that the split routed (not pinned),
        meeting ``conditions``."""
        _, _, _, in_window = self._window(model, since, until)
        query = select(func.count()).select_from(P).where(in_window, P.c.role != "shadow", P.c.pinned == false(),
                                                          *conditions)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def window(self, model: str, since: datetime, until: datetime,
               limit: int | None = 10_000) -> list[LoggedPrediction]:
        """The newest ``limit`` predictions in ``[since, until)`` (all of them when ``limit`` is None), in
        time order, each with the feedback outcome and score of its request when it was served."""
        _, _, joined, in_window = self._window(model, since, until)
        query = (select(P, F.c.outcome.label("feedback"), F.c.score.label("feedback_score"))
                 .select_from(joined).where(in_window).order_by(P.c.ts.desc(), P.c.id.desc()))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_logged(row._mapping) for row in reversed(rows)]

    def served_columns(self, model: str, since: datetime, until: datetime) -> ServedColumns:
        """The served answers of ``[since, until)`` column by column, in time order, for bulk readers (the drift
        monitor): no record per row, so 100,000 rows take ~0.3 s where ``window`` takes ~3.3 s."""
        _, _, _, in_window = self._window(model, since, until)
        query = (select(P.c.prompt, P.c.completion, P.c.outcome, P.c.latency_ms)
                 .where(in_window, P.c.served).order_by(P.c.ts, P.c.id))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return ServedColumns(prompt=[r[0] for r in rows], completion=[r[1] for r in rows],
                             outcome=[r[2] for r in rows], latency_ms=[r[3] for r in rows])

    def count(self, model: str, before: datetime | None = None) -> int:
        """The model's logged rows (served and shadow), or those logged before ``before``."""
        where = P.c.model == model if before is None else and_(P.c.model == model, P.c.ts < as_utc(before))
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(P).where(where)).scalar_one()

    def purge_before(self, model: str, cutoff: datetime, batch: int = 2000) -> tuple[int, int]:
        """Delete the model's rows logged before ``cutoff`` and the feedback on their requests: (rows, feedback).

        ``batch`` rows a transaction, oldest first: the gateways keep writing meanwhile (SQLite has one writer),
        and a purge stopped halfway leaves a log that is whole after some cutoff — the next run finishes it.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1 row, got {batch}")
        end, rows, feedback = as_utc(cutoff), 0, 0
        while True:
            with write_tx(self.engine) as conn:
                old = conn.execute(select(P.c.id, P.c.request_id).where(P.c.model == model, P.c.ts < end)
                                   .order_by(P.c.ts, P.c.id).limit(batch)).all()
                if not old:
                    return rows, feedback
                feedback += conn.execute(delete(F).where(F.c.request_id.in_({r.request_id for r in old}))).rowcount
                rows += conn.execute(delete(P).where(P.c.id.in_([r.id for r in old]))).rowcount


def _count_where(condition):
    return func.sum(case((condition, 1), else_=0))


def _ok_sum(value):
    # A float zero on both dialects (PostgreSQL would otherwise widen to numeric).
    return func.sum(case((P.c.outcome == "ok", value), else_=literal(0.0, Float)))


def _tested_sums() -> list:
    """The sums the rollout's tests use (_TESTED), labelled as VersionAggregate's fields: one definition for the
    aggregate's totals and for the per-caller sums of VersionAggregate.by_caller."""
    return [func.count().label("requests"), _count_where(P.c.outcome == "model_error").label("model_errors"),
            _count_where(P.c.outcome == "infra_error").label("infra_errors"),
            _count_where(P.c.guardrail_flags != "[]").label("guardrail_flagged"),
            func.count(F.c.request_id).label("feedback_count"),
            _count_where(F.c.outcome == "success").label("feedback_success"),
            _count_where(P.c.outcome == "ok").label("ok"), _ok_sum(P.c.latency_ms).label("latency_sum_ms")]


def _by_caller(conn, joined, in_window) -> dict[tuple[int, str], dict[str, ByCaller]]:
    """Per (version, role), each tested sum seen by caller (lifecycle.predictions.ByCaller): the callers' sums
    from one grouped query, their clustered variance in numpy (it weighs each caller by its share: not a sum)."""
    sums = _tested_sums()
    per_caller = (select(P.c.version, P.c.role, *sums).select_from(joined).where(in_window)
                  .group_by(P.c.version, P.c.role, P.c.user_hash))
    rows: dict[tuple[int, str], list] = defaultdict(list)
    for row in conn.execute(per_caller):
        rows[(row.version, row.role)].append(row[2:])
    column = {s.name: k for k, s in enumerate(sums)}
    out: dict[tuple[int, str], dict[str, ByCaller]] = {}
    for key, callers in rows.items():
        table = np.array(callers, dtype=float)  # one row per caller, one column per sum: converted once
        out[key] = {}
        for events, trials in _TESTED:
            x, n = table[:, column[events]], table[:, column[trials]]
            out[key][events] = ByCaller(callers=int(np.count_nonzero(n)), events=float(x.sum()),
                                        trials=float(n.sum()), variance=clustered_ratio_variance(x, n))
    return out


def _logged(row) -> LoggedPrediction:
    values = {name: row[P.c[name]] for name in _PREDICTION_FIELDS}
    values.update(ts=from_db(values["ts"]), guardrail_flags=json.loads(values["guardrail_flags"]),
                  feedback=row["feedback"], feedback_score=row["feedback_score"])
    return LoggedPrediction(**values)


class PredictionSink(Protocol):
    def insert_many(self, predictions: Sequence[Prediction]) -> None: ...


class PredictionWriter:
    """Writes predictions off the request path: ``write`` queues, one daemon thread stores in batches.

    A batch is stored when ``max_batch`` rows are queued or the oldest queued row has waited
    ``flush_interval_s`` (0.2 s: well under a monitor's window, and ~1 transaction per 0.2 s keeps a
    shared SQLite file free for the flows). A failed batch is retried with exponential backoff
    (``retry_backoff_s`` doubling up to ``max_backoff_s``) for as long as it fails, because dropping
    rows would bias every rate the rollout computes; each ``max_retries`` consecutive failures log an
    error. Rows stay queued meanwhile, in order. When ``max_queue`` rows are waiting, ``write`` blocks
    for ``put_timeout_s`` and then raises ``BackpressureError``: the caller learns that logging is
    failing (and can answer 503 or count it) instead of rows vanishing. 100,000 rows of a few KB is a
    few hundred MB at most, and minutes of a busy gateway's traffic.

    ``store_text=False`` is hash-only logging here too: texts are dropped before anything is stored — a
    Prediction's in ``write``, before it is queued; a mapping's as soon as its hashes are computed, by the
    writer's thread within ``flush_interval_s`` (the store's flag does the same for direct ``insert_many``
    calls).

    ``write`` also takes a row as the mapping of a :class:`Prediction`'s fields: the gateway queues its rows so,
    and this thread validates them (hashing the texts) — about 50 µs a row that no caller waits for. A mapping
    that does not validate is a bug in whoever built it: it is logged as an error, counted in ``invalid``, and
    not stored; the rows around it are.
    """

    def __init__(self, store: PredictionSink, *, max_batch: int = 256, flush_interval_s: float = 0.2,
                 max_queue: int = 100_000, put_timeout_s: float = 0.1, retry_backoff_s: float = 0.05,
                 max_backoff_s: float = 5.0, max_retries: int = 5, store_text: bool = True,
                 redact_prompt: Callable[[str], str] | None = None) -> None:
        if min(max_batch, max_queue, max_retries) < 1 or min(flush_interval_s, put_timeout_s) < 0:
            raise ValueError("max_batch, max_queue and max_retries must be >= 1; timeouts >= 0")
        self._store = store
        self._max_batch, self._interval, self._max_queue = max_batch, flush_interval_s, max_queue
        self._put_timeout, self._backoff, self._max_backoff = put_timeout_s, retry_backoff_s, max_backoff_s
        self._max_retries, self.store_text = max_retries, store_text
        self._redact_prompt = redact_prompt  # a stored prompt's text as logged (its sha256 stays the received text's)
        self._cond = threading.Condition()
        self._queue: deque[Prediction] = deque()
        self._inflight = 0  # rows of the batch being stored
        self._accepted = 0  # rows accepted by write(), ever
        self._stored = 0  # rows acknowledged by the store, ever; rows are stored in write order
        self._flush_target = 0
        self.failed_attempts = 0
        self.invalid = 0  # mappings that did not validate into a Prediction: logged, never stored
        self._closing = self._abort = False
        self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def pending(self) -> int:
        """Rows written but not yet stored (queued plus the batch in flight)."""
        with self._cond:
            return len(self._queue) + self._inflight

    def write(self, prediction: Prediction | Mapping[str, object]) -> None:
        """Queue one prediction, or the mapping of its fields (validated later, by the writer's thread). Never
        touches the database; raises only when the writer is closed or dead (``RuntimeError``) or its queue
        stayed full for ``put_timeout_s`` (``BackpressureError``)."""
        if isinstance(prediction, Prediction):
            if not self.store_text and (prediction.prompt is not None or prediction.completion is not None):
                prediction = prediction.model_copy(update={"prompt": None, "completion": None})
        elif not isinstance(prediction, Mapping):
            raise TypeError(f"expected a Prediction or a mapping of its fields, got {type(prediction).__name__}")
        with self._cond:
            deadline = time.monotonic() + self._put_timeout
            while True:
                if self._closing:
                    raise RuntimeError("the prediction writer is closed; no more predictions can be written")
                if not self._thread.is_alive():
                    raise RuntimeError("the prediction writer's thread has died; see the log for its error")
                if len(self._queue) + self._inflight < self._max_queue:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BackpressureError(
                        f"prediction log queue full ({self._max_queue} rows waiting for the database); "
                        "the row was not written")
                self._cond.wait(remaining)
            self._queue.append(prediction)
            self._accepted += 1
            # Wake the thread on the first row (it sleeps without a timeout on an empty queue, and the flush
            # interval counts from here) and on a full batch.
            if len(self._queue) in (1, self._max_batch):
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row written before this call is stored; False if ``timeout`` passed first."""
        with self._cond:
            target = self._accepted
            self._flush_target = max(self._flush_target, target)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._stored >= target or not self._thread.is_alive(), timeout)
            return self._stored >= target

    def close(self, timeout: float = 10.0) -> bool:
        """Refuse new writes, store what is queued (up to ``timeout``), stop the thread. Idempotent.

        Returns True when everything was stored; otherwise logs how many rows were not, and returns False.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        done = self.flush(timeout)
        with self._cond:
            self._abort = True
            self._cond.notify_all()
        self._thread.join(timeout=max(self._max_backoff, 1.0))
        if not done:
            log.error("prediction writer closed with %d predictions not stored", self.pending())
        return done

    # -- the background thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._store_batch(self._validated(batch), len(batch))
        except BaseException:
            log.exception("prediction writer thread failed")
            raise
        finally:
            with self._cond:
                self._cond.notify_all()  # wake flush() and write() waiters: they check is_alive()

    def _next_batch(self) -> list[Prediction] | None:
        with self._cond:
            deadline = None
            while not self._abort:
                if self._queue and (len(self._queue) >= self._max_batch or self._closing
                                    or self._stored < self._flush_target):
                    break
                if not self._queue:
                    if self._closing:
                        return None
                    deadline = None
                    self._cond.wait()
                    continue
                deadline = deadline or time.monotonic() + self._interval
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            else:
                return None
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            self._inflight = len(batch)
            return batch

    def _validated(self, batch: list[Prediction | Mapping[str, object]]) -> list[Prediction]:
        rows = []
        for row in batch:
            if isinstance(row, Prediction):
                prediction = row
            else:
                try:
                    prediction = Prediction.model_validate(row)
                except ValueError as exc:
                    self.invalid += 1
                    log.error("prediction of request %r not logged: its fields do not validate: %s",
                              row.get("request_id"), exc)
                    continue
            if not self.store_text:  # the hashes are computed from the texts, then the texts go
                prediction = prediction.model_copy(update={"prompt": None, "completion": None})
            elif self._redact_prompt is not None and prediction.prompt:
                prediction = prediction.model_copy(update={"prompt": self._redact_prompt(prediction.prompt)})
            rows.append(prediction)
        return rows

    def _store_batch(self, batch: list[Prediction], taken: int) -> None:
        """Store ``batch`` (the valid rows of the ``taken`` rows last dequeued), retrying until it is stored."""
        failures = 0
        while True:
            try:
                if batch:
                    self._store.insert_many(batch)
                break
            except Exception:  # locked database, lost connection, ...: keep the rows and retry
                failures += 1
                self.failed_attempts += 1
                give_up_round = failures % self._max_retries == 0
                log.log(logging.ERROR if give_up_round else logging.WARNING,
                        "storing %d predictions failed (attempt %d); keeping them queued and retrying",
                        len(batch), failures, exc_info=give_up_round)
                delay = min(self._backoff * 2 ** (failures - 1), self._max_backoff)
                with self._cond:
                    if self._cond.wait_for(lambda: self._abort, delay):
                        self._queue.extendleft(reversed(batch))  # back in front, still counted as pending
                        self._inflight = 0
                        return
        with self._cond:
            self._stored += taken  # invalid rows too: they are dealt with, and a flush must not wait for them
            self._inflight = 0
            self._cond.notify_all()
