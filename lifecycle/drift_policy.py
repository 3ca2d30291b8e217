"""The drift monitor's policy and its two decisions, pure: is the champion's world drifting, and may that
start a retrain now?

:func:`decide_drift` reads per-column drift results (from ``data_checks.drift``) and the champion's accuracy
on the window's feedback, and returns an ordered verdict with reasons:

* ``drift-share``: FAIL when at least ``policy.drift_share`` of the compared columns drifted (Evidently's
  dataset-drift rule);
* ``decisive-columns``: FAIL when any column marked ``decisive`` drifted on its own — out-of-vocabulary words
  in prompts are the sign of new products even while lengths and punctuation stay put;
* ``feedback-accuracy``: FAIL when the champion's success rate on feedback is clearly below its accuracy at
  promotion (the Wilson interval's upper bound under ``baseline - max_drop``);
* a window with fewer than ``policy.min_rows`` rows is INCONCLUSIVE: too little traffic is never "no drift".

Verdict: FAIL (drift or decay: announce it) if any finding fails; else INCONCLUSIVE when the data checks
could not run; else PASS. A feedback check without enough feedback is listed as INCONCLUSIVE but does not
hold the verdict: most traffic never gets feedback, and label-free drift checks still stand.

:func:`decide_trigger` is the storm rule: while drift persists every monitor run would fire again, so no
trigger while a retrain runs, nor within ``cooldown`` of the last retrain or of the last fired trigger.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from lifecycle.predictions import as_utc
from lifecycle.records import Frozen
from lifecycle.verdict import Finding, Verdict

ColumnKind = Literal["numerical", "categorical", "text", "embedding"]

# Every column the monitor can compare. Descriptors of a text column are named <column>_<descriptor>.
COLUMNS: dict[str, ColumnKind] = {
    **{f"{text}_{d}": "numerical" for text in ("prompt", "completion")
       for d in ("length", "words", "oov_share", "non_letter_share")},
    "route": "categorical",  # the completion as a category: the intent the model routed to
    "outcome": "categorical",  # ok / model_error / infra_error / input_error
    "latency_ms": "numerical",
    "prompt_text": "text",  # the raw prompts, through Evidently's domain classifier (TF-IDF words)
    # Sentence embeddings of the prompts (data_checks.embeddings, MiniLM): what they mean, whatever words they use;
    # the slowest column, on ``embedding_sample`` rows a side.
    "prompt_embedding": "embedding",
}
LOG_ONLY = frozenset({"outcome", "latency_ms"})  # training data has no such column: needs a window reference
# Effect sizes only: at 10k+ rows a p-value test (ks, chisquare) flags shifts far too small to matter.
METHODS: dict[ColumnKind, frozenset[str]] = {
    "numerical": frozenset({"wasserstein", "psi", "kl_div", "hellinger", "jensenshannon"}),
    "categorical": frozenset({"jensenshannon", "psi", "kl_div", "hellinger"}),
    "text": frozenset({"abs_text_content_drift", "perc_text_content_drift"}),
    # Evidently's embedding drift methods, each scored so that higher is more drift: model (a domain classifier's
    # ROC AUC, 0.5 = no drift), mmd (maximum mean discrepancy), ratio (share of drifted components: biased up on
    # small samples, 0.35 for the same world at 400 rows a side, 0.06 at 1,000), distance (euclidean distance
    # between the mean embeddings).
    "embedding": frozenset({"model", "mmd", "ratio", "distance"}),
}


# Methods whose score has a bounded range: a threshold outside it would flag every window, or none.
_BOUNDED = {"model": (0.5, 1.0, "a ROC AUC (0.5: no drift)"), "ratio": (0.0, 1.0, "a share of components")}


class ColumnRule(Frozen):
    method: str = Field(description="Evidently drift method (an effect size); see METHODS")
    threshold: float = Field(gt=0, description="the column drifted when its score is above this")
    decisive: bool = Field(default=False, description="this column drifting alone means drift")


class ReferenceSpec(Frozen):
    kind: Literal["training", "window"] = Field(
        default="training", description="training: the champion's training prompts (snapshot in its lineage); "
        "window: a pinned window of the prediction log, which also gives outcome and latency a reference")
    since: datetime | None = None
    until: datetime | None = None

    @model_validator(mode="after")
    def _window(self) -> ReferenceSpec:
        if self.kind == "window":
            if self.since is None or self.until is None:
                raise ValueError("reference kind 'window' needs both `since` and `until` (ISO-8601 with a zone)")
            if as_utc(self.until) <= as_utc(self.since):
                raise ValueError(f"reference window is empty: until ({self.until}) must be after since ({self.since})")
        return self


class FeedbackRule(Frozen):
    benchmark: str = Field(default="golden-before", description="the champion's eval that stands for its "
                           "accuracy at promotion")
    min_feedback: int = Field(default=50, ge=1, description="fewer feedback answers than this: no judgement")
    max_drop: float = Field(default=0.05, ge=0, le=1, description="tolerated accuracy loss since promotion")
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class DriftPolicy(Frozen):
    """``configs/monitor.yaml``: what is compared, the thresholds, and the storm rule."""

    reference: ReferenceSpec = ReferenceSpec()
    columns: dict[str, ColumnRule] = Field(min_length=1)
    drift_share: float = Field(default=0.5, gt=0, le=1, description="dataset drift: share of compared columns")
    # Why 1000: effect sizes are biased upwards on small samples. Same-world traffic at 200 rows scored up to
    # 0.30 (length) and 0.25 (route, 77 categories); at 1000 rows at most 0.19 and 0.12 (bench/RESULTS.md).
    min_rows: int = Field(default=1000, ge=1, description="fewer rows in the window: inconclusive")
    sample_cap: int = Field(default=20_000, ge=1000, description="rows per side the check compares at most")
    embedding_sample: int = Field(default=1000, ge=100, le=5000, description=(
        "rows per side the prompt_embedding column embeds at most (a sentence encoder on the CPU: ~5 ms a "
        "prompt); drawn from the compared rows. At most 5,000: the mmd method holds a (2n)^2 kernel matrix"))
    seed: int = 0
    feedback: FeedbackRule = FeedbackRule()
    cooldown_minutes: float = Field(default=360, ge=0, description="no new trigger this long after the last "
                                    "trigger or retrain")
    handoff_grace_minutes: float = Field(default=30, ge=0, description=(
        "how long a published candidate may wait for its rollout to start before the monitor announces it again "
        "(lifecycle/handoff.py)"))
    handoff_attempts: int = Field(default=3, ge=0, description="times a stranded candidate is announced again at "
                                  "most; 0: never")
    trigger_grace_minutes: float = Field(default=30, ge=5, description=(
        "how old a drift trigger must be before the Prefect server's lack of its event counts as lost (at least 5: "
        "the event leaves from a queue, and a check too soon would fire a second retrain)"))
    handoff_max_age_hours: float = Field(default=24, gt=0, description="a candidate published longer ago than this "
                                         "is never announced again")
    labelled_drop: str | None = Field(default=None, description="labelled data for the retrain (event payload); "
                                      "default: the retrain config's `data`")
    retrain_config: str = Field(default="configs/retrain.yaml", description="retrain config named in the event")
    reports_kept: int = Field(default=200, ge=1, description="Evidently HTML reports kept per model, newest first "
                              "(~4 MB each; the audit log keeps every check's scores)")
    rollout_plan: str | None = Field(default=None, description="rollout plan named in the event: the retrain passes "
                                     "it on in slm.candidate.published, and the rollout deployment uses it; default: "
                                     "the retrain config's")

    @field_validator("columns")
    @classmethod
    def _known(cls, columns: dict[str, ColumnRule]) -> dict[str, ColumnRule]:
        for name, rule in columns.items():
            if name not in COLUMNS:
                raise ValueError(f"unknown column {name!r}; the monitor knows: {', '.join(COLUMNS)}")
            allowed = METHODS[COLUMNS[name]]
            if rule.method not in allowed:
                raise ValueError(f"column {name!r} is {COLUMNS[name]}: method {rule.method!r} is not one of "
                                 f"{sorted(allowed)}")
            low, high, what = _BOUNDED.get(rule.method, (0.0, math.inf, ""))
            if not low < rule.threshold < high:
                raise ValueError(f"column {name!r}: method {rule.method!r} scores {what}; its threshold must lie "
                                 f"in ({low:g}, {high:g}), got {rule.threshold}")
        return columns

    @property
    def cooldown(self) -> timedelta:
        return timedelta(minutes=self.cooldown_minutes)


class MonitorParams(BaseModel):
    """Parameters of the monitor flow: flat, so the Prefect UI draws a form. The window runs from since
    (included) to until (excluded); until defaults to now and since to `hours` before until."""

    model: str | None = Field(default=None, description="registry model; default SLM_MODEL_NAME")
    hours: float = Field(default=24, gt=0, description="window length when `since` is not given")
    since: datetime | None = Field(default=None, description="window start (ISO-8601 with a zone)")
    until: datetime | None = Field(default=None, description="window end, exclusive; default now")
    policy: str = Field(default="configs/monitor.yaml", description="drift policy YAML")
    data: str | None = Field(default=None, description="labelled data drop named in the drift event "
                             "(overrides the policy's `labelled_drop`)")
    rollout_plan: str | None = Field(default=None, description="rollout plan named in the drift event, for the "
                                     "candidate of the retrain it starts (overrides the policy's `rollout_plan`)")

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        until = as_utc(self.until or now)
        since = as_utc(self.since) if self.since is not None else until - timedelta(hours=self.hours)
        if until <= since:
            raise ValueError(f"empty monitor window: until ({until}) must be after since ({since})")
        return since, until


class ColumnResult(Frozen):
    """One column compared (``score`` set) or skipped (``skipped`` says why)."""

    column: str
    method: str
    threshold: float
    score: float | None = None
    drifted: bool = False
    skipped: str | None = None


class FeedbackEvidence(Frozen):
    """Served champion answers with feedback in the window, and the champion's accuracy at promotion."""

    n: int = Field(ge=0)
    successes: int = Field(ge=0)
    baseline: float | None = Field(default=None, ge=0, le=1, description="None when no eval was recorded")


