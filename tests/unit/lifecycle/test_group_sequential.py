import math

import numpy as np
import pytest
from scipy import stats

from lifecycle.group_sequential import (
    boundaries,
    crossing_probabilities,
    group_sequential_design,
    spent_alpha,
)

FIVE = tuple(k / 5 for k in range(1, 6))


@pytest.mark.parametrize(
    ("t", "obf", "pocock"),
    [(0.2, 0.0000117, 0.01477), (0.5, 0.00557, 0.03100), (1.0, 0.05, 0.05)],
)
def test_spending_worked_examples(t, obf, pocock):
    assert spent_alpha(t, 0.05, "obrien_fleming") == pytest.approx(obf, rel=1e-2)
    assert spent_alpha(t, 0.05, "pocock") == pytest.approx(pocock, rel=1e-3)


@pytest.mark.parametrize(
    ("spending", "expected"),
    [
        # Published: gsDesign(k=5, test.type=1, alpha=0.025, sfu=sfLDOF)$upper$bound.
        ("obrien_fleming", (4.8769, 3.3569, 2.6803, 2.2898, 2.0310)),
        # Computed here (a regression row); the Genz comparison below is its independent check.
        ("pocock", (2.4380, 2.4268, 2.4102, 2.3966, 2.3860)),
    ],
)
def test_boundaries_for_k5_one_sided_0025(spending, expected):
    assert boundaries(FIVE, 0.025, spending) == pytest.approx(expected, abs=1e-3)


def _mvn_reject(fractions, z_bounds, drift):
    """1 - P(Z_k < b_k for all k) by scipy's Genz integration: the independent check."""
    cov = np.array([[math.sqrt(min(a, b) / max(a, b)) for b in fractions] for a in fractions])
    mean = drift * np.sqrt(fractions)
    return 1 - stats.multivariate_normal(mean=mean, cov=cov).cdf(np.array(z_bounds))


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
@pytest.mark.parametrize("fractions", [(1 / 3, 2 / 3, 1.0), (0.2, 0.45, 0.7, 1.0)])
def test_recursive_integration_agrees_with_genz(spending, fractions):
    z_bounds = boundaries(fractions, 0.05, spending)
    assert sum(crossing_probabilities(fractions, z_bounds, 0.0)) == pytest.approx(0.05, abs=1e-9)
    for drift in (0.0, 1.5, 3.0):
        ours = sum(crossing_probabilities(fractions, z_bounds, drift))
        assert ours == pytest.approx(_mvn_reject(fractions, z_bounds, drift), abs=2e-5)


def test_each_look_spends_what_the_function_allows():
    z_bounds = boundaries(FIVE, 0.05, "pocock")
    per_look = crossing_probabilities(FIVE, z_bounds, 0.0)
    spent = [spent_alpha(t, 0.05, "pocock") for t in FIVE]
    assert np.cumsum(per_look) == pytest.approx(spent, abs=1e-9)


@pytest.mark.parametrize(
    ("spending", "inflation", "n_max", "looks", "z_bounds", "expected_h1"),
    [
        ("obrien_fleming", 1.0307, 404, [81, 162, 243, 324, 404], [4.224, 2.884, 2.295, 1.959, 1.740], 267),
        ("pocock", 1.1845, 464, [93, 186, 279, 372, 464], [2.175, 2.143, 2.113, 2.089, 2.072], 229),
    ],
)
def test_design_worked_examples(spending, inflation, n_max, looks, z_bounds, expected_h1):
    # The module docstring: one-sided alpha 0.05, power 0.95, sized on the 391 per arm of 1 % -> 5 %.
    d = group_sequential_design(391, 5, alpha=0.05, power=0.95, spending=spending)
    assert d.inflation_factor == pytest.approx(inflation, abs=1e-4)
    assert (d.max_n_per_arm, d.n_per_look) == (n_max, looks)
    assert d.z_boundaries == pytest.approx(z_bounds, abs=1e-3)
    assert d.expected_n_h1 == pytest.approx(expected_h1, abs=0.5)
    assert d.expected_n_h0 > 0.97 * n_max  # an equal challenger rarely crosses


def test_one_look_is_the_fixed_horizon_test():
    d = group_sequential_design(391, 1, alpha=0.05, power=0.95)
    assert d.z_boundaries == pytest.approx([stats.norm.isf(0.05)], abs=1e-8)
    assert d.inflation_factor == pytest.approx(1.0, abs=1e-6) and d.max_n_per_arm == 391


@pytest.mark.parametrize("call", [
    lambda: boundaries((0.5, 0.9), 0.05, "pocock"),
    lambda: boundaries((0.5, 0.5, 1.0), 0.05, "pocock"),
    lambda: spent_alpha(0.0, 0.05, "pocock"),
    lambda: group_sequential_design(391, 0),
])
def test_bad_designs_are_refused(call):
    with pytest.raises(ValueError):
        call()
