"""The retention policy as data, and the pure decision of which versions to retire. No I/O.

A policy (``configs/retention.yaml``) keeps, for one model:

* every version that something still needs — the HARD holds, which no policy can override: an alias
  (champion, previous, challenger), a place in the persisted traffic split (champion, challenger, shadow),
  or a part in the running rollout (its candidate or the champion it is measured against);
* the ``keep_recent`` most recent RESTING versions (rejected, rolled_back, archived, or promoted but no
  longer aliased: a former champion), by version number, so the last few are at hand to compare against;
* every version that settled less than ``retire_after_days`` ago. The age is counted from the version's
  last status change before any archiving, so a version created long ago but rolled back yesterday is
  one day old: it was in use until then.

It retires the rest. A ``candidate`` (passed the gate, waiting for its rollout) is not a resting version:
it is kept for ``retire_after_days`` and then retired if no rollout has picked it up, and it never takes
one of the ``keep_recent`` places. ``decommissioned`` versions are done (a tombstone is all that is
left). A version whose retirement started and did not finish (``retiring``) is retired again, whatever
the recency and age rules say — the re-run completes what was begun — unless a hard hold appeared.

Worked examples (rows of ``tests/unit/lifecycle/test_retention.py``), policy keep_recent=1,
retire_after_days=30, ``now`` = day 100; "vN status@day" is the version and the day it settled:

* v1 promoted@10, alias previous → keep: ``holds alias previous``.
* v2 promoted@20, champion and in the split → keep: ``holds alias champion``, ``named by the traffic
  split as champion``.
* v3 rejected@30, v4 rejected@40 → v4 keep (``one of the 1 most recent resting versions``); v3 retire
  (``not among the 1 most recent resting versions (v4)``, ``70 days since it became rejected; retire
  after 30``).
* v5 rolled_back@95 with keep_recent=0 → keep: ``only 5 days since it became rolled_back; retire after 30``.
* v6 candidate@50, no rollout → retire: ``candidate never rolled out: 50 days since it became
  candidate; retire after 30``; the same candidate referenced by the running rollout → keep.

Every decision carries its reasons in order: the first says what decided it.

The policy also bounds the prediction log (``prediction_log_days``): :func:`plan_log_purge` gives the time
before which the model's logged answers (and the feedback on them) go — ``now`` minus that many days, but never
after the start of anything that still reads the log: the running rollout, whose decisions read its whole window,
and any other reader named (the decommission flow names the drift monitor's pinned reference window). Example:
90 days, ``now`` = day 100 → cutoff day 10; a rollout running since day 4 → cutoff day 4 (``the running rollout
of v5 reads the log since ...``); a monitor reference window from day 2 → cutoff day 2. ``null`` keeps the log for
ever.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field, field_validator

from lifecycle.records import Frozen
from lifecycle.routing import TrafficSplit
from lifecycle.status import VersionStatus

S = VersionStatus
#: statuses that count towards ``keep_recent``: versions no longer in service, kept for comparison.
RESTING: frozenset[VersionStatus] = frozenset({S.REJECTED, S.ROLLED_BACK, S.ARCHIVED, S.PROMOTED})
Action = Literal["keep", "retire", "done"]


#: The longest period a policy may name: dates further back than this fall out of Python's calendar (year 1).
MAX_DAYS = 36_500


class RetentionPolicy(Frozen):
    """``configs/retention.yaml``: what one model keeps. Aliased, split and rollout versions always stay."""

    name: str = Field(default="default", min_length=1, description="recorded in every audit event it decides")
    version: int = Field(default=1, ge=1, description="bump on every change, so the audit says which rules ran")
    keep_recent: int = Field(default=3, description="the N most recent resting versions (rejected, rolled_back, "
                             "archived, former champions) kept whatever their age")
    retire_after_days: float = Field(default=30.0, description="a version is retired only once it settled this "
                                     "many days ago")
    artifacts: Literal["archive", "delete"] = Field(default="archive", description="what happens to a retired "
                                                    "version's weights: moved to the archive area, or deleted")
    prediction_log_days: float | None = Field(default=90.0, description="logged answers (prompts included) and "
                                              "their feedback older than this are deleted; null keeps them for ever")

    @field_validator("keep_recent")
    @classmethod
    def _keep(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"keep_recent is {value}: it counts versions to keep; use 0 or more")
        return value

    @field_validator("prediction_log_days")
    @classmethod
    def _log_days(cls, value: float | None) -> float | None:
        # Why at least 1: the monitor and the rollouts read the last hours of the log; a purge must never reach them.
        if value is not None and not value >= 1:
            raise ValueError(f"prediction_log_days is {value}: give at least 1 day (e.g. 90), or null to keep the "
                             "log for ever; the drift monitor and running rollouts read the recent log")
        if value is not None and not value <= MAX_DAYS:
            raise ValueError(f"prediction_log_days is {value}: at most {MAX_DAYS} days (a hundred years); "
                             "null keeps the log for ever")
        return value

    @field_validator("retire_after_days")
    @classmethod
    def _days(cls, value: float) -> float:
        # Why > 0: a version rolled back minutes ago is still being investigated; never retire on the spot.
        if not value > 0:
            raise ValueError(f"retire_after_days is {value}: give a positive number of days (e.g. 30); "
                             "retiring at once would remove versions still under investigation")
        if not value <= MAX_DAYS:
            raise ValueError(f"retire_after_days is {value}: at most {MAX_DAYS} days (a hundred years)")
        return value


class VersionFacts(Frozen):
    """What the decision needs of one version, read from the registry by the caller."""

    number: int = Field(ge=1)
    status: VersionStatus
    settled_at: datetime = Field(description=(
        "the age clock: its last status change before any archiving, or the last time an alias left it (a former "
        "champion stops being of use when it stops being the rollback target, not when it was promoted), "
        "whichever is later"))
    retiring: bool = Field(default=False, description="a retirement started and did not finish")


class RunningRollout(Frozen):
    """What retention needs of the model's unfinished rollout (``lifecycle.rollout_state.RolloutState``)."""

    candidate: int = Field(ge=1)
    champion: int = Field(ge=1)
    phase: str = Field(description="running, paused or awaiting_approval: any phase that is not terminal")
    started_at: datetime | None = Field(default=None, description="its start: its decisions read the log from here")


