"""The offline gate: may this challenger be registered as a candidate for rollout?

The challenger and the champion answer the SAME benchmark items in the same run. For each golden set the
gate looks at the paired per-item difference in exact match, ``d_i = challenger_i - champion_i`` (each
-1, 0 or +1), and a paired bootstrap confidence interval of its mean (the accuracy difference):

* ``non_inferior`` rule (the "before" set by default): PASS only if the interval's lower bound is above
  ``-margin``; FAIL if its upper bound is below ``-margin`` (clearly worse); otherwise INCONCLUSIVE.
* ``superior`` rule (the "drifted" set by default): PASS only if the lower bound is above ``+margin``;
  FAIL if the upper bound is at or below ``+margin`` (no gain the data can see); otherwise INCONCLUSIVE.

Guardrails are checked on every golden set the policy has a rule for: the challenger's malformed-output
rate (answers outside the task's allowed set) within an absolute budget and not much above the
champion's, and its p95 latency within a ratio of the champion's. Fewer items than ``min_items`` is
INCONCLUSIVE, never a pass.

Latency is measured per batch (every row of a batch carries the batch's wall time) and only on the batches both
versions answered back to back in this run (``evaluation.benchmark``: an item not timed there has
``latency_ms`` 0). With fewer than ``min_latency_batches`` such paired batches the p95 is the slower of a
couple of timings, and one burst of load on a shared machine during the challenger's batch would exceed the
budget: the latency finding is then INCONCLUSIVE, and it is advisory — listed, but it does not hold the
decision, like the drift monitor's feedback check without enough feedback. A candidate's latency is judged
again on live traffic at every rollout stage (``lifecycle.rollout_plan``), with anytime-valid statistics; the
offline budget is there to stop a clear regression early, and too little evidence stops nothing. The benchmark
times at least that many batches where the golden set has them, so the default flow gets a decided finding.

The decision is the worst of the other findings; only PASS registers a candidate.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from lifecycle.records import EvalReport, Frozen
from lifecycle.verdict import Finding, Verdict, worst

#: Batches timed for both versions below which the latency budget decides nothing (``GatePolicy.min_latency_batches``);
#: the benchmark times at least this many where the golden set has them (``evaluation.benchmark.run_benchmark``).
#: Why 5: the demo's golden sets (500 and 1,000 items, batches of 64) reach it with 5 of their 8 and 16 batches.
MIN_LATENCY_BATCHES = 5


class Interval(Frozen):
    mean: float
    lower: float
    upper: float
    confidence: float
    n: int


def paired_bootstrap(
    champion_correct: np.ndarray,
    challenger_correct: np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``mean(challenger - champion)`` over paired items.

    Items are resampled with replacement as pairs, so what the two versions share (easy and hard items)
    cancels out and the interval is much narrower than two independent accuracies would give.
    Assumes items are exchangeable draws from the traffic the golden set stands for. Two-sided: with
    ``confidence=0.95`` the lower bound is the 2.5th percentile of the resampled means.

    Worked examples (seed 0, 2000 resamples) — the rows of ``tests/unit/lifecycle/test_gate.py``:

    Items are laid out so the champion is right on the first half; the challenger agrees except where
    it gains (items the champion missed) or loses (items the champion got):

    * 400 items, challenger gains 40 and loses none:
      mean +0.100, interval [+0.0725, +0.1300].
    * 400 items, challenger gains 20 and loses 20: mean 0.000, interval [-0.0325, +0.0300].
    * 200 items, challenger loses 30 and gains 2: mean -0.140, interval [-0.1950, -0.0900].
    """
    champ = np.asarray(champion_correct, dtype=np.float64)
    chall = np.asarray(challenger_correct, dtype=np.float64)
    if champ.shape != chall.shape or champ.ndim != 1:
        raise ValueError(f"paired bootstrap needs two equal 1-D arrays, got {champ.shape} and {chall.shape}")
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    n = champ.size
    if n == 0:
        raise ValueError("paired bootstrap needs at least one item")
    diff = chall - champ
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, n, size=(n_resamples, n))].mean(axis=1)
    alpha = 1 - confidence
    lower, upper = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(mean=float(diff.mean()), lower=float(lower), upper=float(upper), confidence=confidence, n=n)


