"""The rollout's rate test when callers, not requests, are the unit: A/A false rollbacks and regressions.

``lifecycle.simulate`` draws every request independently. Live traffic is not like that: the sticky router
sends all of a caller's requests to one arm, a few callers send most requests, and a caller's requests fail
together (its odd prompts, its client). Then an arm's error rate is noisier than ``p (1 - p) / n`` says, and a
test that believes the binomial variance rolls back sound challengers. Here each run draws ``callers`` callers,
sends each to the challenger with probability ``challenger_share`` (the sticky router at that canary share; 0.5
by default), gives each a request volume from a Zipf law (exponent ``volume_skew``) and its own rate from a Beta
law with mean ``p`` and intra-caller correlation ``icc`` (``Beta(p (1 - icc) / icc, (1 - p) (1 - icc) / icc)``;
``icc = 0``: every caller has rate ``p``, requests independent). Requests arrive one by one from callers drawn
by volume; the rate test looks every ``batch`` requests, as the rollout does.

Two variances judge the same draws, with the arithmetic of :func:`lifecycle.sequential.msprt_two_proportions`
(its statistic :func:`lifecycle.sequential.one_sided_log_lr`, no tolerance):

* independent — the pooled binomial variance (what the rollout used until 2026-11-27, and still uses for
  aggregates without caller moments);
* by caller — each arm's part of that variance scaled by the arm's design effect
  (:func:`lifecycle.sequential.arm_design_effect`), what the rollout uses now.

Pure and seeded: the same scenario gives the same report.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from lifecycle.records import Frozen
from lifecycle.sequential import (
    always_valid_p,
    arm_design_effect,
    clustered_ratio_variance,
    one_sided_log_lr,
    pooled_variance,
)
from lifecycle.simulate import RuleResult, rule_result


class CallerScenario(Frozen):
    p_champion: float = Field(default=0.05, gt=0, lt=1, description="mean error rate of the champion's callers")
    p_challenger: float = Field(default=0.09, gt=0, lt=1, description="mean rate of the challenger's callers in "
                                "regression runs")
    callers: int = Field(default=400, ge=4, description="callers per run")
    challenger_share: float = Field(default=0.5, gt=0, lt=1, description="the canary's share: each caller goes to "
                                    "the challenger with this probability")
    volume_skew: float = Field(default=1.0, ge=0, description="Zipf exponent of requests per caller (0: equal)")
    icc: float = Field(default=0.05, ge=0, lt=1, description="intra-caller correlation of the error events")
    runs: int = Field(default=1000, ge=10)
    batch: int = Field(default=50, ge=1, description="requests (both arms) between looks")
    max_requests: int = Field(default=4000, ge=1, description="a run that never rejects stops here")
    tau: float = Field(default=0.04, gt=0, description="the regression worth catching")
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    seed: int = 0

    @model_validator(mode="after")
    def _worse(self) -> CallerScenario:
        if self.p_challenger <= self.p_champion:
            raise ValueError(f"p_challenger ({self.p_challenger}) must be above p_champion ({self.p_champion}): the "
                             "regression runs need a challenger with more errors")
        return self


class CallerReport(Frozen):
    """Each variance's outcomes; requests per arm are the challenger's (arms differ here: callers are split)."""

    scenario: CallerScenario
    independent: RuleResult
    by_caller: RuleResult
    top_caller_share: float = Field(description="the busiest caller's share of all requests")


def _rates(rng: np.random.Generator, p: float, icc: float, size: int) -> np.ndarray:
    if icc == 0:
        return np.full(size, p)
    k = (1 - icc) / icc
    return rng.beta(p * k, (1 - p) * k, size)


def _arm(x_u: np.ndarray, n_u: np.ndarray) -> tuple[float, float, float]:
    """(events, trials, design effect) of one arm from its callers' running counts."""
    x, n = float(x_u.sum()), float(n_u.sum())
    return x, n, arm_design_effect(x, n, clustered_ratio_variance(x_u, n_u))


def _run(rng: np.random.Generator, s: CallerScenario, weights: np.ndarray, p_challenger: float) -> tuple[float, float]:
    """Challenger requests at the first rejection with each variance (NaN: never)."""
    on_b = rng.random(s.callers) < s.challenger_share  # sticky: a caller's requests all go to one arm
    rate = np.where(on_b, _rates(rng, p_challenger, s.icc, s.callers), _rates(rng, s.p_champion, s.icc, s.callers))
    who = rng.choice(s.callers, size=s.max_requests, p=weights)
    events = (rng.random(s.max_requests) < rate[who]).astype(float)
    n_u, x_u = np.zeros(s.callers), np.zeros(s.callers)  # running counts per caller (each is on one arm)
    looks = []  # (challenger requests, difference, binomial V, by-caller V) at each look with both arms seen
    for k in range(0, s.max_requests, s.batch):
        w = who[k:k + s.batch]
        n_u += np.bincount(w, minlength=s.callers)
        x_u += np.bincount(w, weights=events[k:k + s.batch], minlength=s.callers)
        (xa, na, da), (xb, nb, db) = _arm(x_u[~on_b], n_u[~on_b]), _arm(x_u[on_b], n_u[on_b])
        if na and nb:
            looks.append((nb, xb / nb - xa / na, pooled_variance(xa, na, xb, nb),
                          pooled_variance(xa, na, xb, nb, (da, db))))
    if not looks:
        return np.nan, np.nan
    n, d, *variances = np.array(looks).T
    stops = []
    for v in variances:  # the first look whose always-valid p is at most alpha
        rejected = always_valid_p(one_sided_log_lr(d, v, s.tau)) <= s.alpha
        stops.append(n[rejected.argmax()] if rejected.any() else np.nan)
    return stops[0], stops[1]


def simulate_callers(s: CallerScenario) -> CallerReport:
    rng = np.random.default_rng(s.seed)
    weights = 1.0 / np.arange(1, s.callers + 1) ** s.volume_skew
    weights /= weights.sum()
    aa = np.array([_run(rng, s, weights, s.p_champion) for _ in range(s.runs)])
    reg = np.array([_run(rng, s, weights, s.p_challenger) for _ in range(s.runs)])
    return CallerReport(scenario=s, independent=rule_result(aa[:, 0], reg[:, 0]),
                        by_caller=rule_result(aa[:, 1], reg[:, 1]),
                        top_caller_share=float(weights[0]))
