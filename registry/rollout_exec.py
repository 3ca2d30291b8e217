"""Carrying out a rollout: look at the live window, decide (``lifecycle``), save, then act — in that order.

Every change of a rollout goes through :func:`commit`: the new state is saved WITH its effects in
``pending`` (one compare-and-swap, audited with the verdict's statistics), then :func:`drain` carries the
effects out in order and saves again with ``pending`` empty. A process killed anywhere in between leaves
the effects pending; the next :func:`begin` for the same candidate drains them before anything else. So
each effect below is idempotent: it checks what is already true and does only what is missing.

Nothing here talks to Prefect: events leave through the ``emit`` callback the task layer passes in
(``tasks.rollout``), which gets a deterministic event id so a replayed effect names the same event.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from lifecycle.predictions import VersionAggregate, as_utc, parse_utc
from lifecycle.rollout_plan import RolloutPlan, StageVerdict, decide_stage
from lifecycle.rollout_state import (
    Effect,
    Emit,
    MarkRejected,
    MoveChallenger,
    Promote,
    RequestApproval,
    RolloutState,
    SetSplit,
    abort,
    decide_by_person,
    next_state,
    pin,
    start,
)
from lifecycle.status import Alias, VersionStatus
from registry.artifacts import sync_champion
from registry.predictions import PredictionStore
from registry.rollouts import (
    RolloutInProgress,
    RolloutRefused,
    get_rollout,
    not_a_candidate,
    revision_of,
    save_rollout,
    start_rollout,
)
from registry.store import ConcurrentChangeError, NotFoundError, RegistryStore
from registry.traffic import read_split, split_revision, write_split

Emitter = Callable[[str, dict[str, Any], uuid.UUID], None]


def _iso(value: datetime) -> str:
    return as_utc(value).isoformat()


def event_payload(state: RolloutState, stage: str) -> dict[str, Any]:
    """What every ``slm.rollout.*`` event carries: the versions, the stage, the plan, the last decision."""
    last = state.history[-1] if state.history else None
    return {"model": state.model, "version": f"{state.model}:v{state.candidate}",
            "champion": f"{state.model}:v{state.champion}", "stage": stage, "phase": state.phase,
            "stage_index": state.stage_index, "plan": state.plan_name, "plan_version": state.plan_version,
            "decision": last.action if last else "start", "reasons": last.reasons if last else []}


@contextlib.contextmanager
def _at_revision(store: RegistryStore, state: RolloutState, refused: str) -> Iterator[Connection]:
    """A transaction under the model's lock in which the rollout is still at the revision this driver read
    (:class:`ConcurrentChangeError` otherwise, saying what was ``refused``)."""
    with store._tx() as conn:
        store._lock_model(conn, state.model)
        stored = revision_of(conn, state.model, state.candidate)
        if stored != state.revision:
            raise ConcurrentChangeError(f"rollout of {state.model}:v{state.candidate} moved to revision {stored} "
                                        f"(this driver holds {state.revision}); {refused}")
        yield conn


def _carry_out(store: RegistryStore, state: RolloutState, effect: Effect, index: int, *, actor: str,
               emit: Emitter) -> None:
    subject = f"{state.model}:v{state.candidate}"
    if isinstance(effect, SetSplit):
        # One transaction with a check that the rollout is still where this driver read it: an operator's abort
        # (or a rollback that aborted it) in the meantime must not be undone by this older decision's split.
        with _at_revision(store, state, "its split is not written") as conn:
            current = read_split(conn, effect.split.model)
            if current is None or current.model_copy(update={"revision": 0}) != effect.split:
                write_split(store, conn, effect.split, actor=actor,
                            reason=f"rollout of {subject}: {state.phase} at stage {state.stage_index}")
    elif isinstance(effect, Promote):
        if store.get_alias(effect.model, Alias.CHAMPION) != effect.version:
            store.promote(effect.model, effect.version, actor=actor, expected_champion=effect.expected_champion,
                          reason=f"rollout of {subject} passed every stage of plan {state.plan_name} "
                                 f"v{state.plan_version}")
        # A Hub store's champion branch follows the alias; idempotent, so a replay finishes a move a crash cut short.
        sync_champion(store, effect.model, actor=actor)
    elif isinstance(effect, MarkRejected):
        if store.get_version(effect.model, effect.version).status is VersionStatus.CANDIDATE:
            store.set_status(effect.model, effect.version, VersionStatus.ROLLED_BACK, actor=actor,
                             reason="rolled back by the rollout: " + "; ".join(effect.reasons))
    elif isinstance(effect, MoveChallenger) and effect.version is not None:
        # As for the split: only while the rollout is still where this driver read it, and only onto a candidate.
        # An abort in the meantime cleared the alias (and a retirement may then have archived the version): this
        # older decision must not point the alias back at it.
        with _at_revision(store, state, "the challenger alias is not moved") as conn:
            status = store._status(conn, effect.model, effect.version)
            if status is not VersionStatus.CANDIDATE:
                raise ConcurrentChangeError(f"{effect.model}:v{effect.version} is {status}; the challenger alias is "
                                            "not moved to it")
            store._move(conn, effect.model, Alias.CHALLENGER.value, effect.version, actor=actor,
                        reason=f"rollout of {subject}: {state.phase}")
    elif isinstance(effect, MoveChallenger):
        held = store.get_alias(effect.model, Alias.CHALLENGER)
        # Clearing only what this rollout set: an operator may have pointed it elsewhere since.
        if held == state.candidate:
            store.move_alias(effect.model, Alias.CHALLENGER, None, actor=actor,
                             reason=f"rollout of {subject}: {state.phase}")
    elif isinstance(effect, Emit):
        # Same rollout, same revision, same position: the same id however often the effect is replayed.
        event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"slm-rollout/{subject}/{state.revision}/{index}")
        emit(effect.event, event_payload(state, effect.stage), event_id)
    elif isinstance(effect, RequestApproval):
        pass  # the flow sees phase awaiting_approval and asks a person (pause_flow_run)
    else:  # pragma: no cover - the Effect union is closed
        raise TypeError(f"unknown effect {effect!r}")


def drain(store: RegistryStore, state: RolloutState, *, actor: str, emit: Emitter) -> RolloutState:
    """Carry out the pending effects in order, then save the state with none pending."""
    if not state.pending:
        return state
    for index, effect in enumerate(state.pending):
        _carry_out(store, state, effect, index, actor=actor, emit=emit)
    done = state.model_copy(update={"pending": [], "applied_at": _iso(store.clock()),
                                    "split_revision": split_revision(store, state.model)})
    return save_rollout(store, done, actor=actor, expected_revision=state.revision)


def commit(store: RegistryStore, before: RolloutState, after: RolloutState, effects: list[Effect], *,
           actor: str, emit: Emitter, detail: dict[str, Any] | None = None) -> RolloutState:
    """Save ``after`` with ``effects`` pending (compare-and-swap against ``before``), then drain them."""
    saved = save_rollout(store, after.model_copy(update={"pending": effects}), actor=actor,
                         expected_revision=before.revision, detail=detail)
    return drain(store, saved, actor=actor, emit=emit)


def begin(store: RegistryStore, model: str, candidate: int, plan: RolloutPlan, *, actor: str, emit: Emitter,
          flow_run_id: str | None = None) -> RolloutState:
    """Start the rollout of ``model:v<candidate>``, or resume the stored one (its pending effects first).

    A rollout the statistics or a person finished (promoted, rolled back) is returned as it is: it never
    runs twice; one an operator aborted starts again from the first stage. Refused (:class:`RolloutRefused`) when
    the candidate is not a ``candidate`` or the model has no champion; another unfinished rollout of the
    model raises :class:`registry.rollouts.RolloutInProgress` — and so does a concurrent start of the same
    candidate that got there first (it runs the rollout; two drivers would carry out the same effects), whether
    this start read no row (``start_rollout(resume=False)``) or read that run's row and then lost the takeover to
    its next write; and a start whose row another run took over while it carried out its start effects.
    """
    stored = get_rollout(store, model, candidate)
    if stored is None or stored.phase == "aborted":  # an operator's abort may be retried from the start
        if (refused := refusal(store, model, candidate)) is not None:
            raise RolloutRefused(refused)
        champion = store.get_alias(model, Alias.CHAMPION)
        state, effects = start(model, candidate, champion, plan, _iso(store.clock()))
        state = state.model_copy(update={"pending": effects, "flow_run_id": flow_run_id})
        # resume=False: no unfinished row was there a moment ago, so one there now is a concurrent start's.
        stored = start_rollout(store, state, actor=actor, resume=False)
    # A run with work left to do (a decision to carry on, or a finished one's effects a crash cut short) takes
    # over as the driver: the one approvals resume, and the one the task layer checks in Prefect.
    take_over = bool(flow_run_id) and stored.flow_run_id != flow_run_id and (not stored.terminal or stored.pending)
    try:
        if take_over:
            stored = save_rollout(store, stored.model_copy(update={"flow_run_id": flow_run_id}), actor=actor,
                                  expected_revision=stored.revision)
        return drain(store, stored, actor=actor, emit=emit)
    except ConcurrentChangeError:
        current = get_rollout(store, model, candidate)
        if flow_run_id and current is not None and current.flow_run_id != flow_run_id:
            # Another run's write came first: a concurrent start of the same candidate carrying out its start
            # effects (this take-over lost), or one that took over while this run carried them out (it carries
            # them out again, idempotent). That run is alive and drives the rollout from here.
            raise RolloutInProgress(current) from None
        raise


def refusal(store: RegistryStore, model: str, candidate: int) -> str | None:
    """Why a rollout of ``model:v<candidate>`` cannot start (None: it can, or a stored one resumes). NotFoundError
    names a missing version."""
    stored = get_rollout(store, model, candidate)
    if stored is not None and stored.phase != "aborted":
        return None  # begin() resumes it, or returns it as it finished
    status = store.get_version(model, candidate).status
    if status is not VersionStatus.CANDIDATE:
        return not_a_candidate(model, candidate, status)
    if store.get_alias(model, Alias.CHAMPION) is None:
        return f"{model} has no champion to compare v{candidate} with; promote one first"
    return None


def stage_window(state: RolloutState, now: datetime, settle_s: float) -> tuple[datetime, datetime]:
    """The current stage's window: from the moment its split was written (``applied_at``; later than the
    decision only when a run died in between) plus ``settle_s``, up to ``now``. Requests a gateway still routes
    by the old split (it adopts a new one at its next poll, once the versions it names are loaded) do not count
    whenever they come: ``arms`` counts only the rows of the stage's split revision or a later one."""
    opened = max(parse_utc(state.stage_started_at), parse_utc(state.applied_at or state.stage_started_at))
    since = opened + timedelta(seconds=settle_s)
    return since, max(now, since + timedelta(microseconds=1))


