"""The persisted rollout state (``lifecycle.rollout_state.RolloutState``): what lets a killed flow resume.

One row per (model, candidate). Every save is a compare-and-swap on ``revision`` with an audit event
``rollout.state`` in the same transaction. Starting takes the model's row lock, so of two concurrent starts
for one model exactly one wins; the other gets :class:`RolloutInProgress` naming the running rollout.
Starting again for a candidate that already has a row returns the stored state instead — the re-run of a
killed flow resumes where it was, and a finished rollout (promoted, rolled back) is never run twice.
"""

from __future__ import annotations

import json

from sqlalchemy import Connection, select, update

from lifecycle.audit import canonical_json
from lifecycle.rollout_state import TERMINAL, RolloutState
from lifecycle.status import RETIRED, VersionStatus
from registry import schema as t
from registry.store import ConcurrentChangeError, NotFoundError, RegistryStore

R = t.rollouts


class RolloutRefused(ValueError):
    """The rollout cannot start: the candidate or the champion is not what a rollout needs."""


def not_a_candidate(model: str, candidate: int, status: VersionStatus) -> str:
    return (f"{model}:v{candidate} is {status}; only a candidate (a version that passed the offline gate) can be "
            "rolled out")


class RolloutInProgress(RuntimeError):
    """Another rollout of the same model is not finished."""

    def __init__(self, running: RolloutState) -> None:
        self.running = running
        super().__init__(
            f"{running.model} already has a rollout in progress: v{running.candidate} (phase {running.phase}, "
            f"stage {running.stage_index}, against champion v{running.champion}); only one rollout per model at "
            f"a time — let it finish, or abort it, before starting another")


def _state(row) -> RolloutState:
    return RolloutState.model_validate({**json.loads(row.state_json), "revision": row.revision})


def _body(state: RolloutState) -> str:
    return canonical_json(state.model_dump(mode="json", exclude={"revision"}))


def revision_of(conn: Connection, model: str, candidate: int) -> int | None:
    """The stored revision of a rollout (None: no row), inside the caller's transaction."""
    return conn.execute(select(R.c.revision).where(R.c.model == model, R.c.candidate == candidate)).scalar_one_or_none()


def _active(conn: Connection, model: str) -> RolloutState | None:
    row = conn.execute(select(R).where(R.c.model == model, R.c.phase.not_in(sorted(TERMINAL)))).first()
    return None if row is None else _state(row)


def get_rollout(store: RegistryStore, model: str, candidate: int) -> RolloutState | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(R).where(R.c.model == model, R.c.candidate == candidate)).first()
    return None if row is None else _state(row)


def active_rollout(store: RegistryStore, model: str) -> RolloutState | None:
    """The model's rollout that is not finished (running, paused or awaiting approval), if any."""
    with store.engine.connect() as conn:
        return _active(conn, model)


