"""The canary simulator: how the rollout's rate test behaves on synthetic traffic, against its baselines.

Each run draws Bernoulli errors for champion and challenger, ``batch`` requests per arm between looks, up
to ``max_per_arm``. Three rules judge the same draws:

* sequential — the one-sided mSPRT of :func:`lifecycle.sequential.msprt_two_proportions`, looked at after
  every batch, rolling back at the first rejection (what the rollout flow does);
* fixed horizon — one z-test after :func:`fixed_horizon_n_per_arm` requests per arm (same alpha and power);
* naive — a one-sided z-test after every batch, the mistake that inflates false alarms (FACTS.md: 28-47 %).

A/A runs give the false rollback rate (both arms at ``p_champion``); regression runs give the detection
rate and the mean requests per arm until rollback (challenger at ``p_challenger``). Pure and seeded: the
same scenario always gives the same report.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, model_validator
from scipy import stats

from lifecycle.records import Frozen
from lifecycle.sequential import fixed_horizon_n_per_arm, msprt_two_proportions


class Scenario(Frozen):
    p_champion: float = Field(default=0.01, gt=0, lt=1, description="error rate of the champion (and A/A arms)")
    p_challenger: float = Field(default=0.05, gt=0, lt=1, description="error rate of the regressed challenger")
    runs: int = Field(default=1000, ge=10)
    batch: int = Field(default=50, ge=1, description="requests per arm between looks")
    max_per_arm: int = Field(default=2000, ge=1, description="a run that never rejects stops here")
    tau: float = Field(default=0.04, gt=0, description="mSPRT mixing scale: the regression worth catching")
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    power: float = Field(default=0.95, gt=0.5, lt=1, description="power the fixed-horizon baseline is sized for")
    seed: int = 0

    @model_validator(mode="after")
    def _worse(self) -> Scenario:
        if self.p_challenger <= self.p_champion:
            raise ValueError(f"p_challenger ({self.p_challenger}) must be above p_champion ({self.p_champion}): "
                             "the regression scenario needs a worse challenger")
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


class SimulationReport(Frozen):
    """``aa`` and ``regression`` describe the sequential rule the rollout uses; the rest are baselines."""

    scenario: Scenario
    aa: AAResult
    regression: RegressionResult
    fixed_horizon: FixedHorizonResult
    naive_repeated_z: RuleResult


def _draws(rng: np.random.Generator, p: float, s: Scenario, looks: int) -> np.ndarray:
    return rng.binomial(s.batch, p, (s.runs, looks)).cumsum(axis=1)


def _z_reject(xa: np.ndarray, xb: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided pooled two-proportion z-test, challenger worse; vectorized over runs."""
    pooled = (xa + xb + 1) / (2 * n + 2)
    se = np.sqrt(pooled * (1 - pooled) * 2 / n)
    return (xb - xa) / n / se > stats.norm.ppf(1 - alpha)


def _sequential_stops(xa: np.ndarray, xb: np.ndarray, s: Scenario) -> list[int | None]:
    stops: list[int | None] = []
    for run in range(s.runs):
        stop = None
        for look in range(xa.shape[1]):
            n = s.batch * (look + 1)
            if msprt_two_proportions(int(xa[run, look]), n, int(xb[run, look]), n, tau=s.tau, alpha=s.alpha).reject:
                stop = n
                break
        stops.append(stop)
    return stops


def _result(aa: list, regression: list) -> RuleResult:
    hits = [n for n in regression if n is not None]
    return RuleResult(false_rollback_rate=sum(n is not None for n in aa) / len(aa),
                      detection_rate=len(hits) / len(regression),
                      mean_requests_per_arm=float(np.mean(hits)) if hits else None)


def _naive_stops(xa: np.ndarray, xb: np.ndarray, s: Scenario) -> list[int | None]:
    rejected = np.stack([_z_reject(xa[:, k], xb[:, k], s.batch * (k + 1), s.alpha) for k in range(xa.shape[1])], 1)
    first = np.where(rejected.any(axis=1), rejected.argmax(axis=1), -1)
    return [None if k < 0 else s.batch * (int(k) + 1) for k in first]


def simulate(s: Scenario) -> SimulationReport:
    rng = np.random.default_rng(s.seed)
    looks = math.ceil(s.max_per_arm / s.batch)
    aa = (_draws(rng, s.p_champion, s, looks), _draws(rng, s.p_champion, s, looks))
    reg = (_draws(rng, s.p_champion, s, looks), _draws(rng, s.p_challenger, s, looks))
    horizon = fixed_horizon_n_per_arm(s.p_champion, s.p_challenger, alpha=s.alpha, power=s.power)
    fixed = {}
    for name, (xa, xb) in (("aa", aa), ("regression", reg)):
        # The one look happens at the first batch boundary at or past the horizon.
        look = min(math.ceil(horizon / s.batch), looks) - 1
        n = s.batch * (look + 1)
        fixed[name] = [n if r else None for r in _z_reject(xa[:, look], xb[:, look], n, s.alpha)]
    sequential = _result(_sequential_stops(*aa, s), _sequential_stops(*reg, s))
    one_look = _result(fixed["aa"], fixed["regression"])
    return SimulationReport(
        scenario=s, aa=AAResult(false_rollback_rate=sequential.false_rollback_rate, runs=s.runs),
        regression=RegressionResult(detection_rate=sequential.detection_rate, runs=s.runs,
                                    mean_requests_per_arm=sequential.mean_requests_per_arm),
        fixed_horizon=FixedHorizonResult(requests_per_arm=horizon, false_rollback_rate=one_look.false_rollback_rate,
                                         detection_rate=one_look.detection_rate),
        naive_repeated_z=_result(_naive_stops(*aa, s), _naive_stops(*reg, s)))
