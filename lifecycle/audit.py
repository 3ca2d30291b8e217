"""The audit hash chain: every decision, tamper-evident.

One chain per registry. Event ``k`` stores ``hash_k = sha256(canonical(event_k) including prev_hash=hash_{k-1})``;
the first event's ``prev_hash`` is 64 zeros. The canonical form is JSON with sorted keys, separators
``(",", ":")``, UTF-8, timestamps as ISO-8601 text — computed here in Python and stored as text, so
SQLite and PostgreSQL verify the same bytes. The store keeps a separate head (event count and last hash):
without it, deleting the newest events would leave a shorter chain that still verifies.

:func:`verify` recomputes every hash and link and names the first kind of damage at each position:
an edited event (its hash no longer matches its content), a deleted or inserted one (a gap or a break in
the sequence numbers or the links), reordered ones (links point to the wrong predecessor), or a
truncated tail (the head disagrees with the last event).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime

from pydantic import Field

from lifecycle.predictions import parse_utc
from lifecycle.records import Frozen

GENESIS_HASH = "0" * 64


def canonical_json(value: object) -> str:
    """The one serialization that is hashed. ``allow_nan=False``: NaN has no stable JSON text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


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


def verify(events: Sequence[AuditEvent], head: ChainHead | None) -> VerifyResult:
    """Check a chain read back in ``seq`` order against its stored head."""
    problems: list[str] = []
    prev_hash = GENESIS_HASH
    for position, event in enumerate(events, start=1):
        if event.seq != position:
            problems.append(f"event at position {position} has seq {event.seq}: an event was deleted, "
                            "inserted or reordered")
        recomputed = event_hash(seq=event.seq, ts=event.ts, actor=event.actor, action=event.action,
                                subject=event.subject, payload=event.payload, prev_hash=event.prev_hash)
        if recomputed != event.hash:
            problems.append(f"event seq {event.seq} ({event.action}) was edited: its content no longer "
                            "matches its hash")
        if event.prev_hash != prev_hash:
            problems.append(f"event seq {event.seq} does not link to the event before it: the chain was "
                            "cut, reordered or spliced here")
        prev_hash = event.hash
    if head is None:
        if events:
            problems.append("the chain head is missing although events exist")
    else:
        if head.count != len(events):
            problems.append(f"the head records {head.count} events but {len(events)} were found: "
                            "events were deleted or inserted")
        if head.last_hash != prev_hash:
            problems.append("the head's last hash differs from the last event's: the newest events were "
                            "removed or replaced")
    return VerifyResult(ok=not problems, checked=len(events), problems=problems)
