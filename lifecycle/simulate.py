"""The canary simulator: how the rollout's rate test behaves on synthetic traffic, against its baselines.

Each run draws one Bernoulli event per request for champion and challenger (``max_per_arm`` requests per
arm, more where a baseline's plan needs more): an error (``harmful="higher"``, e.g. the model error rate) or
a success (``harmful="lower"``, e.g. feedback success 0.85 -> 0.80). Six rules judge the same draws:

* sequential — the one-sided mSPRT of :func:`lifecycle.sequential.msprt_two_proportions` (its very statistic,
  :func:`lifecycle.sequential.one_sided_log_lr`, no tolerance), looked at after every ``batch`` requests per
  arm, rolling back at the first rejection (what the rollout flow does);
* previous mSPRT — the same looks with the folded ``N(0, tau^2)`` mixing law the rollout used until
  2026-11-27 (:func:`lifecycle.sequential.folded_normal_log_lr`);
* fixed horizon — one pooled z-test at exactly :func:`fixed_horizon_n_per_arm` requests per arm;
* group sequential, O'Brien-Fleming and Pocock type — ``looks`` planned z-tests at the design's exact look
  sizes (:func:`lifecycle.group_sequential.group_sequential_design`, same alpha and power);
* naive — a one-sided z-test after every batch, the mistake that inflates false alarms (FACTS.md: 28-47 %).

The pass side is simulated on the same draws, on its own (a run that would roll back first is still followed):
the rollout's no-regression test (:func:`lifecycle.sequential.no_regression_log_lr` from its floor of trials,
as :attr:`lifecycle.sequential.RateTest.rules_out`) and the pass rule it replaced on 2026-11-28, the symmetric
interval's upper bound below ``tau``. On A/A runs a pass is right (the sooner the better); on regression runs
where the challenger is worse by ``tau`` or more (the default scenario sits exactly at ``tau``, the boundary of
the pass test's null, its hardest case) a pass is an error.

The baselines look exactly where their plan says, a best case for them: the rollout flow looks whenever
a batch arrives, at irregular times, which only the mSPRT allows. A/A runs give the false rollback rate
(both arms at ``p_champion``); regression runs give the detection rate and the mean requests per arm
until rollback, over the runs rolled back (challenger at ``p_challenger``). Pure and seeded: the same
scenario gives the same report.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from pydantic import Field, model_validator
from scipy import stats

from lifecycle.group_sequential import Spending, fixed_horizon_n_per_arm, group_sequential_design
from lifecycle.records import Frozen
from lifecycle.sequential import (
    PASS_MIN_EVENTS,
    Harmful,
    always_valid_p,
    folded_normal_log_lr,
    mixture_radius,
    no_regression_log_lr,
    one_sided_log_lr,
    pass_floor,
    pass_rule,
    pooled_variance,
    rate_test_variances,
)


class Scenario(Frozen):
    p_champion: float = Field(default=0.01, gt=0, lt=1, description="rate of the champion (and A/A arms)")
    p_challenger: float = Field(default=0.05, gt=0, lt=1, description="rate of the regressed challenger")
    harmful: Harmful = Field(default="higher", description="higher: the rate is an error rate; lower: a success "
                             "rate, and the regressed challenger's is below the champion's")
    runs: int = Field(default=1000, ge=10)
    batch: int = Field(default=50, ge=1, description="requests per arm between looks")
    max_per_arm: int = Field(default=2000, ge=1, description="a run that never rejects stops here")
    tau: float = Field(default=0.04, gt=0, description="the regression worth catching (a rate difference): "
                       "the centre of the mSPRT's mixing law, and the scale of the previous one")
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    power: float = Field(default=0.95, gt=0.5, lt=1, description="power the fixed and group-sequential "
                         "baselines are sized for")
    # Why at most 20: the design's numerical integration grows about as K^3 (K = 5: 0.5 s, K = 20: 8 s).
    looks: int = Field(default=5, ge=1, le=20, description="planned looks of the group-sequential baselines")
    design_p_challenger: float | None = Field(
        default=None, gt=0, lt=1, description="the challenger rate the fixed and group-sequential baselines are "
        "sized for; None: p_challenger (sized for the truth, their best case)")
    pass_min_events: int = Field(default=PASS_MIN_EVENTS, ge=0, description="the pass test's floor in expected "
                                 "events at the null's boundary (lifecycle.sequential.pass_floor); 0: no floor")
    seed: int = 0

    @property
    def designed_for(self) -> float:
        return self.p_challenger if self.design_p_challenger is None else self.design_p_challenger

    @property
    def sign(self) -> int:
        """+1 where a higher rate is harmful, -1 where a lower one is: ``sign * (p_b - p_a) > 0`` is harm."""
        return 1 if self.harmful == "higher" else -1

    @model_validator(mode="after")
    def _worse(self) -> Scenario:
        if self.batch > self.max_per_arm:
            raise ValueError(f"batch ({self.batch}) must not exceed max_per_arm ({self.max_per_arm}): a run would stop "
                             "before its first look, and every rule would read as never deciding")
        side = "above" if self.harmful == "higher" else "below"
        if self.sign * (self.p_challenger - self.p_champion) <= 0:
            raise ValueError(f"p_challenger ({self.p_challenger}) must be {side} p_champion ({self.p_champion}): "
                             f"the regression scenario needs a worse challenger (harmful={self.harmful})")
        if self.sign * (self.designed_for - self.p_champion) <= 0:
            raise ValueError(f"design_p_challenger ({self.design_p_challenger}) must be {side} p_champion "
                             f"({self.p_champion}): the baselines are sized for a regression")
        return self


class RuleResult(Frozen):
    false_rollback_rate: float = Field(description="share of A/A runs rolled back")
    detection_rate: float = Field(description="share of regression runs rolled back")
    mean_requests_per_arm: float | None = Field(description="mean requests per arm at rollback (regression runs)")


class AAResult(Frozen):
    false_rollback_rate: float
    runs: int


class RegressionResult(Frozen):
    detection_rate: float
    mean_requests_per_arm: float | None
    runs: int


class FixedHorizonResult(Frozen):
    requests_per_arm: int = Field(description="the one-look sample size for the scenario's alpha and power")
    false_rollback_rate: float
    detection_rate: float


class GroupSequentialResult(RuleResult):
    spending: Spending
    looks: int
    requests_per_look: list[int]
    z_boundaries: list[float]
    max_requests_per_arm: int
    inflation_factor: float
    design_expected_requests_per_arm: float = Field(
        description="normal-approximation expected requests per arm under the regression, all runs counted")


class PassResult(Frozen):
    aa_pass_rate: float = Field(description="share of A/A runs passed by max_per_arm")
    mean_requests_per_arm: float | None = Field(description="mean requests per arm at the pass, A/A runs passed")
    regression_pass_rate: float = Field(description="share of regression runs passed: false passes where the "
                                        "challenger is worse by tau or more")


class SimulationReport(Frozen):
    """``aa`` and ``regression`` describe the sequential rule the rollout uses; the rest are baselines."""

    scenario: Scenario
    aa: AAResult
    regression: RegressionResult
    fixed_horizon: FixedHorizonResult
    group_sequential: GroupSequentialResult = Field(description="O'Brien-Fleming-type spending")
    group_sequential_pocock: GroupSequentialResult = Field(description="Pocock-type spending")
    naive_repeated_z: RuleResult
    previous_msprt: RuleResult = Field(description="the folded N(0, tau^2) mixing law, same looks as the rollout's")
    passing: PassResult = Field(description="the rollout's pass rule: the no-regression test from its floor")
    previous_passing: PassResult = Field(description="the pass rule until 2026-11-28: the interval's upper bound "
                                         "below tau")


def _paths(rng: np.random.Generator, p: float, runs: int, length: int) -> np.ndarray:
    """Cumulative events: ``[run, n - 1]`` is the number of events among an arm's first ``n`` requests."""
    return (rng.random((runs, length)) < p).cumsum(axis=1, dtype=np.int32)