def start_rollout(store: RegistryStore, state: RolloutState, *, actor: str, resume: bool = True) -> RolloutState:
    """Persist a new rollout at revision 1, or return the stored one for the same candidate (resume).

    An ``aborted`` rollout is the one exception: an operator stopped it (not the statistics), so starting
    the candidate again begins afresh — its row is replaced, its history stays in the audit log.

    ``resume=False`` is for a caller that has just read that the candidate has no unfinished row
    (``rollout_exec.begin``): an unfinished row there now was written by a concurrent start of the SAME
    candidate, whose driver is carrying out its start effects at this moment. Returning it would give the
    rollout two drivers (measured on PostgreSQL: the second one's save failed with ConcurrentChangeError after
    it had written the split a second time, 10 races out of 10), so it raises :class:`RolloutInProgress` as
    for another candidate.

    A new (or restarted) rollout is checked under the model's lock, where a retirement takes it too: the candidate
    must still be a ``candidate`` and the champion it was planned against not retired — ``rollout_exec.refusal``
    looked before the lock, and a concurrent retirement may have archived the version since.

    Raises :class:`RolloutInProgress` if another candidate's rollout of the model is not finished,
    :class:`RolloutRefused` if the candidate is no longer a candidate (or the planned champion is retired), and
    :class:`NotFoundError` if the model or candidate is not registered.
    """
    if state.terminal:
        raise ValueError(f"a rollout starts running, not {state.phase}")
    with store._tx() as conn:
        store._lock_model(conn, state.model)  # serializes starts of one model: exactly one wins
        status = store._status(conn, state.model, state.candidate)
        row = conn.execute(select(R).where(R.c.model == state.model, R.c.candidate == state.candidate)).first()
        if row is not None and row.phase != "aborted":
            existing = _state(row)
            if resume or existing.terminal:
                return existing
            raise RolloutInProgress(existing)  # started a moment ago by a concurrent start of this candidate
        if status is not VersionStatus.CANDIDATE:  # e.g. archived by a retirement since refusal() looked
            raise RolloutRefused(not_a_candidate(state.model, state.candidate, status))
        running = _active(conn, state.model)
        if running is not None:
            raise RolloutInProgress(running)
        champion = store._alias(conn, state.model, "champion")
        if champion is not None and champion != state.champion:  # promoted (or rolled back) since it was planned
            raise ConcurrentChangeError(f"{state.model} champion is v{champion}, not v{state.champion} the rollout "
                                        "was planned against; start it again")
        if (held := store._status(conn, state.model, state.champion)) in RETIRED:  # its alias cleared, then retired
            raise RolloutRefused(f"{state.model}:v{state.champion}, the champion the rollout of v{state.candidate} was "
                                 f"planned against, is {held}; promote a champion first")
        revision = 1 if row is None else row.revision + 1
        values = {"state_json": _body(state), "phase": state.phase, "revision": revision, "updated_at": store.clock()}
        if row is None:
            conn.execute(R.insert().values(model=state.model, candidate=state.candidate, **values))
        else:
            conn.execute(update(R).where(R.c.model == state.model, R.c.candidate == state.candidate).values(**values))
        store._audit(conn, actor, "rollout.started" if row is None else "rollout.restarted",
                     f"{state.model}:v{state.candidate}", {
                         "champion": state.champion, "plan": state.plan_name, "plan_version": state.plan_version,
                         "phase": state.phase, "stage_index": state.stage_index, "revision": revision})
    return state.model_copy(update={"revision": revision})


def _decision(state: RolloutState) -> str:
    """The state without its bookkeeping (pending effects, driving flow run): what a decision changes."""
    return canonical_json(state.model_dump(mode="json", exclude={"revision", "pending", "flow_run_id", "applied_at",
                                                              "split_revision"}))


def save_rollout(store: RegistryStore, state: RolloutState, *, actor: str, expected_revision: int,
                 detail: dict[str, object] | None = None) -> RolloutState:
    """Compare-and-swap the stored state; return it with its new revision.

    Refuses (:class:`ConcurrentChangeError`) when the stored revision is not ``expected_revision`` —
    another process moved the rollout, so re-read and decide again — and when the stored rollout is
    already finished and the new state decides differently (a finished rollout never changes; only its
    pending effects may be cleared once carried out). ``detail`` (the verdict's statistics, a reviewer's
    answer) goes into the audit event of the save.
    """
    subject = f"{state.model}:v{state.candidate}"
    with store._tx() as conn:
        store._lock_model(conn, state.model)
        row = conn.execute(select(R).where(R.c.model == state.model, R.c.candidate == state.candidate)).first()
        if row is None:
            raise NotFoundError(f"no rollout of {subject}; start it first")
        if row.revision != expected_revision:
            raise ConcurrentChangeError(f"rollout of {subject} is at revision {row.revision}, not "
                                        f"{expected_revision}: someone else moved it; re-read and decide again")
        before = _state(row)
        if before.terminal and _decision(before) != _decision(state):
            raise ConcurrentChangeError(f"rollout of {subject} is finished ({before.phase}); it never changes")
        new = row.revision + 1
        conn.execute(update(R).where(R.c.model == state.model, R.c.candidate == state.candidate).values(
            state_json=_body(state), phase=state.phase, revision=new, updated_at=store.clock()))
        if _decision(before) == _decision(state):  # bookkeeping only: effects carried out, or a new driver
            store._audit(conn, actor, "rollout.effects", subject, {
                "carried_out": [e.kind for e in before.pending if e not in state.pending],
                "pending": [e.kind for e in state.pending], "flow_run_id": state.flow_run_id, "revision": new})
        else:
            last = state.history[-1].model_dump(mode="json") if state.history else None
            store._audit(conn, actor, "rollout.state", subject, {
                "from": {"phase": before.phase, "stage_index": before.stage_index},
                "to": {"phase": state.phase, "stage_index": state.stage_index},
                "plan": state.plan_name, "plan_version": state.plan_version, "decision": last,
                "effects": [e.model_dump(mode="json") for e in state.pending], "revision": new,
                **({"detail": detail} if detail else {})})
    return state.model_copy(update={"revision": new})
