"""The rollout plan as data, and the pure decision of one stage: advance, hold, or roll back.

A plan (``configs/rollout.yaml``) is an ordered list of stages: an optional shadow stage (share 0: the
challenger answers a mirror of the traffic, nothing it says is served), then canary shares that rise
to 100. Each stage names a minimum sample per arm, a maximum duration, and guardrail metrics with their
direction and the regression worth catching.

``decide_stage`` compares the two arms' aggregates over the stage's window (``lifecycle.sequential``):

* a silent arm (no requests, or none answered: every one an infra error), fewer answered requests than
  the stage's minimum, or fewer distinct callers than its ``min_callers_per_arm`` is INCONCLUSIVE: never a pass
  (and a test whose own sums hold fewer callers than that, e.g. few callers gave feedback, does not pass either);
* a sample-ratio mismatch of the split is FAIL: the comparison is biased, so nothing it says can be trusted;
* a rate metric FAILs when the one-sided mSPRT rejects "challenger no worse" (always-valid p <= alpha), at
  any look; it PASSes when a regression as large as the one worth catching is ruled out
  (:attr:`lifecycle.sequential.RateTest.rules_out`: the mirrored test, centred on equal arms, from 10 expected
  events at the regression's rate on; the wider anytime-valid interval below that; each valid at alpha at any
  look, their switch measured at 3.6-5.0 % false passes at the boundary and bounded by 2 alpha); otherwise
  INCONCLUSIVE;
* latency mean is an anytime-valid test (:func:`lifecycle.sequential.relative_margin_cs` on the ok answers'
  latency sums): FAIL when the challenger's mean is, at confidence ``1 - alpha`` valid at every look, above
  ``(1 + regression) x`` the champion's; PASS when that much slowdown is ruled out (its no-regression test, as
  for rates, from the 30 answers below); INCONCLUSIVE otherwise,
  and below 30 ok answers on an arm (the plug-in variance of skewed latencies is unreliable there). Why
  a margin and not "any slowdown" as for rates: the plan accepts a stated cost (an adapter is slower),
  so only a slowdown beyond it is a regression — the same line the p95 budget draws;
* both tests count callers, not requests, where the aggregates were read by caller (``VersionAggregate.by_caller``;
  ``lifecycle.sequential.arm_design_effect``): one busy caller's failing or slow requests are one caller's
  evidence, not hundreds of independent ones (the reason then gives the design effect);
* latency p95 is a budget, not a test (percentiles have no sums to test): judged once the minimum
  sample is in, FAIL above ``(1 + regression) x`` the champion's p95.

The worst finding decides (``lifecycle.verdict.worst``): PASS -> advance, FAIL -> roll back, INCONCLUSIVE
-> hold; at the stage's maximum duration an INCONCLUSIVE stage pauses for a person or rolls back, as
the plan says. On the 100 % stage the champion serves nothing: the caller passes the champion's
aggregate from the previous stage as the reference, and the split is not checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator

from lifecycle.predictions import VersionAggregate
from lifecycle.records import Frozen
from lifecycle.sequential import (
    MeanDifferenceCS,
    RateTest,
    arm_design_effect,
    msprt_two_proportions,
    relative_margin_cs,
)
from lifecycle.srm import SRMCheck, sample_ratio_mismatch
from lifecycle.verdict import Finding, Verdict, worst

MetricName = Literal["model_error_rate", "infra_error_rate", "guardrail_rate", "feedback_success_rate",
                     "latency_mean_ms", "latency_p95_ms"]
Direction = Literal["lower_is_better", "higher_is_better"]
Action = Literal["advance", "hold", "pause", "rollback"]

_NATURAL: dict[str, Direction] = {
    "model_error_rate": "lower_is_better", "infra_error_rate": "lower_is_better",
    "guardrail_rate": "lower_is_better", "feedback_success_rate": "higher_is_better",
    "latency_mean_ms": "lower_is_better", "latency_p95_ms": "lower_is_better",
}
# (events, trials) of each rate metric: the aggregate's fields holding them, exact counts (the sequential test needs
# counts, not rates; VersionAggregate.by_caller is keyed by the events field).
_COUNTS: dict[str, tuple[str, str]] = {
    "model_error_rate": ("model_errors", "requests"),
    "infra_error_rate": ("infra_errors", "requests"),
    "guardrail_rate": ("guardrail_flagged", "requests"),
    "feedback_success_rate": ("feedback_success", "feedback_count"),
}
# (mean, sample variance, n) of each mean metric, over the ok answers.
_MEANS: dict[str, Callable[[VersionAggregate], tuple[float | None, float | None, int]]] = {
    "latency_mean_ms": lambda a: (a.latency_mean_ms, a.latency_var_ms2, a.ok),
}
# Why 30: below it the sample variance of skewed latencies is often far too small, and the CS with it too
# narrow (simulated: lognormal sigma 2, a look every 5 requests: a false PASS at n = 5 without this floor).
_MIN_FOR_MEANS = 30


class Guardrail(Frozen):
    metric: MetricName
    direction: Direction
    regression: float = Field(gt=0, description="the regression worth catching: rates in absolute points "
                              "(0.04 = 1 % -> 5 %), latency relative (0.25 = mean or p95 25 % above the champion's)")
    tolerance: float = Field(default=0.0, ge=0, description=(
        "rates only: the harm accepted without a rollback, in absolute points — the test is then 'worse by "
        "more than the tolerance' (0 = any significant harm rolls back)"))

    @model_validator(mode="after")
    def _consistent(self) -> Guardrail:
        natural = _NATURAL[self.metric]
        if self.direction != natural:
            raise ValueError(f"guardrail {self.metric}: direction must be {natural!r}, got {self.direction!r}")
        if self.metric in _COUNTS and self.regression >= 1:
            raise ValueError(f"guardrail {self.metric}: regression is a rate difference, give a value below 1 "
                             f"(0.04 = four points), got {self.regression}")
        if self.tolerance and self.metric not in _COUNTS:
            raise ValueError(f"guardrail {self.metric}: tolerance applies to rates only; latency is judged against "
                             f"its regression ({self.regression}) already")
        if self.tolerance >= self.regression:
            raise ValueError(f"guardrail {self.metric}: tolerance ({self.tolerance}) must be below the regression "
                             f"worth catching ({self.regression})")
        return self


class Stage(Frozen):
    name: str = Field(min_length=1)
    share: int = Field(ge=0, le=100, description="challenger's percent of served traffic; 0 = shadow")
    min_requests_per_arm: int = Field(ge=1)
    min_callers_per_arm: int = Field(default=1, ge=1, description=(
        "distinct callers each arm needs before the stage can pass, and each test's own callers (those who gave "
        "feedback, those with ok answers) before that test can (1: no minimum). The tests read each arm's spread "
        "between callers (the design effect); with a handful of callers that spread is barely seen and an arm of "
        "one caller is read as independent requests, the most optimistic reading. Never blocks a FAIL"))
    max_duration_s: float = Field(gt=0)
    guardrails: list[Guardrail] = Field(min_length=1)
    on_inconclusive: Literal["pause", "rollback"] = Field(
        default="pause", description="what to do when still inconclusive at max_duration_s")
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="one-sided error rate of each rate test")
    srm_threshold: float = Field(default=0.001, gt=0, lt=0.1, description=(
        "the sample-ratio check's always-valid p-value (lifecycle.srm, valid at every look) below this is a FAIL"))

    @property
    def shadow(self) -> bool:
        return self.share == 0

    @model_validator(mode="after")
    def _feedback_needs_served_answers(self) -> Stage:
        metrics = [g.metric for g in self.guardrails]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"stage {self.name!r} names a guardrail metric twice: {metrics}")
        if self.shadow and "feedback_success_rate" in metrics:
            raise ValueError(f"stage {self.name!r} is shadow (share 0): its answers are not served, so they get "
                             "no feedback; remove feedback_success_rate from its guardrails")
        return self


class RolloutPlan(Frozen):
    """``configs/rollout.yaml``. ``stage_defaults`` fill any field a stage leaves out."""

    name: str = Field(min_length=1)
    version: int = Field(ge=1, description="bump on every change; audit events name it")
    approval_before_last_stage: bool = Field(default=True, description="a person approves going to 100 %")
    # The cadence belongs to the plan: a plan sized for a demo's traffic looks more often than production's.
    look_interval_s: float = Field(default=30.0, gt=0, description="seconds between two looks at a stage")
    settle_s: float = Field(default=5.0, ge=0, description=(
        "seconds after a split change before the stage's window opens. Requests still routed by the previous "
        "split never count, however long a gateway takes to adopt the new one (the log records each request's "
        "split revision); this keeps the first seconds of a stage out too, and in shadow the last seconds before "
        "each look (the newest requests' shadow copies may not be logged yet)"))
    stages: list[Stage] = Field(min_length=2)

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stage_defaults" in data:
            data = dict(data)
            defaults = data.pop("stage_defaults") or {}
            stages = data.get("stages")
            if not isinstance(defaults, dict) or not isinstance(stages, list):
                raise ValueError("stage_defaults must be a mapping and stages a list of mappings")
            data["stages"] = [{**defaults, **s} if isinstance(s, dict) else s for s in stages]
        return data

    @model_validator(mode="after")
    def _ordered(self) -> RolloutPlan:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        shares = [s.share for s in self.stages]
        if any(s.shadow for s in self.stages[1:]):
            raise ValueError(f"only the first stage may be shadow (share 0), got shares {shares}")
        if any(b <= a for a, b in zip(shares, shares[1:], strict=False)):
            raise ValueError(f"stage shares must strictly increase, got {shares}")
        if shares[-1] != 100:
            raise ValueError(f"the last stage must send 100 % of traffic to the challenger, got {shares[-1]}")
        return self


class StageVerdict(Frozen):
    stage: str
    verdict: Verdict
    action: Action
    findings: list[Finding]
    elapsed_s: float
    srm: SRMCheck | None = None
    tests: dict[str, RateTest] = Field(default_factory=dict)
    mean_tests: dict[str, MeanDifferenceCS] = Field(
        default_factory=dict, description="per mean metric: the CS of challenger - (1 + regression) x champion")

    def reasons(self) -> list[str]:
        return [f"[{f.verdict}] {f.check}: {f.reason}" for f in self.findings]

    @property
    def unadopted_split(self) -> Finding | None:
        """The finding that holds this look because a gateway has not adopted the stage's split, if one does."""
        return _unadopted(self.findings)