class DriftDecision(Frozen):
    verdict: Verdict
    findings: list[Finding]
    drifted_columns: list[str]
    scores: dict[str, float]

    @property
    def fire(self) -> bool:
        return self.verdict is Verdict.FAIL

    @property
    def decay(self) -> bool:
        return any(f.check == "feedback-accuracy" and f.verdict is Verdict.FAIL for f in self.findings)

    def reasons(self) -> list[str]:
        return [f"[{f.verdict}] {f.check}: {f.reason}" for f in self.findings]

    def reason(self) -> str:
        """One line for the event payload and the retrain's lineage: the failed findings."""
        failed = [f"{f.check}: {f.reason}" for f in self.findings if f.verdict is Verdict.FAIL]
        return "; ".join(failed) or "no drift"


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval of a success rate.

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = successes/n`` and ``z`` the normal
    quantile of ``(1 + confidence)/2``. Unlike p ± z·se it stays inside [0, 1] and is sensible at 0 or n
    successes. Assumes independent answers. Worked examples (95 %), rows of the unit tests:

    * 60 of 100 → (0.5020, 0.6906);  84 of 100 → (0.7558, 0.8990);  50 of 50 → (0.9287, 1.0).
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 or n successes the bound is exactly 0 or 1; rounding would leave it a hair off.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    return low, 1.0 if successes == n else min(1.0, centre + half)