def look_window(state: RolloutState, plan: RolloutPlan, now: datetime, settle_s: float) -> tuple[datetime, datetime]:
    """The window a look reads: :func:`stage_window`, less its last ``settle_s`` seconds in shadow. A shadow answer
    is logged after the served one (it is generated after it), under the request's arrival time, so the newest
    requests' copies may not be in the log yet; counted, they would read as copies gone missing. A copy can come
    later than ``settle_s`` (up to the served request's timeout plus the backend's own timeout for the copy, which
    is awaited until the backend is done with it: ``GatewayState._call_backend``); the split check counts callers,
    so only the callers first seen in that lag would be missing from the shadow arm, far fewer than a mismatch
    needs unless new callers pour in."""
    since, until = stage_window(state, now, settle_s)
    if plan.stages[state.stage_index].shadow:
        until = max(since + timedelta(microseconds=1), until - timedelta(seconds=settle_s))
    return since, until


def arms(predictions: PredictionStore, state: RolloutState, plan: RolloutPlan, now: datetime,
         settle_s: float) -> tuple[VersionAggregate, VersionAggregate]:
    """(champion, challenger) aggregates of the stage's window; silent arms are zero-count aggregates.

    On the 100 % stage the champion answers nothing, so its arm is the reference it set earlier in this
    rollout: its traffic from the rollout's start to this stage's start (the decision compares against
    that, and skips the split check, see ``lifecycle.rollout_plan``).
    """
    since, until = look_window(state, plan, now, settle_s)
    share = plan.stages[state.stage_index].share
    wanted = {(state.champion, "champion"), (state.candidate, "shadow" if share == 0 else "challenger")}
    # In shadow the arms are compared on the requests that have a copy: one the gateway shed (its copies in flight
    # at the cap) is the gateway's load, not a copy gone missing, and counted it would read as a sample-ratio mismatch.
    found = {a.version: a for a in predictions.aggregates(state.model, since, until, by_caller=True,
                                                          min_split_revision=state.split_revision, routed_only=True,
                                                          mirrored_only=share == 0)
             if (a.version, a.role) in wanted}
    if share == 100:
        ref_since, ref_until = parse_utc(state.started_at), parse_utc(state.stage_started_at)
        ref = [a for a in predictions.aggregates(state.model, ref_since, ref_until, by_caller=True, routed_only=True)
               if a.version == state.champion and a.role == "champion"] if ref_until > ref_since else []
        found[state.champion] = ref[0] if ref else None
    return (found.get(state.champion) or _silent(state, state.champion, "champion", since, until),
            found.get(state.candidate) or _silent(state, state.candidate, "challenger", since, until))