_ADOPTION = "split adoption"
_SHED = "shadow copies shed"


def _unadopted(findings: list[Finding]) -> Finding | None:
    return next((f for f in findings if f.check == _ADOPTION and f.verdict is Verdict.INCONCLUSIVE), None)


def _rate_finding(g: Guardrail, stage: Stage, champion: VersionAggregate,
                  challenger: VersionAggregate) -> tuple[Finding, RateTest | None]:
    events, trials = _COUNTS[g.metric]
    (x_a, n_a), (x_b, n_b) = ((getattr(a, events), getattr(a, trials)) for a in (champion, challenger))
    if n_a == 0 or n_b == 0:
        return Finding(check=g.metric, verdict=Verdict.INCONCLUSIVE,
                       reason=f"no data on an arm (champion {n_a}, challenger {n_b}): not a pass"), None
    harmful = "higher" if g.direction == "lower_is_better" else "lower"
    effects = tuple(_design_effect(events, a) for a in (champion, challenger))
    t = msprt_two_proportions(x_a, n_a, x_b, n_b, tau=g.regression, alpha=stage.alpha, harmful=harmful,
                              margin=g.tolerance, design_effects=effects)
    # Past its floor of trials the no-regression test decides a pass; below it, the interval (RateTest.rules_out).
    # A pass ignores the tolerance (it rules out tau); a FAIL is checked first where both sides reject.
    pass_basis = (f"no-regression p {t.pass_p_value:.4f}" if t.past_floor
                  else f"the pass test starts at {t.pass_floor} per arm; until then the interval decides")
    span = (f"{x_b}/{n_b} vs champion {x_a}/{n_a}, diff {t.difference:+.4f}, "
            f"interval [{t.lower:+.4f}, {t.upper:+.4f}], always-valid p {t.p_value:.4f}, {pass_basis}"
            f"{_by_caller_note(t.design_effect, events, champion, challenger)}")
    if t.reject:
        worse = f"worse by more than {g.tolerance}" if g.tolerance else "worse"
        verdict, why = Verdict.FAIL, f"challenger {worse}: p <= alpha {stage.alpha}"
    elif t.rules_out:
        verdict, why = _ruled_out(stage, events, f"a regression of {g.regression}", champion, challenger)
    else:
        verdict, why = Verdict.INCONCLUSIVE, f"a regression of {g.regression} is not yet ruled out"
    return Finding(check=g.metric, verdict=verdict, observed=t.p_value, threshold=stage.alpha,
                   reason=f"{span}; {why}"), t


