"""Retiring a version: the registry side of the decommission flow. The decision is ``lifecycle.retention``.

``retire_version`` runs these steps, each audited, each safe to repeat:

1. Under the model's lock: re-check the hard holds (alias, traffic split, running rollout) — the plan may be
   stale — and refuse with :class:`RetirementRefused` naming them; else move the status to ``archived``
   (reason prefixed ``retiring:``, the mark of a retirement in progress).
2. Bump the split revision, same split: every gateway replica re-reads it and unloads the retired version
   (``serving.live``). Nothing routes to it already (the split does not name it); this frees the memory.
3. Write the tombstone (card, lineage, evals, status/alias/audit history) BEFORE the weights go.
4. Archive (move) or delete the weights, per policy.
5. Status ``decommissioned``; the tombstone is rewritten with the complete history.
6. The caller's closing work (``before_close``: the decommission flow forgets the version's stored answers and
   announces ``slm.version.decommissioned``), then the closing audit event ``version.tombstone.written``.

If the process dies anywhere in between, the version is left ``archived`` with the mark, or with a
tombstone still saying ``retiring``, or decommissioned without its closing event; :func:`retention_inputs`
reports it as ``retiring`` and the next run retires it again, every step finding its work done or finishing it.
Once ``archived``, nothing can give the version traffic again: ``set_split`` refuses it and the transition table
refuses a promotion. Two retirements of one version at once (the schedule and a manual run, on one host or on two
sharing a PostgreSQL registry) take turns under the registry's named lock ``retire/<model>/v<N>``
(:mod:`registry.locks`); the second finds the work done, or after :data:`RETIRE_WAIT_S` gets
:class:`registry.locks.LockBusy`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from sqlalchemy import Connection, func, or_, select

from lifecycle.predictions import parse_utc
from lifecycle.records import Frozen, ModelVersion
from lifecycle.retention import RetentionPolicy, RunningRollout, VersionFacts, holds
from lifecycle.rollout_state import RolloutState
from lifecycle.routing import TrafficSplit
from lifecycle.status import RETIRED, Alias, VersionStatus
from registry import schema as t
from registry import tombstone as tomb
from registry.db import from_db
from registry.hub import HubArtifactStore
from registry.rollouts import _active, active_rollout
from registry.store import ConcurrentChangeError, NotFoundError, RegistryStore, _event, _of_actions_about
from registry.traffic import get_split, set_split

if TYPE_CHECKING:
    from registry.service import Registry

S = VersionStatus
RETIRING = "retiring: "  # status-history reason prefix of step 1
CLOSED = "version.tombstone.written"  # the audit event that ends a retirement (step 6)
RETIRE_WAIT_S = 600.0  # how long a retirement waits for another retirement of the same version


class RetirementRefused(RuntimeError):
    """Something still needs the version: an alias, the traffic split, or a running rollout."""

    def __init__(self, ref: str, holds: list[str]) -> None:
        self.ref, self.holds = ref, holds
        super().__init__(f"refusing to retire {ref}: it " + "; ".join(holds) + ". Move that away first")


class VersionDecommissioned(NotFoundError):
    """A version that was retired: its tombstone remains, its weights cannot be loaded."""


class Retirement(Frozen):
    ref: str
    artifacts: Literal["archive", "delete"]
    archive_uri: str | None = Field(description="where the weights are now; None when deleted")
    tombstone_uri: str
    steps: list[str] = Field(description="what this call did; empty when the version was already retired")


class RetentionInputs(Frozen):
    """Everything ``lifecycle.retention.plan_retention`` needs about one model, read in one go."""

    versions: list[VersionFacts]
    aliases: dict[str, int]
    split: TrafficSplit | None
    rollout: RunningRollout | None


def retention_inputs(registry: Registry, model: str) -> RetentionInputs:
    store = registry.store
    versions = store.list_versions(model)
    if not versions:
        raise NotFoundError(f"model {model!r} has no versions in the registry")
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.status_history).where(t.status_history.c.model == model)
                            .order_by(t.status_history.c.id)).all()
        # When an alias last left each version: champion -> previous -> nothing is a version in use until then.
        released = dict(conn.execute(
            select(t.alias_history.c.previous_number, func.max(t.alias_history.c.moved_at))
            .where(t.alias_history.c.model == model, t.alias_history.c.previous_number.is_not(None),
                   or_(t.alias_history.c.number.is_(None),
                       t.alias_history.c.number != t.alias_history.c.previous_number))
            .group_by(t.alias_history.c.previous_number)).all())
        closed = set(conn.execute(select(t.audit_events.c.subject).where(_of_actions_about([CLOSED], model))).scalars())
    history: dict[int, list] = {}
    for row in rows:
        history.setdefault(row.number, []).append(row)
    root = _root(registry)
    facts = [_facts(v, history.get(v.number, []), released.get(v.number), root, v.ref in closed) for v in versions]
    return RetentionInputs(versions=facts, aliases=store.aliases(model), split=get_split(store, model),
                           rollout=_running(active_rollout(store, model)))


def _running(state: RolloutState | None) -> RunningRollout | None:
    if state is None:  # registry.rollouts only returns an unfinished rollout
        return None
    return RunningRollout(candidate=state.candidate, champion=state.champion, phase=state.phase,
                          started_at=parse_utc(state.started_at))


def _facts(version: ModelVersion, history: list, released: datetime | None, root: Path, closed: bool) -> VersionFacts:
    settled = [from_db(h.at) for h in history if S(h.to_status) not in RETIRED]
    if released is not None:  # an alias left it after its last status change: in use until then
        settled.append(from_db(released))
    retiring = False
    if version.status in RETIRED:
        marked = version.status is S.ARCHIVED and bool(history) and history[-1].reason.startswith(RETIRING)
        stone = tomb.read_tombstone(root, version.model, version.number)
        # A tombstone without the closing event: a run died before its last step (or during the caller's closing
        # work): unfinished too.
        retiring = marked or (stone is not None and (stone["state"] != "decommissioned" or not closed))
    return VersionFacts(number=version.number, status=version.status,
                        settled_at=max(settled) if settled else version.created_at, retiring=retiring)


def _holds_now(conn: Connection, model: str, number: int) -> list[str]:
    aliases = {r.alias: r.number for r in conn.execute(
        select(t.aliases.c.alias, t.aliases.c.number).where(t.aliases.c.model == model))}
    row = conn.execute(select(t.traffic_splits).where(t.traffic_splits.c.model == model)).first()
    split = None if row is None else TrafficSplit(**json.loads(row.split_json), revision=row.revision)
    return holds(number, aliases=aliases, split=split, rollout=_running(_active(conn, model)))


def retire_version(registry: Registry, model: str, number: int, *, policy: RetentionPolicy, actor: str,
                   reason: str, before_close: Callable[[Retirement], None] | None = None) -> Retirement:
    """Retire ``model:v<number>`` (see the module docstring). Raises :class:`RetirementRefused` (audited as
    ``version.retire.refused``) when an alias, the split or a running rollout still needs it.

    ``before_close``: called with the retirement before its closing audit event, on every run that has not
    closed it yet, so work after the registry's (the flow's announcement) is redone by the next run if the process
    dies in it; it must be idempotent. Not called when the version was retired before."""
    store = registry.store
    store.get_version(model, number)  # NotFoundError before any lock is taken
    with store.lock(f"retire/{model}/v{number}", wait_s=RETIRE_WAIT_S,
                    busy=f"{model}:v{number} is being retired by another process"):
        return _retire(registry, model, number, policy=policy, actor=actor, reason=reason, before_close=before_close)


def _retire(registry: Registry, model: str, number: int, *, policy: RetentionPolicy, actor: str, reason: str,
            before_close: Callable[[Retirement], None] | None) -> Retirement:
    store, ref = registry.store, f"{model}:v{number}"
    root = _root(registry)
    context = {"policy": policy.name, "policy_version": policy.version, "artifacts": policy.artifacts,
               "reason": reason}
    stone = tomb.read_tombstone(root, model, number)
    if (store.get_version(model, number).status is S.DECOMMISSIONED and stone and stone["state"] == "decommissioned"
            and store.has_event(CLOSED, ref)):
        return _result(registry, model, number, policy, [])  # retired before: nothing left to do
    begun = ((stone or {}).get("retirement") or {}).get("weights")
    if begun in ("archive", "delete") and begun != policy.artifacts:
        # A retirement finishes as it began: a policy changed from archive to delete since must not delete the
        # copy the first run archived (nor one changed the other way leave weights a delete had started on).
        policy = policy.model_copy(update={"artifacts": begun})
    status, steps = _begin(store, model, number, actor=actor, reason=reason, context=context)
    if status is not S.DECOMMISSIONED:
        _bump_split(store, model, actor=actor, reason=f"{ref} retired: replicas unload it")
    _tombstone(registry, model, number, "retiring", policy, actor, reason)
    steps.append("tombstone")
    verb = "archived" if policy.artifacts == "archive" else "deleted"
    done = f"version.weights.{verb}"
    # A run killed after moving the weights and before auditing it leaves them gone and no record; the re-run
    # finds nothing to move, so it writes the record then (noting it), once. Only a re-run: an earlier run left
    # its "retiring" tombstone (written before the weights move), else weights that are absent were never ours.
    late = stone is not None and stone["state"] == "retiring" and not store.has_event(done, ref)
    moved = _remove_weights(registry, model, number, policy.artifacts)
    if moved or late:
        store.append_audit(actor=actor, action=done, subject=ref, payload={
            **context, "archive_uri": _archive_uri(registry, model, number) if verb == "archived" else None,
            **({} if moved else {"note": "done by an earlier run that stopped before recording it"})})
        steps.append(f"weights {verb}")
    if status is not S.DECOMMISSIONED:
        store.set_status(model, number, S.DECOMMISSIONED, actor=actor, reason=reason)
        steps.append("decommissioned")
    _tombstone(registry, model, number, "decommissioned", policy, actor, reason)
    done = _result(registry, model, number, policy, steps)
    if before_close is not None:
        before_close(done)
    store.append_audit(actor=actor, action=CLOSED, subject=ref,
                       payload={**context, "tombstone_uri": tomb.tombstone_uri(model, number)})
    return done


def _begin(store: RegistryStore, model: str, number: int, *, actor: str, reason: str,
           context: dict[str, object]) -> tuple[VersionStatus, list[str]]:
    """Step 1, under the model lock: refuse if anything holds the version, else mark it ``archived``."""
    ref, steps = f"{model}:v{number}", []
    try:
        with store._tx() as conn:
            store._lock_model(conn, model)
            status = store._status(conn, model, number)
            if status is S.DECOMMISSIONED:
                return status, steps  # only the tombstone is left to finish
            found = _holds_now(conn, model, number)
            if found:
                raise RetirementRefused(ref, found)
            if status is not S.ARCHIVED:
                store._set_status(conn, model, number, S.ARCHIVED, actor=actor, reason=RETIRING + reason)
                steps.append("archived")
            store._audit(conn, actor, "version.retire.started", ref, context)
    except RetirementRefused as exc:
        store.append_audit(actor=actor, action="version.retire.refused", subject=ref,
                           payload={**context, "holds": exc.holds})
        raise
    return status, steps


def _root(registry: Registry) -> Path:
    """Where tombstones live: the local artifact root (the Hub store keeps them beside its download cache)."""
    artifacts = registry.artifacts
    return artifacts.root if isinstance(artifacts, HubArtifactStore) else tomb.local_root(artifacts)


def _remove_weights(registry: Registry, model: str, number: int, how: Literal["archive", "delete"]) -> bool:
    """Step 4. On the Hub the version's tag goes (``archive``: renamed); its commit stays in history."""
    if isinstance(registry.artifacts, HubArtifactStore):
        # Main then shows the registry's champion (the Hub's branch may lag behind it after a failed sync).
        return registry.artifacts.retire_weights(model, number, how, registry.store.get_alias(model, "champion"))
    return (tomb.archive_weights if how == "archive" else tomb.delete_weights)(_root(registry), model, number)