class RetentionDecision(Frozen):
    model: str
    number: int
    status: VersionStatus
    action: Action
    reasons: list[str] = Field(min_length=1, description="in order: the first decided it")

    @property
    def ref(self) -> str:
        return f"{self.model}:v{self.number}"


def holds(number: int, *, aliases: dict[str, int], split: TrafficSplit | None,
          rollout: RunningRollout | None) -> list[str]:
    """Why ``number`` must not be retired now (empty: nothing holds it). The registry re-checks this
    under its lock before each retirement, since a plan may be stale by then."""
    found = [f"holds alias {alias}" for alias, n in sorted(aliases.items()) if n == number]
    if split is not None:
        roles = {"champion": split.champion, "challenger": split.challenger, "shadow": split.shadow}
        found += [f"named by the traffic split as {role}" for role, n in roles.items() if n == number]
    if rollout is not None:
        if rollout.candidate == number:
            found.append(f"candidate of the running rollout ({rollout.phase})")
        if rollout.champion == number:
            found.append(f"champion of the running rollout of v{rollout.candidate}")
    return found


class LogPurge(Frozen):
    """Which of a model's logged answers go: those logged before ``cutoff`` (None: none)."""

    model: str
    cutoff: datetime | None
    reasons: list[str] = Field(min_length=1)


def plan_log_purge(model: str, *, policy: RetentionPolicy, rollout: RunningRollout | None, now: datetime,
                   readers: Sequence[tuple[str, datetime]] = ()) -> LogPurge:
    """The prediction-log cutoff for ``model`` (module docstring): ``now - prediction_log_days``, held back to the
    running rollout's start and to the start of each other reader of the log, ``(what reads it, since when)``."""
    days = policy.prediction_log_days
    if days is None:
        return LogPurge(model=model, cutoff=None, reasons=["the policy keeps the prediction log for ever"])
    cutoff, reasons = now - timedelta(days=days), [f"answers logged more than {_days(days)} days ago go"]
    if rollout is not None and rollout.started_at is not None:
        readers = [(f"the running rollout of v{rollout.candidate}", rollout.started_at), *readers]
    for what, since in sorted(readers, key=lambda r: r[1]):
        if since < cutoff:
            cutoff = since
            reasons.append(f"but {what} reads the log since {since:%Y-%m-%d %H:%M} UTC: kept from there")
    return LogPurge(model=model, cutoff=cutoff, reasons=reasons)


def plan_retention(model: str, versions: Sequence[VersionFacts], *, aliases: dict[str, int],
                   split: TrafficSplit | None, rollout: RunningRollout | None, policy: RetentionPolicy,
                   now: datetime) -> list[RetentionDecision]:
    """One decision per version, by version number (see the module docstring for the rules)."""
    held = {v.number: holds(v.number, aliases=aliases, split=split, rollout=rollout) for v in versions}
    resting = sorted((v.number for v in versions if v.status in RESTING and not held[v.number]
                      and not v.retiring), reverse=True)
    recent = resting[:policy.keep_recent]
    out = []
    for v in sorted(versions, key=lambda f: f.number):
        action, reasons = _decide(v, held[v.number], recent, policy, now)
        out.append(RetentionDecision(model=model, number=v.number, status=v.status, action=action, reasons=reasons))
    return out


def _decide(v: VersionFacts, held: list[str], recent: list[int], policy: RetentionPolicy,
            now: datetime) -> tuple[Action, list[str]]:
    if v.status is S.DECOMMISSIONED and not v.retiring:
        return "done", ["already decommissioned: only its tombstone is left"]
    if held:
        return "keep", held
    if v.retiring:
        return "retire", ["a retirement was interrupted; completing it"]
    age = (now - v.settled_at).total_seconds() / 86_400
    since = f"{_days(age)} days since it became {v.status.value}"
    young = age < policy.retire_after_days
    if v.status is S.CANDIDATE:
        if young:
            return "keep", [f"candidate waiting for its rollout: only {since}; retire after "
                            f"{_days(policy.retire_after_days)}"]
        return "retire", [f"candidate never rolled out: {since}; retire after {_days(policy.retire_after_days)}"]
    n = policy.keep_recent
    if v.number in recent:
        return "keep", [f"one of the {n} most recent resting versions"]
    if young:
        return "keep", [f"only {since}; retire after {_days(policy.retire_after_days)}"]
    others = ", ".join(f"v{k}" for k in recent) or "none kept"
    return "retire", ["no alias, no traffic, no running rollout",
                      f"not among the {n} most recent resting versions ({others})",
                      f"{since}; retire after {_days(policy.retire_after_days)}"]


def _days(value: float) -> str:
    """Whole days print as such (30), others with one decimal (2.5); never round 29.96 up to 30."""
    if float(value).is_integer():
        return str(int(value))
    return f"{int(value * 10) / 10:.1f}"