def _design_effect(events: str, agg: VersionAggregate) -> float:
    """The arm's design effect for the sum ``events`` (``lifecycle.sequential.arm_design_effect``); 1 where the
    aggregate was read without its callers (or predates them: the test then assumes independent requests)."""
    c = (agg.by_caller or {}).get(events)
    return 1.0 if c is None else arm_design_effect(c.events, c.trials, c.variance)


def _by_caller_note(effect: float, events: str, *arms: VersionAggregate) -> str:
    """What the reason says about callers: the design effect where it matters; that an arm's callers are too few
    to see their spread (one caller: its requests are read as independent, the most optimistic reading)."""
    note = f", callers' design effect {effect:.2f}" if effect > 1.005 else ""
    alone = [a.role for a in arms if (c := (a.by_caller or {}).get(events)) is not None and c.callers == 1]
    if alone:
        note += f"; one caller on the {' and '.join(alone)} arm: read as independent requests"
    return note


def _ruled_out(stage: Stage, events: str, harm: str, *arms: VersionAggregate) -> tuple[Verdict, str]:
    """The verdict and reason of a test that rules ``harm`` out: PASS, unless the callers in its own sums
    (those who gave feedback, those with ok answers) are fewer on an arm than the plan's ``min_callers_per_arm``,
    however many called; then INCONCLUSIVE, saying so."""
    counts = [c.callers for a in arms if (c := (a.by_caller or {}).get(events)) is not None]
    need = stage.min_callers_per_arm
    if need > 1 and counts and min(counts) < need:
        return (Verdict.INCONCLUSIVE, f"{harm} is ruled out, but on {min(counts)} callers on the smaller arm: "
                                      f"the plan needs {need} before a pass")
    return Verdict.PASS, f"{harm} is ruled out"


