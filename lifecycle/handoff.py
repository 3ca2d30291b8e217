"""The hand-off from retrain to rollout: when to announce a published candidate again.

A retrain announces its candidate twice: the audit event ``slm.candidate.published`` (which records the Prefect
server it was meant for), then the Prefect event of the same name, which the rollout deployment's automation turns
into a rollout run. The Prefect event is sent from a queue in the background: when the retrain's process dies
between the two, or just after "emitting", the audit says published and Prefect never heard it, and nothing will
ever roll the candidate out.

The monitor, which runs every 15 minutes, asks :func:`decide_handoff` whether to send the Prefect event again. Only
the newest candidate is considered, and only if all of these hold:

- it was announced within ``max_age`` (an old candidate is history; the retention policy retires it);
- it was announced to this Prefect server (a retrain run without ``PREFECT_API_URL`` announced to a temporary
  server of its own, on purpose: nothing rolls that out unasked);
- the server has no record of the announcement (``heard`` is False): a candidate whose announcement arrived and
  whose rollout run was refused (another rollout was running), cancelled or failed needs a person, not a retry;
- no rollout of the model is unfinished and no rollout run of it is queued or running;
- it was gated against the champion of today (an older gate compared it with a model that is no longer served);
- ``grace`` has passed since the announcement (time for the automation and a worker), and since the last
  re-announcement; at most ``max_attempts`` re-announcements.
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
    announced_to: str | None  # the Prefect API the announcement was meant for; None: a temporary server; "": not
    # recorded (an announcement from before the hand-off check)
    reannounced_at: list[datetime] = []  # earlier re-announcements, oldest first


class HandoffDecision(Frozen):
    reannounce: str | None  # the ref to announce again, or None
    reasons: list[str]


def newest(stranded: list[PublishedCandidate]) -> PublishedCandidate | None:
    return max(stranded, key=lambda c: c.number, default=None)


def decide_handoff(stranded: list[PublishedCandidate], *, server: str, heard: bool | None, champion: str | None,
                   rollout_busy: str | None, now: datetime, grace: timedelta, max_age: timedelta,
                   max_attempts: int = 3) -> HandoffDecision:
    """Which candidate, if any, to announce again (see the module docstring).

    ``stranded``: the model's candidates announced as published with no rollout of their own; ``server``: this
    Prefect server's API URL; ``heard``: whether it holds the newest one's announcement (None: it could not say);
    ``champion``: the model's champion ref now; ``rollout_busy``: why the model's rollout side is busy (an
    unfinished rollout, or a rollout run queued or running), else None.

    Examples (grace 30 min, max age 24 h): v4 announced to this server at 10:00, gated against v2, champion v2,
    never heard, nothing busy, now 10:40 → announce v4 again; now 10:20 → not yet; heard → no (a person's matter);
    champion v3 → no (stale gate); a rollout run of the model queued → no; the next day → no (too old).
    """
    now = as_utc(now)
    last = newest([c for c in stranded if now - as_utc(c.published_at) <= max_age])
    if last is None:
        return HandoffDecision(reannounce=None, reasons=[])

    def hold(reason: str) -> HandoffDecision:
        return HandoffDecision(reannounce=None, reasons=[reason])

    ref, by_hand = last.ref, f"slm rollout run {last.ref}"
    # First what may still start its rollout unaided (a busy rollout side, the grace): a "roll it out by hand" then
    # would start a second run.
    if rollout_busy is not None:
        return hold(f"{ref} waits: {rollout_busy}")
    since = max(as_utc(t) for t in [last.published_at, *last.reannounced_at])
    what = "announced again" if last.reannounced_at else "published"
    if now < since + grace:
        return hold(f"{ref} was {what} at {since:%Y-%m-%d %H:%M} UTC; its rollout has until "
                    f"{since + grace:%Y-%m-%d %H:%M} UTC to start")
    if max_attempts == 0:
        return hold(f"{ref} was published and no rollout of it started; announcing again is off "
                    f"(handoff_attempts: 0): roll it out by hand ({by_hand})")
    if last.announced_to == "":
        return hold(f"{ref} was published before announcements recorded their Prefect server, and no rollout of it "
                    f"started: roll it out by hand ({by_hand}) if it should go live")
    if not same_server(last.announced_to, server):
        where = last.announced_to or "a temporary Prefect server (its retrain ran without PREFECT_API_URL)"
        return hold(f"{ref} was announced to {where}, not to this server's automations: roll it out by hand "
                    f"({by_hand}) if it should go live")
    if last.gated_against != champion:
        return hold(f"{ref} was published with no rollout, but its gate compared it with {last.gated_against}, and "
                    f"the champion is {champion or 'none'} now: retrain, or roll it out by hand ({by_hand})")
    if heard is None:
        return hold(f"{ref} has no rollout, and the Prefect server could not say whether it received the "
                    "announcement: not announcing it again on a guess")
    if heard:
        return hold(f"the Prefect server received {ref}'s announcement, yet no rollout of it started: its rollout run "
                    f"was refused, cancelled or failed; see the rollout deployment's runs, or roll it out by hand "
                    f"({by_hand})")
    if len(last.reannounced_at) >= max_attempts:
        return hold(f"{ref} has been announced again {_times(len(last.reannounced_at))} and the Prefect server has "
                    f"none of it: check the connection to the server, or roll it out by hand ({by_hand})")
    return HandoffDecision(reannounce=ref, reasons=[
        f"{ref} was {what} at {since:%Y-%m-%d %H:%M} UTC, the Prefect server never received it, and no rollout of "
        f"it has started: announcing it again (attempt {len(last.reannounced_at) + 1} of {max_attempts})"])


def same_server(a: str | None, b: str | None) -> bool:
    """Do two Prefect API URLs name the same server (a trailing slash aside; None and "" name none)?"""
    return (a or "").rstrip("/") == (b or "").rstrip("/")


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")
