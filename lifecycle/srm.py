"""Sample-ratio mismatch: did the traffic split send each arm the share the rollout plan asked for?

A rollout stage compares arms that the router filled; if the observed split is far from the planned one (a
broken split, an arm whose requests crash before they are logged), the comparison is biased and no verdict of
``lifecycle.sequential`` can be trusted. ``lifecycle.rollout_plan`` runs this check at every look: a mismatch
is never a pass.
"""

from __future__ import annotations

import math

from pydantic import Field

from lifecycle.records import Frozen


class SRMCheck(Frozen):
    """Sample-ratio mismatch: did the split send each arm the share the plan asked for?"""

    n_champion: int
    n_challenger: int
    expected_share: float = Field(description="planned challenger share of the two arms' requests")
    observed_share: float | None
    chi2: float
    p_value: float
    threshold: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < self.threshold


def sample_ratio_mismatch(
    n_champion: int, n_challenger: int, expected_share: float, *, threshold: float = 0.001,
) -> SRMCheck:
    """Pearson chi-square (1 df) of the observed split against the planned challenger share.

    ``chi2 = (n_chall - N s)^2 / (N s) + (n_champ - N (1 - s))^2 / (N (1 - s))``, ``N = n_champ + n_chall``.
    Why 0.001: the check runs at every look and is not corrected for it; at 0.001 a sound router trips it
    rarely over a rollout's few dozen looks, while a real mismatch (a broken split, a crashing arm
    whose requests vanish) gives p far below it within a few hundred requests. A mismatch means the
    comparison is biased: never a pass. Assumes each request is routed independently with the planned
    probability (hash-based sticky routing of many users approximates this).

    Worked examples: 950 / 50 at 5 %: chi2 = 0, p = 1. 980 / 20 at 5 %: chi2 = 18.95, p = 1.3e-5:
    mismatch. 5000 / 5100 at 50 %: chi2 = 0.990, p = 0.320.
    """
    if not 0 < expected_share < 1:
        raise ValueError(f"expected challenger share must be in (0, 1), got {expected_share}")
    if n_champion < 0 or n_challenger < 0:
        raise ValueError(f"request counts must be >= 0, got {n_champion}, {n_challenger}")
    total = n_champion + n_challenger
    if total == 0:
        return SRMCheck(n_champion=0, n_challenger=0, expected_share=expected_share, observed_share=None,
                        chi2=0.0, p_value=1.0, threshold=threshold)
    exp_b, exp_a = total * expected_share, total * (1 - expected_share)
    chi2 = (n_challenger - exp_b) ** 2 / exp_b + (n_champion - exp_a) ** 2 / exp_a
    p_value = math.erfc(math.sqrt(chi2 / 2))  # chi-square with 1 degree of freedom: P(Z^2 > chi2)
    return SRMCheck(n_champion=n_champion, n_challenger=n_challenger, expected_share=expected_share,
                    observed_share=n_challenger / total, chi2=chi2, p_value=p_value, threshold=threshold)
