"""Sample-ratio mismatch: did the traffic split send each arm the share the rollout plan asked for?

A rollout stage compares arms that the router filled; if the observed split is far from the planned one (a
broken split, an arm whose requests crash before they are logged), the comparison is biased and no verdict of
``lifecycle.sequential`` can be trusted. ``lifecycle.rollout_plan`` runs this check at every look: a mismatch
is never a pass.

Because it runs at every look, the check is a sequential test: a beta-binomial mixture likelihood ratio (the
two-arm case of Lindon and Malek's Dirichlet-multinomial test for sample-ratio mismatches), whose p-value is valid
at any number of looks, where a chi-square test at each look is not (bench/srm_bench.py: at 0.001, 1.8-3.4 % of
sound stages tripped it over 400 looks).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field
from scipy.special import betaln

from lifecycle.records import Frozen

# The mixture's prior on the challenger's share: Beta(k s, k (1 - s)) around the planned share s, k the
# concentration. Small k spreads the prior: quick on gross breaks (an arm that gets nothing), slower on small
# drifts; large k the other way round. Chosen with bench/srm_bench.py (bench/RESULTS.md).
PRIOR_CONCENTRATION = 10.0


class SRMCheck(Frozen):
    """Sample-ratio mismatch: did the split send each arm the share the plan asked for?"""

    n_champion: int
    n_challenger: int
    expected_share: float = Field(description="planned challenger share of the two arms' requests")
    observed_share: float | None
    chi2: float = Field(description="Pearson's chi-square of the counts: how far they are, for people to read")
    p_value: float = Field(description="always-valid p-value of the mixture test: valid at any number of looks")
    threshold: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < self.threshold


def sample_ratio_mismatch(
    n_champion: int, n_challenger: int, expected_share: float, *, threshold: float = 0.001,
) -> SRMCheck:
    """Sequential test of the observed split against the planned challenger share ``s``.

    Under a sound split each routed unit (a caller; a request where callers are not counted) lands on the
    challenger's arm with probability ``s``. The test's statistic is the likelihood ratio of the counts under a
    Beta(k s, k (1 - s)) mixture of shares (k = ``PRIOR_CONCENTRATION``) against ``s`` itself:
    ``BF = B(k s + b, k (1 - s) + a) / B(k s, k (1 - s)) / (s^b (1 - s)^a)`` for ``a`` champion and ``b`` challenger
    units. Under a sound split BF is a nonnegative martingale with mean 1, so by Ville's inequality it ever reaches
    ``1 / threshold`` with probability at most ``threshold``: ``p = min(1, 1 / BF)`` may be checked at every look
    with no correction. Why 0.001: a mismatch rolls the candidate back, and at 0.001 a sound split does that to
    at most one stage in a thousand however long it runs, while a broken one (an arm whose requests vanish)
    drives p far below it within a few hundred units. ``chi2`` is Pearson's statistic of the same counts,
    reported for reading only.

    What the guarantee assumes: each unit is routed once, independently, with the planned share (true of callers
    under hash-based sticky routing, not of requests, which come in runs by caller — hence callers where the log
    counts them); the counts only grow between looks (a stage's window keeps its start); and a unit's row shows
    up in the log no later on one arm than the other (a shadow look leaves out its last seconds for that). Requests
    pinned to a version (``model:vN``) bypass the split; a rollout's arms leave them out. In shadow the two
    arms are the requests and their copies, not a random split: p stays 1 while every copy is logged, and the
    check stands for copies that went missing.

    Worked examples: 950 / 50 at 5 %: p = 1 (no evidence against the plan). 980 / 20 at 5 %: chi2 18.95, p = 4.7e-5:
    mismatch. 5000 / 5100 at 50 %: chi2 0.990, p = 1.
    """
    if not 0 < expected_share < 1:
        raise ValueError(f"expected challenger share must be in (0, 1), got {expected_share}")
    if n_champion < 0 or n_challenger < 0:
        raise ValueError(f"request counts must be >= 0, got {n_champion}, {n_challenger}")
    total = n_champion + n_challenger
    if total == 0:
        return SRMCheck(n_champion=0, n_challenger=0, expected_share=expected_share, observed_share=None,
                        chi2=0.0, p_value=1.0, threshold=threshold)
    s = expected_share
    exp_b, exp_a = total * s, total * (1 - s)
    chi2 = (n_challenger - exp_b) ** 2 / exp_b + (n_champion - exp_a) ** 2 / exp_a
    p_value = float(mixture_p_value(n_challenger, total, s))
    return SRMCheck(n_champion=n_champion, n_challenger=n_challenger, expected_share=expected_share,
                    observed_share=n_challenger / total, chi2=chi2, p_value=p_value, threshold=threshold)


def mixture_p_value(n_challenger, n_total, share: float, concentration: float = PRIOR_CONCENTRATION):
    """``min(1, 1 / BF)`` of :func:`sample_ratio_mismatch`'s mixture test for ``n_challenger`` of ``n_total`` units
    at the planned ``share``; numbers or numpy arrays of counts alike (bench/srm_bench.py runs it over thousands
    of simulated stages at once), with the prior's ``concentration`` as a parameter for that bench to vary."""
    a0, b0 = concentration * share, concentration * (1 - share)
    n_champion = n_total - n_challenger
    log_bf = (betaln(a0 + n_challenger, b0 + n_champion) - betaln(a0, b0)
              - (n_challenger * math.log(share) + n_champion * math.log1p(-share)))
    return np.exp(-np.maximum(log_bf, 0.0))
