"""The audit hash chain: every decision, tamper-evident.

One chain per registry. Event ``k`` stores ``hash_k = sha256(canonical(event_k) including prev_hash=hash_{k-1})``;
the first event's ``prev_hash`` is 64 zeros. The canonical form is JSON with sorted keys, separators
``(",", ":")``, UTF-8, timestamps as ISO-8601 text — computed here in Python and stored as text, so
SQLite and PostgreSQL verify the same bytes. The store keeps a separate head (event count and last hash):
without it, deleting the newest events would leave a shorter chain that still verifies.

:func:`verify` recomputes every hash and link and names the first kind of damage at each position:
an edited event (its hash no longer matches its content, or it no longer has a hashable content at all: NaN,
a lone surrogate, nesting too deep to read), a deleted or inserted one (a gap or a break in the sequence numbers
or the links), reordered ones (links point to the wrong predecessor), or a truncated tail (the head disagrees
with the last event). Given the registry's own records (:class:`RegistryRecords`), it also checks that the log
accounts for them: every row of ``versions`` has its ``version.registered`` event, each ``status_history`` row
one ``version.registered`` or ``version.status`` event, each ``alias_history`` row one ``alias.moved`` event
(the store writes each pair in one transaction), and a registry with any of them has a chain head.

What it cannot detect: the chain and its head live in the same database as everything else. Someone who can
write every table can cut the log's tail and rewrite the head to match; the cross-check above then forces them
to delete the registry's own rows of those changes too (a version, its status changes, its alias moves) — but an
actor who rewrites every table consistently, or recomputes the whole chain and head after an edit, leaves
nothing for this function to find. Catching that needs an anchor outside the database (the head's hash written
somewhere the database's writers cannot change), which this module does not keep.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from pydantic import Field

from lifecycle.predictions import parse_utc
from lifecycle.records import Frozen

GENESIS_HASH = "0" * 64


def canonical_json(value: object) -> str:
    """The one serialization that is hashed. ``allow_nan=False``: NaN has no stable JSON text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of a float's range")
    return value


def parse_payload(text: str | bytes) -> dict[str, object]:
    """A stored payload read back, or ValueError: only what :func:`canonical_json` could have written, i.e. a JSON
    object that can be hashed again — no NaN or Infinity (Python's json reads them), no number overflowing to inf,
    no lone surrogate (``"\\ud800"`` reads, but cannot be encoded to UTF-8), no nesting too deep to read or write."""
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
        canonical_json(value).encode("utf-8")
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
    except (TypeError, ValueError) as exc:  # UnicodeError and json.JSONDecodeError are ValueErrors
        raise ValueError(f"not a JSON payload: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object but {type(value).__name__}")
    return value


class AuditEvent(Frozen):
    """One decision or side effect, as recorded."""

    seq: int = Field(ge=1)
    ts: str = Field(description="ISO-8601 UTC timestamp, stored as text")
    actor: str
    action: str = Field(description="e.g. 'gate.decided', 'alias.moved', 'version.registered'")
    subject: str = Field(description="what it is about, e.g. 'router:v3' or 'router'")
    payload: dict[str, object] = Field(default_factory=dict)
    prev_hash: str
    hash: str

    @property
    def at(self) -> datetime:
        """``ts`` as a UTC datetime."""
        return parse_utc(self.ts)


class ChainHead(Frozen):
    count: int
    last_hash: str


def event_hash(*, seq: int, ts: str, actor: str, action: str, subject: str,
               payload: dict[str, object], prev_hash: str) -> str:
    body = {"seq": seq, "ts": ts, "actor": actor, "action": action, "subject": subject,
            "payload": payload, "prev_hash": prev_hash}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def next_event(head: ChainHead, *, ts: datetime, actor: str, action: str, subject: str,
               payload: dict[str, object]) -> AuditEvent:
    """Build the event that follows ``head``. Payload must be JSON-serializable (checked here)."""
    payload = json.loads(canonical_json(payload))  # normalises tuples, rejects NaN and objects
    fields = dict(seq=head.count + 1, ts=ts.isoformat(), actor=actor, action=action,
                  subject=subject, payload=payload, prev_hash=head.last_hash)
    return AuditEvent(**fields, hash=event_hash(**fields))