def _latency_variance(agg: VersionAggregate, variance: float) -> float:
    """The ok latencies' variance, or ok x the caller-clustered variance of their mean where that is larger."""
    c = (agg.by_caller or {}).get("latency_sum_ms")
    return variance if c is None or c.variance is None else max(variance, c.variance * agg.ok)


def _mean_finding(g: Guardrail, stage: Stage, champion: VersionAggregate,
                  challenger: VersionAggregate) -> tuple[Finding, MeanDifferenceCS | None]:
    (m_a, v_a, n_a), (m_b, v_b, n_b) = _MEANS[g.metric](champion), _MEANS[g.metric](challenger)
    if m_a is None or v_a is None or m_b is None or v_b is None or min(n_a, n_b) < _MIN_FOR_MEANS or m_a <= 0:
        return Finding(check=g.metric, verdict=Verdict.INCONCLUSIVE,
                       reason=f"needs {_MIN_FOR_MEANS} ok answers with latency sums on each arm (champion {n_a}, "
                              f"challenger {n_b}): not a pass"), None
    # By caller: each arm's variance is raised to what its callers' spread says, where that is more.
    w_a, w_b = _latency_variance(champion, v_a), _latency_variance(challenger, v_b)
    cs = relative_margin_cs(m_a, w_a, n_a, m_b, w_b, n_b, margin=g.regression, alpha=stage.alpha)
    limit = (1 + g.regression) * m_a
    k2 = (1 + g.regression) ** 2  # relative_margin_cs compares with (1 + regression) x the champion's mean
    plain = v_a / n_a * k2 + v_b / n_b
    effect = (w_a / n_a * k2 + w_b / n_b) / plain if plain > 0 else 1.0
    clustering = _by_caller_note(effect, "latency_sum_ms", champion, challenger)
    span = (f"{m_b:.1f} ms vs limit {limit:.1f} ms ({1 + g.regression:.2f}x champion's {m_a:.1f} ms; n {n_b} / "
            f"{n_a}); challenger - limit {cs.difference:+.1f} ms, anytime interval [{cs.lower:+.1f}, {cs.upper:+.1f}], "
            f"no-regression p {cs.pass_p_value:.4f}{clustering}")
    if cs.lower > 0:
        verdict, why = Verdict.FAIL, f"slower than the limit, at confidence {1 - stage.alpha:.0%}"
    elif cs.pass_p_value <= stage.alpha:  # relative_margin_cs always sets it (the span above formats it too)
        verdict, why = _ruled_out(stage, "latency_sum_ms", f"a slowdown beyond {g.regression:.0%}", champion,
                                  challenger)
    else:
        verdict, why = Verdict.INCONCLUSIVE, f"a slowdown beyond {g.regression:.0%} is not yet ruled out"
    return Finding(check=g.metric, verdict=verdict, observed=m_b, threshold=limit, reason=f"{span}; {why}"), cs