class BenchmarkRule(Frozen):
    benchmark: str = Field(description="golden set name, e.g. 'golden-before'")
    kind: Literal["non_inferior", "superior"]
    margin: float = Field(
        ge=0, le=1, description="non_inferior: worst tolerated loss; superior: least gain worth shipping"
    )


class GatePolicy(Frozen):
    """Thresholds of the offline gate, loaded from ``configs/gate.yaml``."""

    rules: list[BenchmarkRule] = Field(min_length=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    n_resamples: int = Field(default=2000, ge=200)
    seed: int = 0
    min_items: int = Field(default=50, ge=1, description="fewer paired items than this is inconclusive")
    max_malformed_rate: float = Field(default=0.05, ge=0, le=1)
    max_malformed_increase: float = Field(default=0.02, ge=0, le=1)
    # Why 1.5: an unmerged LoRA adds 16-35 % per token on CPU (FACTS.md); more than half again is a real cost.
    max_latency_p95_ratio: float = Field(default=1.5, ge=1)
    min_latency_batches: int = Field(
        default=MIN_LATENCY_BATCHES, ge=1,
        description="fewer batches timed for both versions in the run than this: the latency finding is "
                    "inconclusive and advisory (module docstring)")

    @model_validator(mode="after")
    def _unique_benchmarks(self) -> GatePolicy:
        names = [r.benchmark for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"gate policy names a benchmark twice: {names}; give each golden set one rule")
        return self


class GateDecision(Frozen):
    verdict: Verdict
    findings: list[Finding]
    intervals: dict[str, Interval]
    policy: GatePolicy

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def reasons(self) -> list[str]:
        return [f"[{f.verdict}] {f.check}: {f.reason}" for f in self.findings]


def _paired_arrays(champion: EvalReport, challenger: EvalReport) -> tuple[np.ndarray, np.ndarray]:
    champ = {i.item_id: i.correct for i in champion.items}
    chall = {i.item_id: i.correct for i in challenger.items}
    if champ.keys() != chall.keys():
        missing = sorted(champ.keys() ^ chall.keys())[:5]
        raise ValueError(
            f"benchmark {champion.benchmark!r}: champion and challenger were scored on different items "
            f"(e.g. {missing}); score both on the same golden set in one run"
        )
    ids = sorted(champ)
    return np.array([champ[i] for i in ids]), np.array([chall[i] for i in ids])


def _rule_finding(rule: BenchmarkRule, ci: Interval) -> Finding:
    check = f"{rule.benchmark}: {rule.kind.replace('_', '-')}"
    span = f"diff {ci.mean:+.3f}, {ci.confidence:.0%} CI [{ci.lower:+.3f}, {ci.upper:+.3f}] over {ci.n} items"
    threshold = -rule.margin if rule.kind == "non_inferior" else rule.margin
    if ci.lower > threshold:
        verdict, why = Verdict.PASS, f"lower bound {ci.lower:+.3f} > {threshold:+.3f}"
    elif (rule.kind == "non_inferior" and ci.upper < threshold) or (
        rule.kind == "superior" and ci.upper <= threshold
    ):
        op = "<" if rule.kind == "non_inferior" else "<="
        verdict, why = Verdict.FAIL, f"upper bound {ci.upper:+.3f} {op} {threshold:+.3f}"
    else:
        verdict, why = Verdict.INCONCLUSIVE, f"interval straddles {threshold:+.3f}"
    return Finding(check=check, verdict=verdict, observed=ci.lower, threshold=threshold, reason=f"{span}; {why}")


def _budget(check: str, observed: float, limit: float, unit: str, context: str) -> Finding:
    """A guardrail: PASS when ``observed <= limit``, else FAIL."""
    ok = observed <= limit
    digits = 1 if unit else 3
    return Finding(check=check, verdict=Verdict.PASS if ok else Verdict.FAIL, observed=observed, threshold=limit,
                   reason=f"{observed:.{digits}f}{unit} {'<=' if ok else '>'} {limit:.{digits}f}{unit} ({context})")


def timed_batches(champion: EvalReport, challenger: EvalReport) -> int:
    """How many batches both versions were timed on in their run: the distinct batch timings (every row of a batch
    carries the batch's wall time) among the items both have a timing for (``latency_ms`` above 0), the fewer of
    the two versions' counts."""
    champ = {i.item_id: i.latency_ms for i in champion.items}
    pairs = [(champ[i.item_id], i.latency_ms) for i in challenger.items
             if i.latency_ms > 0 and champ.get(i.item_id, 0.0) > 0]
    return min(len({c for c, _ in pairs}), len({h for _, h in pairs}))


def _latency_finding(champion: EvalReport, challenger: EvalReport, policy: GatePolicy) -> Finding:
    """The p95 budget; INCONCLUSIVE (advisory, module docstring) on fewer than ``min_latency_batches`` paired
    batches."""
    check = f"{challenger.benchmark}: latency p95"
    limit = champion.latency_p95_ms * policy.max_latency_p95_ratio
    batches = timed_batches(champion, challenger)
    context = f"{policy.max_latency_p95_ratio}x champion's {champion.latency_p95_ms:.1f} ms, {batches} paired batches"
    if batches < policy.min_latency_batches:
        return Finding(check=check, verdict=Verdict.INCONCLUSIVE, observed=challenger.latency_p95_ms, threshold=limit,
                       reason=f"{challenger.latency_p95_ms:.1f} ms against {limit:.1f} ms ({context}): only {batches} "
                              f"batches timed for both versions, need {policy.min_latency_batches}; advisory, "
                              "judged again on live traffic in the rollout")
    return _budget(check, challenger.latency_p95_ms, limit, " ms", context)


def _guardrail_findings(champion: EvalReport, challenger: EvalReport, policy: GatePolicy) -> list[Finding]:
    name = challenger.benchmark
    rate_limit = min(policy.max_malformed_rate, champion.malformed_rate + policy.max_malformed_increase)
    return [
        _budget(f"{name}: malformed-output rate", challenger.malformed_rate, rate_limit, "",
                f"champion {champion.malformed_rate:.3f}"),
        _latency_finding(champion, challenger, policy),
    ]


def advisory(finding: Finding) -> bool:
    """A finding listed but not folded into the decision: the latency budget short of evidence (module docstring)."""
    return finding.check.endswith(": latency p95") and finding.verdict is Verdict.INCONCLUSIVE


def evaluate_gate(
    champion: list[EvalReport], challenger: list[EvalReport], policy: GatePolicy
) -> GateDecision:
    """Decide whether ``challenger`` may become a candidate. Pure: same inputs, same decision."""
    by_name_champ = {r.benchmark: r for r in champion}
    by_name_chall = {r.benchmark: r for r in challenger}
    findings: list[Finding] = []
    intervals: dict[str, Interval] = {}
    for rule in policy.rules:
        if rule.benchmark not in by_name_champ or rule.benchmark not in by_name_chall:
            findings.append(Finding(check=f"{rule.benchmark}: present", verdict=Verdict.FAIL,
                                    reason="the policy requires this golden set but it was not scored"))
            continue
        champ_r, chall_r = by_name_champ[rule.benchmark], by_name_chall[rule.benchmark]
        champ_arr, chall_arr = _paired_arrays(champ_r, chall_r)
        if champ_arr.size < policy.min_items:  # checked before the bootstrap, which needs at least one item
            findings.append(Finding(check=f"{rule.benchmark}: paired items", verdict=Verdict.INCONCLUSIVE,
                                    observed=float(champ_arr.size), threshold=policy.min_items,
                                    reason=f"only {champ_arr.size} paired items, need {policy.min_items}"))
            continue
        ci = paired_bootstrap(champ_arr, chall_arr, confidence=policy.confidence,
                              n_resamples=policy.n_resamples, seed=policy.seed)
        intervals[rule.benchmark] = ci
        findings.append(_rule_finding(rule, ci))
        findings.extend(_guardrail_findings(champ_r, chall_r, policy))
    return GateDecision(verdict=worst(f.verdict for f in findings if not advisory(f)), findings=findings,
                        intervals=intervals, policy=policy)
