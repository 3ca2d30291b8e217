"""Version statuses and aliases, and the one table of allowed status transitions.

A version's status only moves forward. A version enters the registry either as a ``candidate``
(it passed the offline gate) or ``rejected`` (it failed it, kept for the record). A rollout ends it as
``promoted`` or ``rolled_back``; a promoted champion that is later rolled back (an instant rollback to
``previous``) becomes ``rolled_back``. Retention archives what no alias needs, and decommissioning
leaves a tombstone. Aliases are separate: pointers with history, moved by the registry.
"""

from __future__ import annotations

import enum


class VersionStatus(enum.StrEnum):
    CANDIDATE = "candidate"
    REJECTED = "rejected"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ARCHIVED = "archived"
    DECOMMISSIONED = "decommissioned"


class Alias(enum.StrEnum):
    CHAMPION = "champion"      # serves by default
    CHALLENGER = "challenger"  # in a rollout
    PREVIOUS = "previous"      # the last champion, kept loadable for an instant rollback


S = VersionStatus

#: from-status -> the statuses it may move to. Anything else is refused.
ALLOWED_TRANSITIONS: dict[VersionStatus, frozenset[VersionStatus]] = {
    S.CANDIDATE: frozenset({S.PROMOTED, S.ROLLED_BACK, S.ARCHIVED}),
    S.REJECTED: frozenset({S.ARCHIVED}),
    S.PROMOTED: frozenset({S.ROLLED_BACK, S.ARCHIVED}),
    S.ROLLED_BACK: frozenset({S.ARCHIVED}),
    S.ARCHIVED: frozenset({S.DECOMMISSIONED}),
    S.DECOMMISSIONED: frozenset(),
}

#: statuses a version may be registered with.
INITIAL_STATUSES = frozenset({S.CANDIDATE, S.REJECTED})

#: retired by the decommission flow: weights archived (then a tombstone only); nothing serves or benchmarks it again.
RETIRED = frozenset({S.ARCHIVED, S.DECOMMISSIONED})


class TransitionError(ValueError):
    """A status change that the transition table does not allow."""


def check_transition(current: VersionStatus, target: VersionStatus) -> None:
    """Raise :class:`TransitionError` unless ``current -> target`` is in the table."""
    if target not in ALLOWED_TRANSITIONS[current]:
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[current])) or "nothing (terminal)"
        raise TransitionError(
            f"status cannot move from {current} to {target}; from {current} it may move to: {allowed}"
        )
