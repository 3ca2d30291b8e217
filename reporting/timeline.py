"""Who served how much, when: traffic steps from the audit log's ``traffic.split`` events.

The stored split is what every gateway replica routes by (``registry.traffic``), and each change of it is one
``traffic.split`` audit event whose payload holds the whole new split, so the events replayed in order are the
traffic history. Before the first split is written (a fresh bootstrap: the gateway writes one from the
champion alias on its first start) the champion alias is what would serve, so its moves stand in for the
split until then, each as 100 % to the champion.
"""

from __future__ import annotations

from lifecycle.audit import AuditEvent
from lifecycle.records import AliasMove
from lifecycle.routing import TrafficSplit
from reporting.records import TrafficStep

SPLIT_ACTION = "traffic.split"


def shares(split: TrafficSplit) -> dict[int, float]:
    """Percent of served traffic per version; a challenger at 0 % is listed (at 0) so it shows as live."""
    found = {split.champion: 100.0 - split.challenger_percent}
    if split.challenger is not None:
        found[split.challenger] = split.challenger_percent
    return found


def traffic_steps(events: list[AuditEvent], champion_moves: list[AliasMove], model: str) -> list[TrafficStep]:
    """Every change of the model's traffic, oldest first (see the module docstring for the sources)."""
    splits = [e for e in events if e.action == SPLIT_ACTION and e.subject == model]
    first_split = splits[0].at if splits else None
    steps = [TrafficStep(at=move.moved_at, shares={move.version: 100.0}, source="champion alias (no split yet)")
             for move in champion_moves
             if move.version is not None and (first_split is None or move.moved_at < first_split)]
    for event in splits:
        split = TrafficSplit.model_validate(event.payload["to"])
        reason = str(event.payload.get("reason", ""))
        steps.append(TrafficStep(at=event.at, shares=shares(split), shadow=split.shadow,
                                 source=f"split r{event.payload.get('revision')}: {reason}"))
    return sorted(steps, key=lambda s: s.at)