def _silent(state: RolloutState, version: int, role: str, since: datetime, until: datetime) -> VersionAggregate:
    zero = dict.fromkeys(("requests", "served", "ok", "model_errors", "infra_errors", "input_errors",
                          "guardrail_flagged", "prompt_tokens", "completion_tokens", "feedback_count",
                          "feedback_success", "users"), 0)
    return VersionAggregate(model=state.model, version=version, role=role, latency_p50_ms=None, latency_p95_ms=None,
                            latency_p99_ms=None, window_start=since, window_end=until, **zero)


def step(store: RegistryStore, predictions: PredictionStore, state: RolloutState, plan: RolloutPlan, *,
         actor: str, emit: Emitter, settle_s: float) -> tuple[RolloutState, StageVerdict | None]:
    """One look at a running rollout: decide the current stage; save and act unless it holds."""
    if state.phase != "running":
        return state, None
    now = store.clock()
    verdict, detail = preview(predictions, state, plan, now, settle_s)
    after, effects = next_state(state, verdict, plan, _iso(now))
    if after is state:  # hold: nothing to save, nothing to do
        return state, verdict
    return commit(store, state, after, effects, actor=actor, emit=emit, detail=detail), verdict


def preview(predictions: PredictionStore, state: RolloutState, plan: RolloutPlan, now: datetime,
            settle_s: float) -> tuple[StageVerdict, dict[str, Any]]:
    """What a look at ``now`` decides for the running stage, and the statistics its audit event keeps; saves and
    does nothing (``slm rollout status --look`` shows it: a hold leaves no record of its own)."""
    champion, challenger = arms(predictions, state, plan, now, settle_s)
    window = look_window(state, plan, now, settle_s)
    stale = 0 if state.split_revision is None else predictions.stale_requests(state.model, *window,
                                                                              state.split_revision)
    stage = plan.stages[state.stage_index]
    shed = predictions.shed_requests(state.model, *window, state.split_revision) if stage.shadow else 0
    elapsed = (as_utc(now) - parse_utc(state.stage_started_at)).total_seconds()
    verdict = decide_stage(stage, champion, challenger, elapsed, stale_requests=stale,
                           split_revision=state.split_revision, shed_requests=shed)
    detail = {"verdict": verdict.model_dump(mode="json"), "champion_window": champion.model_dump(mode="json"),
              "challenger_window": challenger.model_dump(mode="json"), "split_revision": state.split_revision,
              "stale_requests": stale, "shed_requests": shed}
    return verdict, detail


