"""Operator actions for 3 a.m.: promote, roll back, pin all traffic to the champion. Each is audited with
who did it and why. Promote and rollback move the aliases and the traffic split in ONE commit under the model's
lock, so a failure between them cannot leave the gateways serving a version the aliases do not name; the Hub's
champion branch follows after the commit."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from lifecycle.routing import TrafficSplit
from registry import rollout_exec
from registry.artifacts import ArtifactIntegrityError
from registry.rollout_exec import Emitter
from registry.rollouts import _active, active_rollout
from registry.service import Registry
from registry.store import NotFoundError
from registry.traffic import set_split, write_split


def _no_events(event: str, payload: dict[str, Any], event_id: UUID) -> None:
    """Outside Prefect the audit log is the record; the CLI passes Prefect's emitter."""


def pin_champion(registry: Registry, model: str, *, actor: str, reason: str,
                 emit: Emitter = _no_events) -> TrafficSplit:
    """All traffic to the current champion: no challenger, no shadow. A running rollout is paused in the
    same decision (its state first, then the split), so its flow cannot move the traffic back."""
    champion = registry.store.get_alias(model, "champion")
    if champion is None:
        raise NotFoundError(f"{model} has no champion to pin traffic to")
    running = active_rollout(registry.store, model)
    if running is not None:
        rollout_exec.pin_rollout(registry.store, running, reason=f"pin: {reason}", actor=actor, emit=emit)
    return set_split(registry.store, TrafficSplit(model=model, champion=champion), actor=actor,
                     reason=f"pin: {reason}")


class ChampionPointerBehind(RuntimeError):
    """The registry's champion moved (aliases and traffic, committed) but the artifact store's champion pointer (the
    Hub's ``champion`` branch) did not: the Hub failed. ``slm registry sync-champion`` moves it once the Hub answers;
    repeating the promote or the rollback would not (a rollback has no previous champion left to go back to)."""


def _sync_champion(registry: Registry, model: str, actor: str, done: str) -> None:
    try:
        registry.sync_champion(model, actor=actor)
    except Exception as exc:
        not_moved = (f"{done}, but the artifact store's champion pointer (the Hub's champion branch) was not moved: "
                     f"{type(exc).__name__}: {exc}")
        if isinstance(exc, ArtifactIntegrityError):  # no tag to point at: trying again cannot help
            raise ChampionPointerBehind(f"{not_moved}. Restore the version's tag on the Hub (its commit is in its "
                                        "artifact uri: slm registry show), then run: slm registry sync-champion "
                                        f"--model {model}") from exc
        raise ChampionPointerBehind(f"{not_moved}. Once the Hub answers, run: slm registry sync-champion --model "
                                    f"{model}") from exc


class RolloutRunning(ValueError):
    """An operator action that would fight a rollout in progress (its flow sets the split from its own champion)."""


def _refuse_if_rolling_out(running) -> None:
    if running is not None:
        raise RolloutRunning(f"{running.model} has a rollout of v{running.candidate} in progress ({running.phase}, "
                             f"stage {running.stage_index}); abort it first (slm rollout abort --reason ...)")


def promote(registry: Registry, model: str, number: int, *, actor: str, reason: str) -> TrafficSplit:
    """Make ``number`` champion (the old one becomes ``previous``), then send it all traffic.

    Refused while a rollout of the model is unfinished: the rollout would keep setting the split from the champion
    it started with. Refused too when the version's files are missing or damaged (the check a gateway would make
    when loading it), before anything moves."""
    _refuse_if_rolling_out(active_rollout(registry.store, model))  # early, before the files are read
    registry.version_dir(registry.store.get_version(model, number))  # ArtifactIntegrityError names what is wrong
    with registry.store._tx() as conn:  # aliases and split in one commit: a failure between them moves neither
        registry.store._lock_model(conn, model)
        _refuse_if_rolling_out(_active(conn, model))  # again under the lock: one may have started meanwhile
        registry.store._promote(conn, model, number, actor=actor, reason=reason)
        split = write_split(registry.store, conn, TrafficSplit(model=model, champion=number), actor=actor,
                            reason=f"promote: {reason}")
    # Last: a Hub failure here leaves registry and traffic consistent, and says how to catch the Hub up.
    _sync_champion(registry, model, actor, f"{model}:v{number} is champion with all traffic")
    return split


def rollback(registry: Registry, model: str, *, actor: str, reason: str,
             emit: Emitter = _no_events) -> tuple[int, int]:
    """Back to the previous champion: the split, the aliases and the demoted version's status in one commit.

    A rollout in progress is aborted first, in the same decision (it would otherwise keep setting the split from
    the champion being rolled back): the 3 a.m. rollback must not wait for another command."""
    if registry.store.get_alias(model, "previous") is None:
        raise NotFoundError(f"{model} has no previous champion to roll back to")
    running = active_rollout(registry.store, model)
    if running is not None:
        rollout_exec.stop(registry.store, running, None, reason=f"rollback: {reason}", actor=actor, emit=emit)
    with registry.store._tx() as conn:  # the split (recorded first) and the aliases in one commit
        registry.store._lock_model(conn, model)
        previous = registry.store._alias(conn, model, "previous")  # read again under the lock
        if previous is None:
            raise NotFoundError(f"{model} has no previous champion to roll back to")
        write_split(registry.store, conn, TrafficSplit(model=model, champion=previous), actor=actor,
                    reason=f"rollback: {reason}")
        moved = registry.store._rollback_champion(conn, model, actor=actor, reason=reason)
    _sync_champion(registry, model, actor, f"{model}:v{moved[0]} is champion again with all traffic")  # the Hub follows
    return moved