def _z(xa: np.ndarray, xb: np.ndarray, n: int, sign: int) -> np.ndarray:
    """Pooled (Laplace-smoothed) two-proportion z of the harm, ``sign`` (challenger - champion); vectorized."""
    return sign * (xb - xa) / n / np.sqrt(pooled_variance(xa, n, xb, n))


def _first_stop(rejected: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Requests per arm at each run's first rejection (columns are looks at ``sizes``); NaN: never."""
    stops = np.asarray(sizes, dtype=float)[rejected.argmax(axis=1)]
    return np.where(rejected.any(axis=1), stops, np.nan)


def rule_result(aa: np.ndarray, regression: np.ndarray) -> RuleResult:
    """A rule's A/A and regression outcomes from the requests at each run's rollback (NaN: never)."""
    hits = regression[~np.isnan(regression)]
    return RuleResult(false_rollback_rate=float(np.mean(~np.isnan(aa))), detection_rate=len(hits) / len(regression),
                      mean_requests_per_arm=float(hits.mean()) if len(hits) else None)


def _msprt(xa: np.ndarray, xb: np.ndarray, sizes: list[int], s: Scenario,
           statistic: Callable[..., np.ndarray] = one_sided_log_lr) -> np.ndarray:
    # The very arithmetic of msprt_two_proportions (no tolerance), on all runs of a look at once.
    rejected = [always_valid_p(statistic(s.sign * (xb[:, n - 1] - xa[:, n - 1]) / n,
                                         pooled_variance(xa[:, n - 1], n, xb[:, n - 1], n), s.tau)) <= s.alpha
                for n in sizes]
    return _first_stop(np.stack(rejected, axis=1), sizes)


def _passes(xa: np.ndarray, xb: np.ndarray, sizes: list[int], s: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """Requests per arm at each run's first pass (NaN: never), by the rollout's rule (``RateTest.rules_out``:
    :func:`lifecycle.sequential.pass_rule`) and by the previous one (the interval's harmful bound below ``tau``),
    no tolerance, all runs of a look at once."""
    rule, previous = [], []
    for n in sizes:
        a, b = xa[:, n - 1], xb[:, n - 1]
        harm = s.sign * (b - a) / n
        _, v = rate_test_variances(a, n, b, n)
        bound = harm + mixture_radius(v, s.tau, s.alpha)
        previous.append(bound < s.tau)
        rule.append(pass_rule(always_valid_p(no_regression_log_lr(harm, v, s.tau)),
                              n >= pass_floor((a + 1) / (n + 2), s.tau, s.harmful, s.pass_min_events),
                              bound, s.tau, s.alpha))
    return _first_stop(np.stack(rule, axis=1), sizes), _first_stop(np.stack(previous, axis=1), sizes)


def _pass_result(aa: np.ndarray, regression: np.ndarray) -> PassResult:
    """A pass rule's outcomes: :func:`rule_result` with the roles turned round (a pass is right on A/A runs)."""
    r = rule_result(regression, aa)
    return PassResult(aa_pass_rate=r.detection_rate, mean_requests_per_arm=r.mean_requests_per_arm,
                      regression_pass_rate=r.false_rollback_rate)


def _z_rule(xa: np.ndarray, xb: np.ndarray, sizes: list[int], bounds: list[float], sign: int) -> np.ndarray:
    rejected = [_z(xa[:, n - 1], xb[:, n - 1], n, sign) >= b for n, b in zip(sizes, bounds, strict=True)]
    return _first_stop(np.stack(rejected, axis=1), sizes)


def _group_sequential(aa, reg, s: Scenario, horizon: int, spending: Spending) -> GroupSequentialResult:
    d = group_sequential_design(horizon, s.looks, alpha=s.alpha, power=s.power, spending=spending)
    rule = rule_result(_z_rule(*aa, d.n_per_look, d.z_boundaries, s.sign),
                   _z_rule(*reg, d.n_per_look, d.z_boundaries, s.sign))
    return GroupSequentialResult(**rule.model_dump(), spending=spending, looks=s.looks,
                                 requests_per_look=d.n_per_look, z_boundaries=d.z_boundaries,
                                 max_requests_per_arm=d.max_n_per_arm, inflation_factor=d.inflation_factor,
                                 design_expected_requests_per_arm=d.expected_n_h1)


def simulate(s: Scenario) -> SimulationReport:
    horizon = fixed_horizon_n_per_arm(s.p_champion, s.designed_for, alpha=s.alpha, power=s.power)
    designs = [group_sequential_design(horizon, s.looks, alpha=s.alpha, power=s.power, spending=sp)
               for sp in ("obrien_fleming", "pocock")]
    looks = [s.batch * k for k in range(1, math.ceil(s.max_per_arm / s.batch) + 1)]
    length = max(looks[-1], horizon, *(d.max_n_per_arm for d in designs))
    rng = np.random.default_rng(s.seed)
    aa = (_paths(rng, s.p_champion, s.runs, length), _paths(rng, s.p_champion, s.runs, length))
    reg = (_paths(rng, s.p_champion, s.runs, length), _paths(rng, s.p_challenger, s.runs, length))
    sequential = rule_result(_msprt(*aa, looks, s), _msprt(*reg, looks, s))
    previous = rule_result(_msprt(*aa, looks, s, folded_normal_log_lr), _msprt(*reg, looks, s, folded_normal_log_lr))
    z_one_look = [float(stats.norm.isf(s.alpha))]
    one_look = rule_result(_z_rule(*aa, [horizon], z_one_look, s.sign), _z_rule(*reg, [horizon], z_one_look, s.sign))
    naive_bounds = z_one_look * len(looks)
    aa_passes, reg_passes = _passes(*aa, looks, s), _passes(*reg, looks, s)
    return SimulationReport(
        scenario=s, aa=AAResult(false_rollback_rate=sequential.false_rollback_rate, runs=s.runs),
        regression=RegressionResult(detection_rate=sequential.detection_rate, runs=s.runs,
                                    mean_requests_per_arm=sequential.mean_requests_per_arm),
        fixed_horizon=FixedHorizonResult(requests_per_arm=horizon, false_rollback_rate=one_look.false_rollback_rate,
                                         detection_rate=one_look.detection_rate),
        group_sequential=_group_sequential(aa, reg, s, horizon, "obrien_fleming"),
        group_sequential_pocock=_group_sequential(aa, reg, s, horizon, "pocock"),
        naive_repeated_z=rule_result(_z_rule(*aa, looks, naive_bounds, s.sign),
                                     _z_rule(*reg, looks, naive_bounds, s.sign)),
        previous_msprt=previous,
        passing=_pass_result(aa_passes[0], reg_passes[0]), previous_passing=_pass_result(aa_passes[1], reg_passes[1]))