def decide_drift(columns: Sequence[ColumnResult], feedback: FeedbackEvidence | None, policy: DriftPolicy, *,
                 rows: int) -> DriftDecision:
    """The monitor's verdict on one window (see the module docstring for the rules)."""
    compared = [c for c in columns if c.score is not None]
    drifted = [c for c in compared if c.drifted]
    findings: list[Finding] = []
    if rows < policy.min_rows or not compared:
        why = (f"only {rows} rows in the window (policy min_rows {policy.min_rows})" if rows < policy.min_rows
               else "no column could be compared: " + "; ".join(f"{c.column}: {c.skipped}" for c in columns))
        findings.append(Finding(check="data-drift", verdict=Verdict.INCONCLUSIVE, reason=why, observed=rows,
                                threshold=policy.min_rows))
    else:
        share = len(drifted) / len(compared)
        listed = ", ".join(f"{c.column} {c.score:.3g} > {c.threshold:g}" for c in drifted) or "none"
        findings.append(Finding(
            check="drift-share", verdict=Verdict.FAIL if share >= policy.drift_share else Verdict.PASS,
            reason=f"{len(drifted)} of {len(compared)} columns drifted ({listed})", observed=share,
            threshold=policy.drift_share))
        decisive = [c.column for c in drifted if c.column in policy.columns and policy.columns[c.column].decisive]
        if any(rule.decisive for rule in policy.columns.values()):
            findings.append(Finding(
                check="decisive-columns", verdict=Verdict.FAIL if decisive else Verdict.PASS,
                reason=f"drifted: {', '.join(decisive)}" if decisive else "no decisive column drifted",
                observed=len(decisive), threshold=0))
    findings.append(_feedback_finding(feedback, policy))
    data = [f for f in findings if f.check != "feedback-accuracy"]
    if any(f.verdict is Verdict.FAIL for f in findings):
        verdict = Verdict.FAIL
    elif any(f.verdict is Verdict.INCONCLUSIVE for f in data):
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.PASS
    return DriftDecision(verdict=verdict, findings=findings, drifted_columns=[c.column for c in drifted],
                         scores={c.column: round(float(c.score), 6) for c in compared if math.isfinite(c.score)})