def _archive_uri(registry: Registry, model: str, number: int) -> str:
    if isinstance(registry.artifacts, HubArtifactStore):
        return registry.artifacts.archive_uri(model, number)
    return tomb.archive_uri(model, number)


def _result(registry: Registry, model: str, number: int, policy: RetentionPolicy, steps: list[str]) -> Retirement:
    artifacts = registry.artifacts
    archived = (artifacts.is_archived(model, number) if isinstance(artifacts, HubArtifactStore)
                else tomb.archive_folder(_root(registry), model, number).is_dir())
    return Retirement(ref=f"{model}:v{number}", artifacts=policy.artifacts,
                      tombstone_uri=tomb.tombstone_uri(model, number),
                      archive_uri=_archive_uri(registry, model, number) if archived else None, steps=steps)


def _bump_split(store: RegistryStore, model: str, *, actor: str, reason: str) -> None:
    split = get_split(store, model)
    if split is None:
        return  # never served: no replica holds anything
    # A conflict means someone moved the split meanwhile: replicas re-read it anyway.
    with contextlib.suppress(ConcurrentChangeError):
        set_split(store, split, actor=actor, reason=reason, expected_revision=split.revision)


def _audit_of(store: RegistryStore, subject: str) -> list:
    query = select(t.audit_events).where(t.audit_events.c.subject == subject).order_by(t.audit_events.c.seq)
    with store.engine.connect() as conn:
        return [_event(row) for row in conn.execute(query)]