class VerifyResult(Frozen):
    ok: bool
    checked: int
    problems: list[str]


class RegistryRecords(Frozen):
    """What the registry's own tables hold that the log must account for, one event each (written together)."""

    versions: list[str] = Field(default_factory=list, description="MODEL:vN of every row of versions")
    status_changes: int = Field(default=0, description="rows of status_history")
    alias_moves: int = Field(default=0, description="rows of alias_history")

    @property
    def empty(self) -> bool:
        return not (self.versions or self.status_changes or self.alias_moves)


def _recomputed(event: AuditEvent) -> str | None:
    """The event's hash recomputed; None when its content cannot be hashed at all (it was edited into NaN, a lone
    surrogate, nesting too deep): reported as an edit, never a crash of the check meant to report edits."""
    try:
        return event_hash(seq=event.seq, ts=event.ts, actor=event.actor, action=event.action,
                          subject=event.subject, payload=event.payload, prev_hash=event.prev_hash)
    except (ValueError, TypeError, RecursionError):
        return None


def verify(events: Sequence[AuditEvent], head: ChainHead | None,
           records: RegistryRecords | None = None) -> VerifyResult:
    """Check a chain read back in ``seq`` order against its stored head (and, given them, the registry's records:
    module docstring). The chain's findings come first, in row order, then the head's, then the records'."""
    problems: list[str] = []
    prev_hash = GENESIS_HASH
    for position, event in enumerate(events, start=1):
        if event.seq != position:
            problems.append(f"event at position {position} has seq {event.seq}: an event was deleted, "
                            "inserted or reordered")
        if _recomputed(event) != event.hash:
            problems.append(f"event seq {event.seq} ({event.action}) was edited: its content no longer "
                            "matches its hash")
        if event.prev_hash != prev_hash:
            problems.append(f"event seq {event.seq} does not link to the event before it: the chain was "
                            "cut, reordered or spliced here")
        prev_hash = event.hash
    if head is None:
        if events:
            problems.append("the chain head is missing although events exist")
        elif records is not None and not records.empty:
            problems.append(f"the chain head is missing although the registry holds {len(records.versions)} "
                            f"versions and {records.alias_moves} alias moves: the log was wiped")
    else:
        if head.count != len(events):
            problems.append(f"the head records {head.count} events but {len(events)} were found: "
                            "events were deleted or inserted")
        if head.last_hash != prev_hash:
            problems.append("the head's last hash differs from the last event's: the newest events were "
                            "removed or replaced")
    if records is not None:
        problems += _unaccounted(events, records)
    return VerifyResult(ok=not problems, checked=len(events), problems=problems)


def _unaccounted(events: Sequence[AuditEvent], records: RegistryRecords) -> list[str]:
    """The registry's records the log does not account for, and the log's registrations the registry lost."""
    actions = Counter(e.action for e in events)
    registered = {e.subject for e in events if e.action == "version.registered"}
    problems = []
    if missing := [ref for ref in records.versions if ref not in registered]:
        problems.append(f"{len(missing)} version(s) of the registry have no version.registered event "
                        f"({_some(missing)}): events were deleted from the log")
    if lost := sorted(registered - set(records.versions)):
        problems.append(f"the log records registering {_some(lost)} but the registry has no such version: "
                        "its rows were deleted")
    status_events = actions["version.registered"] + actions["version.status"]
    if status_events != records.status_changes:
        problems.append(f"the registry records {records.status_changes} status changes but the log has "
                        f"{status_events} version.registered/version.status events: events were deleted or "
                        "inserted, or the registry's rows were")
    if actions["alias.moved"] != records.alias_moves:
        problems.append(f"the registry records {records.alias_moves} alias moves but the log has "
                        f"{actions['alias.moved']} alias.moved events: events were deleted or inserted, or the "
                        "registry's rows were")
    return problems


def _some(refs: list[str]) -> str:
    return ", ".join(refs[:5]) + (f" and {len(refs) - 5} more" if len(refs) > 5 else "")
