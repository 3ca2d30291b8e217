"""Anytime-valid statistics for the online rollout: look after every batch without inflating false alarms.

All rest on one Gaussian fact. An estimate ``d`` of a difference ``theta`` with variance ``V`` (information
``t = 1/V``) behaves, in information time, like a Brownian motion ``S = d * t``, so for each ``theta``
``exp(theta S - theta^2 t / 2)`` is the likelihood ratio of ``theta`` against 0 (Robbins 1970; Johari et al.
2017, "Peeking at A/B tests"; Howard et al. 2021, "Time-uniform, nonparametric, nonasymptotic confidence
sequences"). Mixed over a law ``G`` of ``theta``, it stays a nonnegative (super)martingale under the null,
and Ville's inequality ``P(sup_n L >= 1/alpha) <= alpha`` makes ``min(1, 1/L)`` a p-value valid at whatever
look the caller stops at, after any number of looks at any times.

* The rate test (:func:`msprt_two_proportions`, the rollout's) is one-sided, ``H0: theta <= 0``. For
  ``theta > 0`` each component has mean ``exp(theta theta0 t) <= 1`` under any ``theta0 <= 0``, so ANY law
  on ``theta > 0`` is valid; the choice only moves power. Ours is ``N(delta, (delta/4)^2)`` truncated to
  ``theta > 0``, centred on the regression the plan names (``delta = tau - margin``: the guardrail's
  ``regression`` less its ``tolerance``; 1 % -> 5 %: 0.04), closed form in :func:`mixture_log_lr`. The law
  used until 2026-11-27, ``N(0, tau^2)`` folded onto ``theta > 0`` (:func:`folded_normal_log_lr`), spent
  much of its mass on effects too small to matter, which cost evidence at the regression the plan names.
* The confidence sequence (:func:`mixture_radius`) is the two-sided normal mixture ``theta ~ N(0, tau^2)``::

      L2(d, V) = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))
      r(V) = sqrt(V (V + tau^2) / tau^2 * (2 ln(1/alpha) + ln((V + tau^2) / V)))

  It bounds the difference from both sides (shown at every look; it decides a rate's pass below the pass
  test's floor, and the latency mean's FAIL), so it keeps the symmetric law; it is not the inverse of the
  rate test, and a test can reject while the interval still holds 0.
* The pass side of a rate (:func:`no_regression_log_lr`, :attr:`RateTest.rules_out`) is the rate test turned
  round: ``H0': worse by tau or more``, its law centred on equal arms. From :func:`pass_floor` trials per arm
  (10 expected events at the null's boundary rate) it decides a pass; below that, the interval's bound does.
  Until 2026-11-28 the interval alone decided; on the same draws the rule passes equal arms in 0.74x the
  requests at feedback success 85 % (``tau`` 0.05) and 0.94x at errors 1 % (``tau`` 0.04, where the floor
  binds). Its price is false passes: of a challenger exactly ``tau`` worse, looking every 10 requests, 3.6-5.0 %
  against the interval's 1.0-4.7 % (bench/RESULTS.md, "The rollout's pass rule"). Each part is anytime-valid at
  ``alpha`` in the normal approximation; the switch between them is bounded by ``2 alpha`` only (union bound),
  the measured rates above are what it does.

Assumptions, stated once: requests are independent — or, for the rollout's tests given the callers' moments,
callers are (:func:`clustered_ratio_variance`; ``lifecycle.simulate_callers`` shows what the binomial variance
does when they are not); each arm's share is fixed within a stage window (so
the estimate's variance shrinks like 1/n); the estimate is close to normal (large-sample CLT: asymptotic
validity in the sense of Waudby-Smith et al. 2021).

Measured with ``slm rollout simulate --runs 10000`` (seed 0, one-sided alpha 0.05, baselines sized for power
0.95, the rate tests looked at every 50 requests per arm; bench/RESULTS.md). Cells: A/A false rollbacks,
regression caught, mean requests per arm to rollback (and x the fixed horizon):

==========================================  ============================  ======================================
rule                                        error rate 1 % -> 5 %         success 85 % -> 80 % (``--harmful
                                            (``tau`` 0.04, to 2,000)      lower --tau 0.05 --max-per-arm 5000``)
==========================================  ============================  ======================================
mSPRT, centred law (the rollout's)          0.15 %, 100 %, 306 (0.78x)    2.9 %, 100 %, 812 (0.65x)
mSPRT, folded N(0, tau^2) (until 11-27)     0.40 %, 100 %, 337 (0.86x)    2.3 %, 100 %, 918 (0.74x)
fixed horizon, one look                     3.9 %, 96.5 %, 391            4.7 %, 95.2 %, 1248
group sequential, O'Brien-Fleming, 5 looks  4.2 %, 96.6 %, 271 (0.69x)    4.7 %, 95.1 %, 831 (0.67x)
group sequential, Pocock, 5 looks           1.8 %, 96.4 %, 236 (0.60x)    4.7 %, 95.2 %, 692 (0.55x)
==========================================  ============================  ======================================

The centred law meets issue #8's target (<= 0.8x the fixed horizon, <= 5 % false) at both regressions while
staying valid at any looks. Its price is at regressions well below the named one: sized for 1 % -> 5 % but
facing 1 % -> 3 %, it catches 89.8 % by 2,000 per arm (mean 807) where the folded law caught 96.6 % (815);
at 85 % -> 82.5 %, 72.8 % (1,940) against 78.6 % (2,256). Larger ones, up to about 3x, it catches sooner
(1 % -> 10 %: 146 against 153; 85 % -> 75 %: 298 against 317), far larger ones a little later (1 % -> 20 %,
a look every 10: 87 against 80, below the shipped plans' minimum samples). Coarser looks cost as for any sequential
rule: a look every 10 requests per arm, 275 (0.70x); every 100, 340 (0.87x). The planned designs stop
sooner at exactly their sizes but need a maximum sample and their planned looks; the rollout looks after
every batch at irregular times and may hold a stage indefinitely, which only an anytime-valid test allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

# scipy.special, not scipy.stats: the same log_ndtr kernel behind norm.logcdf, and the rollout flow's start
# (a fresh process per run) does not pay scipy.stats' ~0.6-1.2 s import.
from scipy.special import log_ndtr

from lifecycle.records import Frozen

Harmful = Literal["higher", "lower"]


# Why a quarter of the regression: the law then spans about 0.5x-1.5x the regression the plan names (95 % of
# its mass), so the test is nearly as quick there as a simple SPRT aimed at exactly it (1 % -> 5 %, a look
# every 50, 10,000 runs: 306 per arm against 300 for a point mass, 337 for the folded N(0, tau^2)) and keeps
# some power below it (1 % -> 3 %: 90 % caught by 2,000 per arm). Wider laws trade speed at the named
# regression for small ones (0.4: 312, 0.80x the fixed horizon, 94 %); narrower the reverse (0.2: 303, 87 %).
SPREAD = 0.25


def mixture_log_lr(d: np.ndarray | float, v: np.ndarray | float, centre: float, scale: float) -> np.ndarray:
    """``log L`` of the Gaussian likelihood ratio mixed over ``theta ~ N(centre, scale^2)`` truncated to ``theta > 0``.

    ``L = int_0^inf exp(theta d / V - theta^2 / (2 V)) dG(theta)`` in closed form (complete the square)::

        log L = 1/2 ln(V / (V + s^2)) + (s^2 d^2 + 2 mu d V - mu^2 V) / (2 V (V + s^2))
                + ln Phi((d s^2 + mu V) / (s sqrt(V (V + s^2)))) - ln Phi(mu / s)

    (``mu = centre``, ``s = scale``). Every component ``exp(theta S - theta^2 t / 2)`` with ``theta > 0`` is a
    nonnegative supermartingale whenever the true difference is ``<= 0``, so any such mixture is one.
    ``centre = 0`` is the folded normal of :func:`folded_normal_log_lr`. Elementwise over arrays.

    Worked examples (centre 0.04, scale 0.01, the rollout's law for 1 % -> 5 %): ``d = 0.04``, ``V = 1e-4``
    (the estimate four sds up, at the named regression): ``log L = 7.653`` (the folded ``N(0, 0.04^2)``:
    6.806); ``d = 0``, ``V = 4e-4``: ``log L = -1.712`` (folded: -0.805). Both agree with numerical
    integration of the mixture to 1e-9 (``test_sequential.py``).
    """
    d, v = np.asarray(d, dtype=float), np.asarray(v, dtype=float)
    s2 = scale**2
    quad = (s2 * d**2 + 2 * centre * d * v - centre**2 * v) / (2 * v * (v + s2))
    tail = log_ndtr((d * s2 + centre * v) / (scale * np.sqrt(v * (v + s2))))
    return 0.5 * np.log(v / (v + s2)) + quad + tail - log_ndtr(centre / scale)


def one_sided_log_lr(d: np.ndarray | float, v: np.ndarray | float, tau: np.ndarray | float,
                     margin: float = 0.0) -> np.ndarray:
    """The statistic of :func:`msprt_two_proportions`, shared with the simulator so both decide identically.

    ``d``: the difference signed so that positive is harmful; ``margin``: the tolerated harm. The mixture is
    taken on ``d - margin`` and centred where the regression worth catching sits on that scale:
    ``mixture_log_lr(d - margin, V, tau - margin, SPREAD (tau - margin))``. Elementwise over arrays (``tau``
    too: the latency mean's is a share of each look's champion mean).
    """
    if margin < 0 or np.any(np.asarray(tau) <= margin):
        raise ValueError(f"need 0 <= margin < tau (the tolerated harm below the regression), got {margin}, {tau}")
    centre = tau - margin
    return mixture_log_lr(np.asarray(d, dtype=float) - margin, v, centre, SPREAD * centre)


def no_regression_log_lr(d: np.ndarray | float, v: np.ndarray | float, tau: np.ndarray | float) -> np.ndarray:
    """The PASS side's statistic: evidence that the harm ``d`` (signed so that positive is harmful) is below ``tau``.

    Tests ``H0': d >= tau`` (the regression worth catching, or worse) against ``d < tau`` by the FAIL side's
    mixture turned round: :func:`one_sided_log_lr` of the distance ``tau - d``, its law centred at ``tau``, which
    is equal arms (``d = 0``), spread ``SPREAD tau``. Under any ``d >= tau`` it is a supermartingale (Ville), so
    a PASS when ``min(1, 1/L) <= alpha`` is wrong with probability ``<= alpha`` however often one looks —
    asymptotically: ``V`` is a plug-in, and at a low rate and few trials it is optimistic (see
    :func:`pass_floor`). The symmetric interval it replaces as the pass rule (``upper < tau``) spends half its
    law on the wrong side and most of the rest on small effects. Elementwise over arrays.

    Worked examples (``tau = 0.04``): ``d = 0``, ``V = 1e-4``: ``log L = 7.653`` (the FAIL side's example
    mirrored); ``d = 0.03``, ``V = 1e-4``: ``log L = -2.097``.
    """
    return one_sided_log_lr(tau - np.asarray(d, dtype=float), v, tau)


# Why 10 expected events: below it the normal approximation of a rate near 0 or 1 is poor and the plug-in
# variance optimistic. A challenger exactly tau worse, a look every 10 requests per arm from the first, 10,000
# runs (bench/pass_rule.py): the test with no floor passes it 5.1-6.9 % of the time at base rates of 2 % or less,
# the rule with this floor 3.6-5.0 %; at 5 % and at 85 % success the floor does not bind (3.6 %, 4.2 % both ways).
PASS_MIN_EVENTS = 10


def pass_floor(rate_champion: np.ndarray | float, tau: float, harmful: Harmful,
               min_events: int = PASS_MIN_EVENTS) -> np.ndarray | int:
    """Trials each arm needs before :func:`no_regression_log_lr` may pass: ``min_events`` expected events (and as
    many non-events) at the null's boundary, where the challenger's rate is the champion's moved ``tau`` the
    harmful way. Worked examples (``tau = 0.04``): champion 1 % errors -> 5 %: 200; 0 %: 250; success 85 % with
    ``tau = 0.05`` -> 80 %: 50. The boundary rate is read no closer to 0 or 1 than 1 %: at most 1,000 — also
    where it falls outside [0, 1] (a champion within ``tau`` of the end of the scale: no rate is ``tau`` worse),
    a conservative floor below which the interval decides. ``min_events = 0``: no floor (what the simulator
    compares with). An int for a number, ints elementwise for an array. The champion's rate moves as trials
    come in, so the floor can move too, either way.
    """
    boundary = np.asarray(rate_champion, dtype=float) + (tau if harmful == "higher" else -tau)
    floor = np.ceil(min_events / np.maximum(np.minimum(boundary, 1 - boundary), 0.01)).astype(int)
    return floor if floor.ndim else int(floor)


def folded_normal_log_lr(d: np.ndarray | float, v: np.ndarray | float, tau: float) -> np.ndarray:
    """``log L1 = ln 2 + log L2(d, V) + ln Phi(d tau / sqrt(V (V + tau^2)))``: ``N(0, tau^2)`` folded onto
    ``theta > 0``, the rollout's statistic until 2026-11-27, kept as the simulator's comparison."""
    return mixture_log_lr(d, v, 0.0, tau)


def always_valid_p(log_lr: np.ndarray | float) -> np.ndarray:
    """``p = min(1, 1 / L)``: 1 where ``log L <= 0``."""
    log_lr = np.asarray(log_lr, dtype=float)
    return np.where(log_lr <= 0, 1.0, np.exp(-np.maximum(log_lr, 0.0)))


def pooled_variance(x_champion, n_champion, x_challenger, n_challenger, design_effects=(1.0, 1.0)):
    """``pbar (1 - pbar) (d_a/n_a + d_b/n_b)``, ``pbar`` Laplace-smoothed, ``d`` each arm's design effect (1:
    independent requests); works on numbers and numpy arrays."""
    d_a, d_b = design_effects
    pbar = (x_champion + x_challenger + 1) / (n_champion + n_challenger + 2)
    return pbar * (1 - pbar) * (d_a / n_champion + d_b / n_challenger)


def clustered_ratio_variance(events: Sequence[float], trials: Sequence[float]) -> float | None:
    """Variance of the rate ``sum(events) / sum(trials)`` when requests come in clusters (callers), not one by one;
    the same for a mean (``events``: each caller's sum of ok latencies, ``trials``: their counts). One entry per
    caller; callers without trials are left out.

    The sticky router sends all of a caller's requests to one arm, and one caller's requests fail together
    (the same odd prompts, the same client), so the binomial ``p (1 - p) / n`` understates the noise of an
    arm's rate whenever a few callers send many requests. The cluster-robust variance of a ratio (Cochran 1977,
    ch. 6; Deng et al. 2018, "Applying the delta method in metric analytics"), in its jackknife form CR3
    (MacKinnon & White 1985; Cameron & Miller 2015): ``(K - 1) / K * sum_u (r_u / (1 - h_u))^2 / n^2``, residual
    ``r_u = x_u - p n_u``, leverage ``h_u = n_u / n``. Why not the plain ``K / (K - 1) sum r_u^2`` (CR1): a
    caller sending much of an arm's traffic pulls ``p`` towards its own rate and hides its residual; at a 5 %
    canary with a few busy callers (``lifecycle.simulate_callers``, icc 0.05) CR1 still rolled back 12 % of sound
    challengers (a probe of 1,000 runs), CR3 5.5 % (2,000 runs; the binomial 19.2 %, bench/RESULTS.md). None
    below two callers (no spread between them to see).

    Worked examples: one request per caller (x of n fail): ``p (1 - p) / (n - 1)``, the binomial's. Ten callers
    of 10 requests, five with 2 errors and five with none: p 0.1, variance 0.001111 against the binomial 0.0009
    (design effect 1.23); all ten errors from one of them: 0.01, 11 times the binomial (equal callers: CR3 is
    CR1's ``K / (K - 1)`` exactly).
    """
    x, n = np.asarray(events, dtype=float), np.asarray(trials, dtype=float)
    keep = n > 0
    x, n = x[keep], n[keep]
    k, total = len(n), float(n.sum())
    if k < 2:
        return None
    residual = (x - x.sum() / total * n) / (1 - n / total)
    return float((k - 1) / k * (residual @ residual) / (total * total))


def arm_design_effect(events: float, trials: float, clustered: float | None) -> float:
    """How much noisier an arm's rate is than independent requests would make it: its caller-clustered variance
    over its own binomial ``p (1 - p) / (n - 1)`` (what :func:`clustered_ratio_variance` gives with one request
    per caller), never below 1. 1 without a clustered variance (fewer than two callers, or none computed) and
    where the binomial is 0 (no events, or all: nothing varies). Per arm, against the arm's own rate: comparing
    a pooled variance with unpooled ones would read a real difference between the arms as clustering.
    Worked examples: the 0.001111 of ten callers above at p 0.1, n 100: 1.22; one request per caller: 1.
    """
    if clustered is None or trials < 2:
        return 1.0
    p = events / trials
    binomial = p * (1 - p) / (trials - 1)
    # 1e-9: with one request per caller the ratio is 1 up to rounding.
    return clustered / binomial if binomial > 0 and clustered > binomial * (1 + 1e-9) else 1.0


def rate_test_variances(x_champion: float, n_champion: float, x_challenger: float, n_challenger: float,
                        design_effects: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float]:
    """(the test's ``V``, the interval's variance) of :func:`msprt_two_proportions`.

    ``V = pbar (1 - pbar) (d_a / n_a + d_b / n_b)`` (pooled smoothed rate ``pbar``, as :func:`pooled_variance`)
    and ``d_a q_a (1 - q_a) / n_a + d_b q_b (1 - q_b) / n_b`` (unpooled smoothed ``q = (x + 1) / (n + 2)``), each
    arm's term scaled by its design effect ``d`` (:func:`arm_design_effect`; Rao & Scott 1981's adjustment of a
    two-sample test to clustered samples). With both at 1, the independent-requests test exactly.
    """
    v = pooled_variance(x_champion, n_champion, x_challenger, n_challenger, design_effects)
    interval = sum(d * (x + 1) / (n + 2) * (1 - (x + 1) / (n + 2)) / n
                   for d, x, n in zip(design_effects, (x_champion, x_challenger), (n_champion, n_challenger),
                                     strict=True))
    return v, interval


def mixture_radius(variance: np.ndarray | float, tau: np.ndarray | float, alpha: float) -> np.ndarray | float:
    """Half-width of the normal-mixture confidence sequence for an estimate of variance ``variance``.

    ``r = sqrt(V (V + tau^2) / tau^2 * (2 ln(1/alpha) + ln((V + tau^2) / V)))``. With ``tau = 0.04`` and
    ``alpha = 0.05``: ``V = 1e-4`` (sd 0.01) gives ``r = 0.0306``, ``V = 4e-4`` (sd 0.02) gives ``0.0616``
    — compare 0.0196 and 0.0392 for a one-look 95 % interval: the price of looking at every batch.
    Elementwise over arrays of variances (and of ``tau``).
    """
    v, tau = np.asarray(variance, dtype=float), np.asarray(tau, dtype=float)
    if np.any(v <= 0) or np.any(tau <= 0) or not 0 < alpha < 1:
        raise ValueError(f"need variance > 0, tau > 0, 0 < alpha < 1; got {variance}, {tau}, {alpha}")
    # ln((V + tau^2) / V) as a difference of logs: the quotient overflows to inf for a subnormal V (an infinite
    # radius that then shrank when n grew 4x: the property test found V = 1.4e-312), the logs stay finite.
    spread = 2 * math.log(1 / alpha) + np.log(v + tau**2) - np.log(v)
    radius = np.sqrt(v * (v + tau**2) / tau**2 * spread)
    return radius if radius.ndim else float(radius)


class RateTest(Frozen):
    """One look of the one-sided mSPRT on ``challenger rate - champion rate`` (the FAIL side), the no-regression
    test (the pass side: :attr:`rules_out`), and the confidence sequence."""

    x_champion: int
    n_champion: int
    x_challenger: int
    n_challenger: int
    difference: float = Field(description="challenger rate - champion rate (raw, not smoothed)")
    harmful: Harmful = Field(description="which sign of the difference is a regression")
    log_lr: float = Field(description="log of the one-sided mixture likelihood ratio (the statistic)")
    p_value: float = Field(ge=0, le=1, description="always-valid p-value of 'challenger no worse'")
    alpha: float
    tau: float = Field(description="the regression worth catching: the test's law is centred at tau - margin, "
                       "the pass side's at equal arms (tau from its null); the interval's normal mixture has scale tau")
    margin: float = Field(default=0.0, description="tolerated harm: H0 is 'worse by at most margin'")
    design_effect: float = Field(default=1.0, ge=1, description=(
        "the test's variance over the independent-requests one: above 1 when callers' requests vary together"))
    lower: float = Field(description="anytime-valid (1 - alpha) lower bound of the difference")
    upper: float
    pass_log_lr: float = Field(description="log of the no-regression statistic (no_regression_log_lr): evidence "
                               "the challenger is worse by less than tau")
    pass_p_value: float = Field(ge=0, le=1, description="always-valid p of 'the challenger is worse by tau or more'")
    pass_floor: int = Field(ge=0, description="trials each arm needs before the no-regression test may pass "
                            "(pass_floor)")
    pass_trials: float = Field(ge=0, description="what the smaller arm counts against the floor: its trials over "
                               "its callers' design effect (clustered requests carry less information)")

    @property
    def reject(self) -> bool:
        """The challenger is worse: the plan may roll back now, at any look."""
        return self.p_value <= self.alpha

    @property
    def past_floor(self) -> bool:
        """The no-regression test decides the pass (else the interval's bound does)."""
        return self.pass_trials >= self.pass_floor

    @property
    def rules_out(self) -> bool:
        """A regression of ``tau`` is ruled out (:func:`pass_rule`)."""
        bound = self.upper if self.harmful == "higher" else -self.lower
        return bool(pass_rule(self.pass_p_value, self.past_floor, bound, self.tau, self.alpha))


def pass_rule(pass_p: np.ndarray | float, past_floor: np.ndarray | bool, harmful_bound: np.ndarray | float,
              tau: float, alpha: float) -> np.ndarray:
    """The pass of a rate, shared with the simulator so both decide identically: past the floor
    (:func:`pass_floor`) the no-regression test rejects (``pass_p <= alpha``); below it the interval's harmful
    bound is below ``tau`` (the wider rule, whose slack absorbs the plug-in variance's optimism at few trials).
    Each is anytime-valid at ``alpha`` in the normal approximation; their switch is at most ``2 alpha`` by the
    union bound. Measured at the null's boundary, looking every 10 requests: 3.6-5.0 %, against 1.0-4.7 % for the
    interval alone (bench/RESULTS.md, "The rollout's pass rule"). Elementwise over arrays."""
    return np.where(past_floor, np.asarray(pass_p) <= alpha, np.asarray(harmful_bound) < tau)


def msprt_two_proportions(
    x_champion: int, n_champion: int, x_challenger: int, n_challenger: int,
    *, tau: float, alpha: float = 0.05, harmful: Harmful = "higher", margin: float = 0.0,
    design_effects: tuple[float, float] = (1.0, 1.0),
) -> RateTest:
    """One-sided mixture SPRT of ``H0: the challenger's rate is no worse than the champion's``
    (with ``margin`` m > 0: ``H0: worse by at most m`` — a tolerated harm, as the offline gate tolerates
    two more points of malformed answers; the statistic is then computed on ``d - m``).

    ``d = p_chall - p_champ`` (sign flipped when ``harmful="lower"``, e.g. feedback success);
    ``V = pbar (1 - pbar) (1/n_champ + 1/n_chall)`` with the pooled rate Laplace-smoothed,
    ``pbar = (x_champ + x_chall + 1) / (n_champ + n_chall + 2)``, so a window with no events is not
    falsely certain. ``tau`` is the regression worth catching (the plan's ``regression``). The mixing law is
    ``N(tau - m, (SPREAD (tau - m))^2)`` truncated to ``theta > 0``: centred where that regression sits on the
    tested scale ``d - m`` (:func:`one_sided_log_lr`, :func:`mixture_log_lr`). Under any ``theta <= 0`` it is
    a supermartingale, so ``p = min(1, 1/L)`` is always valid. Why one-sided: only a regression triggers a
    rollback; a better challenger should advance, not "fail" a two-sided test. The caller may keep the
    running minimum of p over looks; rejecting when any single look has ``p <= alpha`` is already valid (Ville).
    The interval is the two-sided normal-mixture sequence (scale ``tau``, no margin) with unpooled smoothed
    variances: not the inverse of this test (see the module docstring). The pass side (``pass_p_value``,
    ``rules_out``) is :func:`no_regression_log_lr` on the harm with the interval's variance, from
    :func:`pass_floor` trials (read at the champion's smoothed rate; each arm's trials over its design effect) on.
    It ignores ``margin``: a pass says a regression of ``tau`` is ruled out, whatever harm is tolerated.

    ``design_effects``: each arm's (:func:`arm_design_effect`, from its callers' spread) scales that arm's part
    of ``V`` and of the interval's variance (:func:`rate_test_variances`), so requests that fail together by
    caller count as the less evidence they are; at 1 (callers alike, or one request each) the test is the
    independent-requests one exactly. ``design_effect`` reports the resulting ``V`` over that one's.

    Worked examples (``tau = 0.04``, ``alpha = 0.05``) — the rows of ``test_sequential.py``:

    * 5/500 vs 25/500 (1 % -> 5 %): ``log L = 6.368``, ``p = 0.0017``: reject, roll back;
      interval [0.0063, 0.0737]. With half a point tolerated (``margin = 0.005``): ``log L = 4.861``,
      ``p = 0.0077``: still rejected.
    * 5/500 vs 10/500 (1 % -> 2 %): ``log L = -2.444``, ``p = 1``: no evidence of a four-point regression;
      interval [-0.0153, 0.0353].
    * 5/500 vs 5/500 (equal): ``log L = -6.189``, ``p = 1``: identical arms never reject;
      interval [-0.0215, 0.0215].
    * 10/1000 vs 0/50 (5 % canary, challenger better): ``log L = -3.901``, ``p = 1``.
    * 2/3747 vs 2/225 (0.05 % vs 0.9 % on a 5 % canary): ``log L = -0.274``, ``p = 1``, interval
      [-0.0154, 0.0321] (the folded law gave ``p = 0.0232``: it rolled back a real but tiny regression);
      with ``margin = 0.005``: ``log L = -6.445``.
    """
    for x, n, who in ((x_champion, n_champion, "champion"), (x_challenger, n_challenger, "challenger")):
        if n <= 0 or not 0 <= x <= n:
            raise ValueError(f"{who}: need 0 <= events <= requests and requests > 0, got {x}/{n}")
    if tau <= 0 or not 0 < alpha < 1:
        raise ValueError(f"need tau > 0 and 0 < alpha < 1, got tau={tau}, alpha={alpha}")
    p_a, p_b = x_champion / n_champion, x_challenger / n_challenger
    diff = p_b - p_a
    if not 0 <= margin < min(tau, 1):
        raise ValueError(f"need 0 <= margin < tau (a tolerated harm below the regression), got {margin}, tau {tau}")
    if not min(design_effects) >= 1:
        raise ValueError(f"design effects are at least 1, got {design_effects}")
    v, v_interval = rate_test_variances(x_champion, n_champion, x_challenger, n_challenger, design_effects)
    d_a, d_b = design_effects  # V over the independent-requests V: pbar (1 - pbar) cancels
    harm = diff if harmful == "higher" else -diff
    log_lr = float(one_sided_log_lr(harm, v, tau, margin))
    pass_log_lr = float(no_regression_log_lr(harm, v_interval, tau))
    radius = mixture_radius(v_interval, tau, alpha)
    return RateTest(x_champion=x_champion, n_champion=n_champion, x_challenger=x_challenger,
                    n_challenger=n_challenger, difference=diff, harmful=harmful, log_lr=log_lr,
                    p_value=float(always_valid_p(log_lr)), alpha=alpha, tau=tau, lower=diff - radius,
                    upper=diff + radius, margin=margin, pass_log_lr=pass_log_lr,
                    pass_p_value=float(always_valid_p(pass_log_lr)),
                    pass_floor=pass_floor((x_champion + 1) / (n_champion + 2), tau, harmful),
                    pass_trials=min(n_champion / d_a, n_challenger / d_b),
                    design_effect=(d_a / n_champion + d_b / n_challenger) / (1 / n_champion + 1 / n_challenger))


class MeanDifferenceCS(Frozen):
    """An anytime-valid confidence sequence for ``challenger mean - champion mean`` at one look."""

    difference: float
    lower: float
    upper: float
    radius: float
    alpha: float
    tau: float
    n_champion: int
    n_challenger: int
    variance: float = Field(ge=0, description="the estimate's variance V the radius (and the pass test) is built on")
    pass_p_value: float | None = Field(default=None, ge=0, le=1, description=(
        "relative_margin_cs only: always-valid p of 'at or beyond the limit' (the no-regression test, "
        "no_regression_log_lr, on the distance below it)"))


def mean_difference_cs(
    mean_champion: float, var_champion: float, n_champion: int,
    mean_challenger: float, var_challenger: float, n_challenger: int,
    *, tau: float, alpha: float = 0.05,
) -> MeanDifferenceCS:
    """Normal-mixture confidence sequence (Howard et al. 2021) for a difference of means, e.g. latency.

    ``d = mean_chall - mean_champ``, ``V = var_champ / n_champ + var_chall / n_chall`` with the sample
    variances as the variance proxy (asymptotically valid: means of independent requests with finite
    variance; heavy latency tails need more requests before the normal approximation holds — prefer
    log-latency). The interval ``d +/- mixture_radius(V, tau, alpha)`` covers the true difference at
    every look simultaneously with probability ``>= 1 - alpha``. ``tau``: the difference worth catching.

    Worked examples (``alpha = 0.05``):

    * 100 ms (var 400, n 400) vs 110 ms (var 400, n 100), ``tau = 10``: ``d = 10``, ``r = 6.89``,
      interval [3.11, 16.89]: slower, at any look.
    * 100 vs 110 ms (var 400 each), n 25 each, ``tau = 10``: ``V = 32``, ``r = 17.69``, interval [-7.69, 27.69].
    * 0.80 vs 0.78 feedback score (var 0.16, n 2000 each), ``tau = 0.05``: ``r = 0.0387``,
      interval [-0.0587, 0.0187].
    """
    for n, who in ((n_champion, "champion"), (n_challenger, "challenger")):
        if n <= 0:
            raise ValueError(f"{who}: need at least one observation, got n={n}")
    if var_champion < 0 or var_challenger < 0:
        raise ValueError(f"variances must be >= 0, got {var_champion}, {var_challenger}")
    v = var_champion / n_champion + var_challenger / n_challenger
    diff = mean_challenger - mean_champion
    # Two constant arms: no spread, no uncertainty the data can show; a zero-width interval is honest.
    radius = mixture_radius(v, tau, alpha) if v > 0 else 0.0
    return MeanDifferenceCS(difference=diff, lower=diff - radius, upper=diff + radius, radius=radius,
                            alpha=alpha, tau=tau, n_champion=n_champion, n_challenger=n_challenger, variance=v)


def relative_margin_cs(
    mean_champion: float, var_champion: float, n_champion: int,
    mean_challenger: float, var_challenger: float, n_challenger: int,
    *, margin: float, alpha: float = 0.05,
) -> MeanDifferenceCS:
    """Confidence sequence for ``psi = mean_chall - (1 + margin) mean_champ``: how far the challenger sits
    above the largest mean the plan tolerates (e.g. latency, ``margin = 0.25``: 25 % slower at most).

    :func:`mean_difference_cs` on the scaled champion: ``psi_hat = m_b - k m_a``,
    ``V = s_b^2 / n_b + k^2 s_a^2 / n_a``, ``k = 1 + margin``, so the champion's own uncertainty widens
    the interval instead of being ignored (comparing with a fixed ``k m_a`` would). ``tau = margin m_a``:
    ``psi`` is ``-margin mu_a`` for an equal challenger and ``0`` at the limit, so that is the distance the
    test should resolve quickly. ``tau`` is taken from the current champion mean; the Ville argument wants
    it fixed; it settles within a few looks, and simulation finds no cost for the interval (``test_sequential.py``:
    lognormal latencies, sd 1.3x the mean, challenger exactly at the limit, a look every 10 requests from 30 to
    600 per arm: false FAIL 1.0 %; the interval's own pass, ``upper < 0``, 1.7 %).
    The interval read one-sidedly, each side with error <= alpha at every look: ``lower > 0`` — slower than the
    limit (the rollout's FAIL); ``upper < 0`` — a slowdown beyond the margin is ruled out (its pass until
    2026-11-28); otherwise undecided.

    The pass side has a test of its own, as a rate's does (``pass_p_value``; the rollout passes on it since
    2026-11-28): :func:`no_regression_log_lr` of the raw difference ``m_b - m_a = psi + tau`` with the same ``V``
    and ``tau``, i.e. the distance ``-psi`` below the limit under a law centred on equal means.
    ``bench/pass_rule.py --latency`` (2,000 runs a cell, a look every 10 answers from 30 to 2,000): a challenger at
    the limit passes 3.0-4.65 % of the time over lognormal sigma 0.5-1.5 and a bimodal mix (10 % of answers 17x
    slower), against 0.85-1.65 % for ``upper < 0`` — at its upper end within Monte Carlo noise (~0.5 points) of
    alpha, without the interval's slack, and a stage held past 2,000 answers would add more; an equal challenger
    passes in 0.71-0.85x the answers (sigma 1: 412 against 582 per arm), and more often by 2,000 (sigma 1.5: 68 %
    against 46 %). The law centred on equal means costs where a challenger is near the limit: with fixed means
    (champion 100 ms, sd 40; the challenger's sd 40 x its ratio; the same script) 1.1x passes after 170 answers
    against the interval's 200, but 1.15x after 580 against 480 and 1.2x after 3,720 against 2,260.

    Worked examples (champion 100 ms, variance 1,600 (sd 40), n = 400; margin 0.25, alpha 0.05;
    ``tau = 25``, the limit is 125 ms):

    * challenger 110 ms, var 1,936, n 400: ``psi = -15``, ``V = 11.09``, ``r = 10.65``, [-25.65, -4.35]: pass
      (pass p 0.0002).
    * challenger 150 ms, var 3,600, n 400: ``psi = +25``, ``V = 15.25``, ``r = 12.33``, [12.67, 37.33]: fail.
    * challenger 130 ms, var 2,704, n 400: ``psi = +5``, ``r = 11.46``, [-6.46, 16.46]: undecided (pass p 1).
    * 150 ms as above but n = 30 on each arm: ``r = 44.64``, [-19.64, 69.64]: undecided, too few requests.
    * challenger 105 ms, var 1,800, n 100: ``psi = -20``, ``r = 20.04``, [-40.04, +0.04]: the interval still
      holds the limit; the pass test rules it out (pass p 0.0154). At 115 ms (var 2,116) neither does (p 1: 15 %
      slower is nearer the limit than the equal arms the law is centred on).
    """
    if mean_champion <= 0 or margin <= 0:
        raise ValueError(f"need a positive champion mean and margin, got {mean_champion}, {margin}")
    k, tau = 1 + margin, margin * mean_champion
    cs = mean_difference_cs(k * mean_champion, k * k * var_champion, n_champion,
                            mean_challenger, var_challenger, n_challenger, tau=tau, alpha=alpha)
    if cs.variance > 0:
        pass_p = float(always_valid_p(no_regression_log_lr(cs.difference + tau, cs.variance, tau)))
    else:  # two constant arms, as the interval: no uncertainty the data can show
        pass_p = 0.0 if cs.difference < 0 else 1.0
    return cs.model_copy(update={"pass_p_value": pass_p})