def answer(store: RegistryStore, state: RolloutState, plan: RolloutPlan, *, approve: bool, reviewer: str,
           comment: str, actor: str, emit: Emitter) -> RolloutState:
    """A person's answer to a paused rollout or an approval request (no-op in any other phase)."""
    reason = f"{'approved' if approve else 'rejected'} by {reviewer}" + (f": {comment}" if comment else "")
    after, effects = decide_by_person(state, plan, approve=approve, reason=reason, now=_iso(store.clock()))
    if after is state:
        return state
    return commit(store, state, after, effects, actor=actor, emit=emit,
                  detail={"reviewer": reviewer, "approve": approve, "comment": comment})


def current(store: RegistryStore, model: str, candidate: int) -> RolloutState:
    state = get_rollout(store, model, candidate)
    if state is None:
        raise NotFoundError(f"no rollout of {model}:v{candidate}")
    return state


def stop(store: RegistryStore, state: RolloutState, plan: RolloutPlan | None, *, reason: str, actor: str,
         emit: Emitter) -> RolloutState:
    """An operator aborts the rollout: the champion's full traffic first; the candidate is not rejected."""
    after, effects = abort(state, plan, reason=reason, now=_iso(store.clock()))
    if after is state:
        return state
    return commit(store, state, after, effects, actor=actor, emit=emit, detail={"reason": reason})


def pin_rollout(store: RegistryStore, state: RolloutState, *, reason: str, actor: str,
                emit: Emitter) -> RolloutState:
    """``slm traffic pin`` during a rollout: pause it and send all traffic to the champion, in one decision."""
    after, effects = pin(state, reason=reason, now=_iso(store.clock()))
    if after is state:
        return state
    return commit(store, state, after, effects, actor=actor, emit=emit, detail={"reason": reason, "pin": True})
