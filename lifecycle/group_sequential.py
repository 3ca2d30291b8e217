"""Group-sequential design for the one-sided two-proportion test: K planned looks, alpha spent by a function.

The baseline the rollout's mSPRT is measured against (``lifecycle.simulate``; conclusion in
``lifecycle.sequential``). At look ``k`` (information fraction ``t_k = n_k / n_max``) the pooled z-statistic
of ``challenger rate - champion rate`` rejects "challenger no worse" when ``Z_k >= b_k``. The boundaries
spend the one-sided ``alpha`` by a Lan-DeMets function (Lan & DeMets 1983; gsDesign ``sfLDOF``/``sfLDPocock``):

* O'Brien-Fleming type: ``alpha(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t))`` — almost nothing early, nearly
  the fixed-horizon boundary at the end;
* Pocock type: ``alpha(t) = alpha ln(1 + (e - 1) t)`` — about even spending, a flatter, higher boundary.

``b_k`` solves ``P_0(Z_1 < b_1, ..., Z_{k-1} < b_{k-1}, Z_k >= b_k) = alpha(t_k) - alpha(t_{k-1})``.
Assumption: the canonical joint distribution (Jennison & Turnbull 2000, ch. 3): ``S_k = Z_k sqrt(t_k)`` is a
Brownian motion with drift ``eta`` observed at ``t_k``, which holds for the two-proportion z-statistic in
large samples (independent requests, fixed shares). No futility bound: a run that never crosses stops at
``n_max`` and the challenger is "not shown worse".

Numerics: recursive numerical integration (Armitage, McPherson & Rowe 1969; Jennison & Turnbull ch. 19),
not Monte Carlo. The density of ``S_k`` on the continuation region is carried on a Simpson grid of spacing
``sqrt(min dt) / 24`` from ``eta t_k - 10 sqrt(t_k)`` (below which the mass is < 1e-23) up to the boundary; each
``b_k`` is found by Brent's method to 1e-10. Against scipy's Genz integration of the multivariate normal the
crossing probabilities agree to < 1e-5 (``test_group_sequential.py``), and the O'Brien-Fleming boundaries
for K = 5, one-sided alpha 0.025 reproduce gsDesign's 4.877, 3.357, 2.680, 2.290, 2.031 to 1e-3.

The maximum sample is the fixed-horizon sample inflated by the design's inflation factor
``R = ((eta_power) / (z_{1-alpha} + z_{power}))^2``, where ``eta_power`` is the drift at ``t = 1`` giving
the required power. Worked numbers (one-sided alpha 0.05, power 0.95, 1 % -> 5 %, fixed horizon 391/arm):

* K = 5, O'Brien-Fleming type: ``R = 1.0307``, n_max 404, looks at 81, 162, 243, 324, 404 per arm,
  z boundaries 4.224, 2.884, 2.295, 1.959, 1.740; expected requests under 1 % -> 5 %: 267 per arm.
* K = 5, Pocock type: ``R = 1.1845``, n_max 464, looks at 93, 186, 279, 372, 464, z boundaries 2.175,
  2.143, 2.113, 2.089, 2.072; expected requests under 1 % -> 5 %: 229 per arm.

Equal arms run to (nearly) ``n_max``: 401 and 453 per arm expected. These are normal-approximation figures;
``lifecycle.simulate`` measures the same rules on Bernoulli traffic.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import optimize, stats

from lifecycle.records import Frozen

Spending = Literal["obrien_fleming", "pocock"]


def spent_alpha(t: float, alpha: float, spending: Spending) -> float:
    """Cumulative one-sided alpha spent by information fraction ``t`` in (0, 1]; ``alpha`` at ``t = 1``.

    O'Brien-Fleming type, alpha 0.05: t = 0.2 -> 0.0000117, t = 0.5 -> 0.00557, t = 1 -> 0.05.
    Pocock type, alpha 0.05: t = 0.2 -> 0.01477, t = 0.5 -> 0.03100, t = 1 -> 0.05.
    """
    if not 0 < t <= 1 or not 0 < alpha < 1:
        raise ValueError(f"need 0 < t <= 1 and 0 < alpha < 1, got t={t}, alpha={alpha}")
    if spending == "obrien_fleming":
        return float(2 * stats.norm.sf(stats.norm.isf(alpha / 2) / math.sqrt(t)))
    return alpha * math.log(1 + (math.e - 1) * t)


class _Continuation:
    """The sub-density of ``S`` at the last look on the region where no boundary was crossed, as Simpson-
    weighted values ``g_j = w_j f(x_j)`` at nodes ``x_j``. Before the first look: a unit mass at ``S = 0``."""

    def __init__(self, x: np.ndarray, g: np.ndarray, t: float) -> None:
        self.x, self.g, self.t = x, g, t

    def crossing(self, c: float, t: float, drift: float) -> float:
        """``P(not crossed before, S(t) >= c)``."""
        dt = t - self.t
        return float(self.g @ stats.norm.sf((c - self.x - drift * dt) / math.sqrt(dt)))

    def advance(self, c: float, t: float, drift: float, step: float) -> _Continuation:
        dt = t - self.t
        lo = drift * t - 10 * math.sqrt(t)
        if c <= lo:  # everything crossed (numerically): nothing continues
            return _Continuation(np.zeros(1), np.zeros(1), t)
        m = max(2, math.ceil((c - lo) / step / 2) * 2)  # Simpson needs an even number of intervals
        y = np.linspace(lo, c, m + 1)
        w = np.full(m + 1, 2.0)
        w[1::2], w[0], w[-1] = 4.0, 1.0, 1.0
        w *= (c - lo) / m / 3
        sd = math.sqrt(dt)
        density = stats.norm.pdf((y[:, None] - self.x[None, :] - drift * dt) / sd) @ self.g / sd
        return _Continuation(y, w * density, t)


def _start() -> _Continuation:
    return _Continuation(np.zeros(1), np.ones(1), 0.0)


def _step(fractions: tuple[float, ...]) -> float:
    return math.sqrt(min(np.diff((0.0, *fractions)))) / 24


def boundaries(fractions: tuple[float, ...], alpha: float, spending: Spending) -> tuple[float, ...]:
    """z boundaries ``b_k`` at increasing information fractions ending at 1 (see the module docstring)."""
    if not fractions or fractions[-1] != 1 or any(b <= a for a, b in zip((0.0, *fractions), fractions, strict=False)):
        raise ValueError(f"information fractions must increase strictly to 1, got {fractions}")
    state, spent, out, step = _start(), 0.0, [], _step(fractions)
    for t in fractions:
        target = spent_alpha(t, alpha, spending) - spent
        spent += target
        b = optimize.brentq(lambda z, t=t, s=state, a=target: s.crossing(z * math.sqrt(t), t, 0.0) - a,
                            -20.0, 40.0, xtol=1e-10)
        out.append(b)
        state = state.advance(b * math.sqrt(t), t, 0.0, step)
    return tuple(out)


def crossing_probabilities(fractions: tuple[float, ...], z_bounds: tuple[float, ...],
                           drift: float) -> tuple[float, ...]:
    """``P(first crossing at look k)`` when ``S(t)`` has drift ``drift`` (``E[Z]`` at ``t = 1``)."""
    state, out, step = _start(), [], _step(fractions)
    for t, b in zip(fractions, z_bounds, strict=True):
        out.append(state.crossing(b * math.sqrt(t), t, drift))
        state = state.advance(b * math.sqrt(t), t, drift, step)
    return tuple(out)


def expected_fraction(fractions: tuple[float, ...], z_bounds: tuple[float, ...], drift: float) -> float:
    """Expected sample as a fraction of the maximum: stop at the first crossing, else at the last look."""
    cross = crossing_probabilities(fractions, z_bounds, drift)[:-1]
    return float(sum(t * p for t, p in zip(fractions, cross, strict=False)) + (1 - sum(cross)))


def _drift_for_power(fractions: tuple[float, ...], z_bounds: tuple[float, ...], power: float) -> float:
    return optimize.brentq(lambda eta: sum(crossing_probabilities(fractions, z_bounds, eta)) - power,
                           0.0, 20.0, xtol=1e-10)


class GroupSequentialDesign(Frozen):
    """A one-sided group-sequential design with its maximum and per-look sample sizes, per arm."""

    looks: int
    spending: Spending
    alpha: float
    power: float
    fixed_n_per_arm: int = Field(description="the one-look sample for the same alpha and power")
    inflation_factor: float = Field(description="n_max / fixed_n_per_arm before rounding up")
    max_n_per_arm: int
    n_per_look: list[int]
    z_boundaries: list[float] = Field(description="reject 'challenger no worse' at look k when Z_k >= b_k")
    nominal_alpha: list[float] = Field(description="one-look p-value threshold equal to each boundary")
    expected_n_h1: float = Field(description="expected requests per arm under the designed regression")
    expected_n_h0: float = Field(description="expected requests per arm when the arms are equal (near n_max)")


@lru_cache(maxsize=64)
def group_sequential_design(fixed_n_per_arm: int, looks: int = 5, *, alpha: float = 0.05, power: float = 0.95,
                            spending: Spending = "obrien_fleming") -> GroupSequentialDesign:
    """Size a K-look design on a fixed-horizon sample: ``n_max = ceil(R n_fixed)``, look ``k`` at
    ``ceil(k n_max / K)`` per arm, boundaries recomputed at those exact fractions. Cached per arguments."""
    if looks < 1 or fixed_n_per_arm < 1:
        raise ValueError(f"need looks >= 1 and fixed_n_per_arm >= 1, got {looks}, {fixed_n_per_arm}")
    equal = tuple(k / looks for k in range(1, looks + 1))
    z_sum = stats.norm.isf(alpha) + stats.norm.ppf(power)
    inflation = (_drift_for_power(equal, boundaries(equal, alpha, spending), power) / z_sum) ** 2
    n_max = math.ceil(inflation * fixed_n_per_arm - 1e-9)
    n_looks = [math.ceil(k * n_max / looks) for k in range(1, looks + 1)]
    fractions = tuple(n / n_max for n in n_looks)
    z_bounds = boundaries(fractions, alpha, spending)
    # The designed regression gives drift z_sum at the fixed horizon, so z_sum sqrt(n_max / n_fixed) at n_max.
    eta = z_sum * math.sqrt(n_max / fixed_n_per_arm)
    return GroupSequentialDesign(
        looks=looks, spending=spending, alpha=alpha, power=power, fixed_n_per_arm=fixed_n_per_arm,
        inflation_factor=inflation, max_n_per_arm=n_max, n_per_look=n_looks, z_boundaries=list(z_bounds),
        nominal_alpha=[float(stats.norm.sf(b)) for b in z_bounds],
        expected_n_h1=n_max * expected_fraction(fractions, z_bounds, eta),
        expected_n_h0=n_max * expected_fraction(fractions, z_bounds, 0.0))


def fixed_horizon_n_per_arm(p_champion: float, p_challenger: float, *, alpha: float = 0.05,
                            power: float = 0.8, sides: Literal[1, 2] = 1) -> int:
    """Requests per arm a one-look two-proportion z-test needs: the baseline the sequential test is compared to.

    ``n = (z_a sqrt(2 pbar (1 - pbar)) + z_b sqrt(p0 (1 - p0) + p1 (1 - p1)))^2 / (p1 - p0)^2``,
    ``z_a = z(1 - alpha / sides)``, ``z_b = z(power)``. 1 % -> 5 %: one-sided alpha 0.05, power 0.95:
    391; two-sided alpha 0.05, power 0.8: 285 (FACTS.md).
    """
    if p_champion == p_challenger:
        raise ValueError("the two rates are equal: no finite sample detects a zero difference")
    pbar = (p_champion + p_challenger) / 2
    z_a, z_b = stats.norm.ppf(1 - alpha / sides), stats.norm.ppf(power)
    num = (z_a * math.sqrt(2 * pbar * (1 - pbar))
           + z_b * math.sqrt(p_champion * (1 - p_champion) + p_challenger * (1 - p_challenger)))
    return math.ceil(num**2 / (p_challenger - p_champion) ** 2)