def _latency_finding(g: Guardrail, champion: VersionAggregate, challenger: VersionAggregate,
                     enough: bool) -> Finding:
    a, b = champion.latency_p95_ms, challenger.latency_p95_ms
    if not enough or a is None or b is None or a <= 0:
        return Finding(check=g.metric, verdict=Verdict.INCONCLUSIVE,
                       reason="judged once the minimum sample is in on both arms (a p95 of few requests is noise)")
    limit = a * (1 + g.regression)
    ok = b <= limit
    return Finding(check=g.metric, verdict=Verdict.PASS if ok else Verdict.FAIL, observed=b, threshold=limit,
                   reason=f"{b:.1f} ms {'<=' if ok else '>'} {limit:.1f} ms ({1 + g.regression:.2f}x champion's "
                          f"{a:.1f} ms)")


def _answered(agg: VersionAggregate) -> int:
    """Requests the version answered (ok or a model error). An infra error (backend down, timeout, circuit
    open) or a refused input is a request the model never saw: it tells nothing about the model."""
    return agg.requests - agg.infra_errors - agg.input_errors


def _silent(role: str, agg: VersionAggregate) -> Finding | None:
    # Why answers, not requests: an arm whose backend is down still receives (and logs) its requests, all
    # infra errors, so its model error rate is 0 of N — which, without this, passed a plan that does not
    # guard infra_error_rate: a challenger that never answered advanced.
    if agg.requests == 0:
        reason = f"the {role} arm received no requests: a silent arm is never a pass"
    elif _answered(agg) == 0:
        reason = (f"the {role} arm answered none of its {agg.requests} requests ({agg.infra_errors} infra errors): "
                  "a silent arm is never a pass")
    else:
        return None
    return Finding(check=f"{role}: traffic", verdict=Verdict.INCONCLUSIVE, observed=0.0, reason=reason)