def _feedback_finding(feedback: FeedbackEvidence | None, policy: DriftPolicy) -> Finding:
    rule = policy.feedback
    check = "feedback-accuracy"
    if feedback is None or feedback.baseline is None:
        return Finding(check=check, verdict=Verdict.INCONCLUSIVE,
                       reason=f"no accuracy at promotion recorded for {rule.benchmark}")
    if feedback.n < rule.min_feedback:
        return Finding(check=check, verdict=Verdict.INCONCLUSIVE, observed=feedback.n, threshold=rule.min_feedback,
                       reason=f"{feedback.n} answers with feedback (policy min_feedback {rule.min_feedback})")
    low, high = wilson_interval(feedback.successes, feedback.n, rule.confidence)
    floor = feedback.baseline - rule.max_drop
    rate = feedback.successes / feedback.n
    text = (f"{rate:.3f} on {feedback.n} answers ({rule.confidence:.0%} CI [{low:.3f}, {high:.3f}]) vs "
            f"{feedback.baseline:.3f} at promotion, floor {floor:.3f}")
    verdict = Verdict.FAIL if high < floor else Verdict.PASS if low >= floor else Verdict.INCONCLUSIVE
    return Finding(check=check, verdict=verdict, reason=text, observed=rate, threshold=floor)


class TriggerDecision(Frozen):
    fire: bool
    reason: str
    retry_after: datetime | None = Field(default=None, description="earliest time a trigger may fire again")
    replaces: datetime | None = Field(default=None, description=(
        "when firing in place of a trigger the Prefect server never received: that trigger's time (the cooldown "
        "counts from triggers after it)"))


def decide_trigger(*, now: datetime, cooldown: timedelta, running_retrain_since: datetime | None,
                   last_retrain_at: datetime | None, last_trigger_at: datetime | None,
                   rollout_candidate: int | None = None, rollout_started_at: datetime | None = None,
                   last_trigger_lost: bool = False) -> TriggerDecision:
    """May a drift finding start a retrain now? Suppress while one runs, within ``cooldown`` of the start of an
    unfinished rollout of the model (``rollout_candidate``: its candidate may answer the drift), or within
    ``cooldown`` of the last retrain (finished) or the last fired trigger (whose retrain may still be queued).
    A rollout older than the cooldown no longer holds the trigger off: one whose flow died, or that waits for a
    person, must not silence the monitor for ever.

    ``last_trigger_lost``: the last trigger never reached the Prefect server (its event was lost with the monitor's
    process): no retrain answers it, so it holds nothing off, and a trigger now takes its place.

    A timestamp in the future (clock skew between machines) counts as "just now", never as long ago.
    Examples (cooldown 6 h): a retrain running since 10:00 → suppress at any time; last trigger at 09:00,
    now 12:00 → suppress until 15:00; last retrain finished 02:00, now 12:00, no trigger since → fire.
    """
    now = as_utc(now)
    if running_retrain_since is not None:
        since = as_utc(running_retrain_since)
        return TriggerDecision(fire=False, reason=f"a retrain is running since {since:%Y-%m-%d %H:%M} UTC; "
                               "its candidate answers this drift")
    if rollout_candidate is not None:
        started = now if rollout_started_at is None else min(now, as_utc(rollout_started_at))
        if now < started + cooldown:
            return TriggerDecision(fire=False, retry_after=started + cooldown, reason=(
                f"the rollout of v{rollout_candidate}, started {started:%Y-%m-%d %H:%M} UTC, is unfinished: its "
                "candidate may answer this drift, and another could not roll out until it ends"))
    lost = as_utc(last_trigger_at) if last_trigger_lost and last_trigger_at is not None else None
    recent = [(as_utc(at) + cooldown, label, as_utc(at)) for label, at in
              (("trigger", None if lost else last_trigger_at), ("retrain", last_retrain_at)) if at is not None]
    blocking = max((r for r in recent if now < r[0]), default=None)
    if blocking is not None:
        until, label, at = blocking
        return TriggerDecision(fire=False, retry_after=until,
                               reason=f"cooldown: the last {label} was at {at:%Y-%m-%d %H:%M} UTC, within {cooldown} "
                               f"(next trigger allowed from {until:%Y-%m-%d %H:%M} UTC)")
    if lost is not None:
        return TriggerDecision(fire=True, replaces=lost, reason=(
            f"the last trigger, at {lost:%Y-%m-%d %H:%M} UTC, never reached the Prefect server, so no retrain "
            "answered it; no retrain running and none within the cooldown"))
    return TriggerDecision(fire=True, reason="no retrain running and none within the cooldown")
