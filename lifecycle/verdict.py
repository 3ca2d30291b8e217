"""Verdicts: the one vocabulary every decision in slm-lifecycle answers in.

A decision is a list of findings; each finding has a verdict and a reason a person can read.
Verdicts are ordered PASS < INCONCLUSIVE < FAIL, and a list folds to its worst member, so one
failed check fails the decision and one inconclusive check keeps it from passing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict


class Verdict(enum.IntEnum):
    PASS = 0
    INCONCLUSIVE = 1
    FAIL = 2

    def __str__(self) -> str:
        return self.name.lower()


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """Fold verdicts to the worst one. An empty list is INCONCLUSIVE: no evidence is never a pass.

    >>> worst([Verdict.PASS, Verdict.INCONCLUSIVE])
    <Verdict.INCONCLUSIVE: 1>
    >>> worst([])
    <Verdict.INCONCLUSIVE: 1>
    """
    found = list(verdicts)
    return max(found) if found else Verdict.INCONCLUSIVE


class Finding(BaseModel):
    """One checked rule: what was checked, what it found, and why that verdict."""

    model_config = ConfigDict(frozen=True)

    check: str
    verdict: Verdict
    reason: str
    observed: float | None = None
    threshold: float | None = None