def _traffic_findings(stage: Stage, champion: VersionAggregate,
                      challenger: VersionAggregate) -> tuple[list[Finding], SRMCheck | None]:
    findings = [f for f in (_silent("champion", champion), _silent("challenger", challenger)) if f is not None]
    srm = None
    if stage.share < 100:  # at 100 % the champion serves nothing; its aggregate is a reference window
        # Shadow mirrors every request, so the two arms should see equal counts.
        expected = 0.5 if stage.shadow else stage.share / 100
        # The router assigns callers, not requests: checked on distinct callers when the log says them (an arm
        # with none counts 0), since requests come in runs by caller and a few heavy users on one side would
        # otherwise look like a broken split (measured: 500 simulated users gave share 0.057 on a 5 % canary,
        # request-level p 0.00099 under the chi-square of the time — a false mismatch). Requests only for
        # aggregates that did not count callers.
        by_users = champion.users is not None and challenger.users is not None
        a, b = (champion.users, challenger.users) if by_users else (champion.requests, challenger.requests)
        unit = "callers" if by_users else "requests"
        srm = sample_ratio_mismatch(a, b, expected, threshold=stage.srm_threshold)
        seen = "n/a" if srm.observed_share is None else f"{srm.observed_share:.4f}"
        findings.append(Finding(
            check="sample ratio", verdict=Verdict.FAIL if srm.mismatch else Verdict.PASS, observed=srm.p_value,
            threshold=stage.srm_threshold,
            reason=f"challenger share of {unit} {seen} vs planned {expected:.4f} ({a} / {b}), chi2 {srm.chi2:.2f}, "
                   f"always-valid p {srm.p_value:.2g}"))
    least = min(_answered(champion), _answered(challenger))  # answers: the evidence, not the attempts
    enough = least >= stage.min_requests_per_arm
    findings.append(Finding(check="minimum sample", verdict=Verdict.PASS if enough else Verdict.INCONCLUSIVE,
                            observed=float(least), threshold=float(stage.min_requests_per_arm),
                            reason=f"{least} answered requests on the smaller arm, need "
                                   f"{stage.min_requests_per_arm}"))
    if stage.min_callers_per_arm > 1:
        findings.append(_callers_finding(stage, champion, challenger))
    return findings, srm


def _callers_finding(stage: Stage, champion: VersionAggregate, challenger: VersionAggregate) -> Finding:
    """Enough distinct callers on each arm (``Stage.min_callers_per_arm``): INCONCLUSIVE, never FAIL, below it."""
    need = stage.min_callers_per_arm
    if champion.users is None or challenger.users is None:
        return Finding(check="minimum callers", verdict=Verdict.INCONCLUSIVE, threshold=float(need),
                       reason=f"callers were not counted in this window's aggregates; the plan needs {need} "
                              "on each arm: not a pass")
    least = min(champion.users, challenger.users)
    return Finding(check="minimum callers", verdict=Verdict.PASS if least >= need else Verdict.INCONCLUSIVE,
                   observed=float(least), threshold=float(need),
                   reason=f"{least} distinct callers on the smaller arm (champion {champion.users}, challenger "
                          f"{challenger.users}), need {need}")


def _adoption_finding(stage: Stage, champion: VersionAggregate, challenger: VersionAggregate, stale: int,
                      split_revision: int | None) -> Finding:
    """The window's requests that an older traffic split routed (not counted in the arms): a few are a gateway's
    last requests before it adopted the stage's split; more than the stage's own requests is a gateway that has
    not adopted it (yet: loading the candidate can take a while; or ever: one that cannot load it). The stage then
    holds rather than advance on the part of the traffic that is left, says why, and at its maximum duration
    pauses for a person instead of doing what the plan says for a stage that ran out of time on its own evidence
    (a rollback there would blame the candidate for the deployment)."""
    # The stage's own requests: at 100 % the champion's arm is a reference window; in shadow the challenger's rows
    # are copies of the champion's requests.
    counted = challenger.requests if stage.share == 100 else champion.requests + (
        0 if stage.shadow else challenger.requests)
    revision = "its revision" if split_revision is None else f"revision {split_revision}"
    held = stale > counted
    reason = (f"{stale} requests in the window were routed by a traffic split older than the stage's ({revision}), "
              f"against {counted} by it; they are not counted")
    if held:
        reason += ": a gateway has not adopted the stage's split (it does once it has loaded the versions it names)"
    return Finding(check=_ADOPTION, verdict=Verdict.INCONCLUSIVE if held else Verdict.PASS, observed=float(stale),
                   threshold=float(counted), reason=reason)


