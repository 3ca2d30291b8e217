"""The hand-off from retrain to rollout: when to announce a published candidate again.

A retrain announces its candidate twice: the audit event ``slm.candidate.published``, then the Prefect event of
the same name, which the rollout deployment's automation turns into a rollout run. Two things can leave a
candidate that nothing will ever roll out:

- the process died between the two (the Prefect event is sent from a queue in the background, so also in the
  moment after it was "emitted"): the audit says published, Prefect never heard it;
- the rollout run it started was refused because another candidate of the model was rolling out
  (``RolloutInProgress``), or died before it stored its first state.

The monitor, which runs every 15 minutes, asks :func:`decide_handoff` whether to send the Prefect event again.
It re-announces only the newest candidate, only when it was gated against the champion of today (an older gate
compared it with a model that is no longer served), only once no rollout run of the model is queued or running and
no rollout is unfinished, after ``grace`` (time for the automation and a worker to start the run), and at most
``max_attempts`` times, ``grace`` apart: a candidate that nothing starts after that needs a person, and the
reasons say what to look at.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from lifecycle.predictions import as_utc
from lifecycle.records import Frozen


class PublishedCandidate(Frozen):
    """A version announced as ``slm.candidate.published`` that is still a candidate and has no rollout."""

    ref: str
    number: int
    published_at: datetime
    gated_against: str | None  # the champion ref its gate compared it with (the announcement's payload)
    reannounced_at: list[datetime] = []  # earlier re-announcements, oldest first


class HandoffDecision(Frozen):
    reannounce: str | None  # the ref to announce again, or None
    reasons: list[str]


def decide_handoff(stranded: list[PublishedCandidate], *, champion: str | None, rollout_busy: str | None,
                   now: datetime, grace: timedelta, max_attempts: int = 3) -> HandoffDecision:
    """Which candidate, if any, to announce again (see the module docstring).

    ``stranded``: the model's candidates announced as published with no rollout of their own; ``champion``: the
    model's champion ref now; ``rollout_busy``: why the rollout side is busy (an unfinished rollout, or a rollout
    run queued or running), else None.

    Examples (grace 30 min): v4 published at 10:00, gated against v2, champion v2, nothing busy, now 10:40 → announce
    v4 again; now 10:20 → not yet; champion v3 → no (stale gate); a rollout run queued → no.
    """
    now = as_utc(now)
    if not stranded:
        return HandoffDecision(reannounce=None, reasons=[])
    newest = max(stranded, key=lambda c: c.number)
    older = [c.ref for c in sorted(stranded, key=lambda c: c.number) if c is not newest]
    reasons = [f"{', '.join(older)} {'was' if len(older) == 1 else 'were'} published before {newest.ref} and never "
               "rolled out; only the newest candidate is announced again"] if older else []
    if rollout_busy is not None:
        return HandoffDecision(reannounce=None, reasons=[*reasons, f"{newest.ref} waits: {rollout_busy}"])
    if newest.gated_against != champion:
        return HandoffDecision(reannounce=None, reasons=[*reasons, (
            f"{newest.ref} was published with no rollout, but its gate compared it with {newest.gated_against}, "
            f"and the champion is {champion or 'none'} now: retrain, or roll it out by hand "
            f"(slm rollout run {newest.ref})")])
    last = as_utc(max([newest.published_at, *newest.reannounced_at]))
    if now < last + grace:
        return HandoffDecision(reannounce=None, reasons=[*reasons, (
            f"{newest.ref} was {'announced again' if newest.reannounced_at else 'published'} at "
            f"{last:%Y-%m-%d %H:%M} UTC; its rollout has until {last + grace:%Y-%m-%d %H:%M} UTC to start")])
    if len(newest.reannounced_at) >= max_attempts:
        return HandoffDecision(reannounce=None, reasons=[*reasons, (
            f"{newest.ref} has been announced again {_times(len(newest.reannounced_at))} and no rollout started: "
            "check that the rollout deployment's automation is enabled and a worker serves its pool, or roll it "
            f"out by hand (slm rollout run {newest.ref})")])
    return HandoffDecision(reannounce=newest.ref, reasons=[*reasons, (
        f"{newest.ref} was {'announced again' if newest.reannounced_at else 'published'} at {last:%Y-%m-%d %H:%M} "
        f"UTC and no rollout of it has started: announcing it again "
        f"(attempt {len(newest.reannounced_at) + 1} of {max_attempts})")])


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")