def _tombstone(registry: Registry, model: str, number: int, state: tomb.State, policy: RetentionPolicy,
               actor: str, reason: str) -> None:
    store, ref = registry.store, f"{model}:v{number}"
    version = store.get_version(model, number)
    record = {
        "state": state,
        "version": version.model_dump(mode="json", exclude={"evals"}),
        "evals": [r.model_dump(mode="json", exclude={"items"}) for r in version.evals],
        "status_history": [{**h, "at": h["at"].isoformat()} for h in store.status_history(model, number)],
        "alias_history": [m.model_dump(mode="json") for alias in Alias
                          for m in store.alias_history(model, alias) if number in (m.version, m.previous_version)],
        "audit": [e.model_dump(mode="json") for e in _audit_of(store, ref)],
        "retirement": {"policy": policy.model_dump(mode="json"), "actor": actor, "reason": reason,
                       "written_at": store.clock().isoformat(),
                       "weights": policy.artifacts, "archive_uri": _archive_uri(registry, model, number)
                       if policy.artifacts == "archive" else None},
    }
    fallback = {"eval.json": json.dumps([r.model_dump(mode="json") for r in version.evals], indent=2)}
    if version.lineage is not None:
        fallback["lineage.json"] = version.lineage.model_dump_json(indent=2)
    root = _root(registry)
    if isinstance(registry.artifacts, HubArtifactStore) and not (tomb.tombstone_folder(root, model, number)
                                                                  / "README.md").is_file():
        card = registry.artifacts.version_text(version, "README.md")  # from its commit: no local folder to copy
        if card is not None:
            fallback["README.md"] = card
    tomb.write_tombstone(root, model, number, record, fallback=fallback)