def _shed_finding(champion: VersionAggregate, shed: int) -> Finding:
    """Requests a gateway served without their shadow copy (its copies in flight at ``shadow_max_in_flight``): the
    arms compare the mirrored requests only, so this is not a finding against the candidate (a pass), but the
    operator sees how much of the traffic the shadow stage's evidence covers, and that the shadow lagged (a shadow
    as fast as the champion seldom reaches the cap)."""
    total = champion.requests + shed
    return Finding(check=_SHED, verdict=Verdict.PASS, observed=float(shed), reason=(
        f"{shed} of {total} requests ({shed / total:.0%}) were served without a shadow copy (a gateway's "
        "shadow_max_in_flight was reached: the shadow answers slower than the traffic comes); the arms compare the "
        f"{champion.requests} mirrored ones"))


def decide_stage(plan_stage: Stage, champion: VersionAggregate, challenger: VersionAggregate,
                 elapsed_s: float, *, stale_requests: int = 0, split_revision: int | None = None,
                 shed_requests: int = 0) -> StageVerdict:
    """Decide one look at a stage. Pure: the same aggregates and elapsed time give the same verdict.

    ``stale_requests``: the window's requests routed by a split older than the stage's (``split_revision``),
    which the arms leave out; when there are any, a "split adoption" finding says how many (see
    :func:`_adoption_finding`). ``shed_requests`` (shadow stages): the window's requests served without a shadow
    copy, which the arms leave out too; when there are any, a "shadow copies shed" finding says how many.
    """
    findings, srm = _traffic_findings(plan_stage, champion, challenger)
    if stale_requests:
        findings.append(_adoption_finding(plan_stage, champion, challenger, stale_requests, split_revision))
    if shed_requests:
        findings.append(_shed_finding(champion, shed_requests))
    enough = min(_answered(champion), _answered(challenger)) >= plan_stage.min_requests_per_arm
    tests: dict[str, RateTest] = {}
    mean_tests: dict[str, MeanDifferenceCS] = {}
    for g in plan_stage.guardrails:
        if g.metric in _COUNTS:
            finding, test = _rate_finding(g, plan_stage, champion, challenger)
            if test is not None:
                tests[g.metric] = test
        elif g.metric in _MEANS:
            finding, cs = _mean_finding(g, plan_stage, champion, challenger)
            if cs is not None:
                mean_tests[g.metric] = cs
        else:
            finding = _latency_finding(g, champion, challenger, enough)
        findings.append(finding)
    verdict = worst(f.verdict for f in findings)
    action: Action = {Verdict.PASS: "advance", Verdict.INCONCLUSIVE: "hold", Verdict.FAIL: "rollback"}[verdict]
    if verdict is Verdict.INCONCLUSIVE and elapsed_s >= plan_stage.max_duration_s:
        # A split that a gateway never adopted is not the candidate's doing: a person decides, whatever the plan
        # says for a stage that ran out of time on its own evidence.
        unadopted = _unadopted(findings) is not None
        timed_out = "pause" if unadopted else plan_stage.on_inconclusive
        verdict = Verdict.FAIL if timed_out == "rollback" else Verdict.INCONCLUSIVE
        action = timed_out
        says = ("a gateway has not adopted the stage's split, so a person decides" if unadopted
                else f"the plan says {timed_out}")
        findings.append(Finding(check="maximum duration", verdict=verdict, observed=elapsed_s,
                                threshold=plan_stage.max_duration_s,
                                reason=f"still inconclusive after {elapsed_s:.0f} s of "
                                       f"{plan_stage.max_duration_s:.0f} s: {says}"))
    return StageVerdict(stage=plan_stage.name, verdict=verdict, action=action, findings=findings,
                        elapsed_s=elapsed_s, srm=srm, tests=tests, mean_tests=mean_tests)
