"""The rollout's pass side: requests per arm to pass equal arms, and false passes at the null's boundary.

Compares, on the same seeded draws (``lifecycle.simulate``), the pass rule of ``RateTest.rules_out`` (the
no-regression test from its floor of trials, the interval's bound below it) with the rule it replaced on
2026-11-28 (the interval's bound alone), and the test with no floor. Pure arithmetic: no timing, so one run is
the figure (Monte Carlo error ~0.2 points on a 5 % rate at 10,000 runs).

``--latency``: the latency mean's pass (``relative_margin_cs(...).pass_p_value``) against the interval's
``upper < 0``, the same arithmetic vectorised over runs: latencies lognormal (sigma 0.5, 1, 1.5) or bimodal (10 %
of answers 17x slower), margin 0.25, a look every 10 answers per arm from 30 to 2,000; a challenger exactly at
the limit (false passes) and an equal one (answers to pass), 2,000 runs each (Monte Carlo error ~0.5 points);
then, with fixed means, the answers each rule needs to pass a challenger 1.0-1.2x the champion.

    .venv/bin/python bench/pass_rule.py --runs 10000 [--latency]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from lifecycle.sequential import always_valid_p, mixture_radius, no_regression_log_lr
from lifecycle.simulate import Scenario, simulate

# (name, scenario): equal arms (A/A pass speed, looks every 50 as the simulator's default) ...
SPEED = [
    ("errors 1 %, tau 0.04", {"p_champion": 0.01, "p_challenger": 0.05}),
    ("errors 0.1 %, tau 0.02 (infra)", {"p_champion": 0.001, "p_challenger": 0.021, "tau": 0.02}),
    ("success 85 %, tau 0.05", {"p_champion": 0.85, "p_challenger": 0.80, "harmful": "lower", "tau": 0.05,
                                "max_per_arm": 5000}),
    ("success 85 %, tau 0.15 (demo)", {"p_champion": 0.85, "p_challenger": 0.70, "harmful": "lower", "tau": 0.15}),
    ("success 50 %, tau 0.05", {"p_champion": 0.5, "p_challenger": 0.45, "harmful": "lower", "tau": 0.05,
                                "max_per_arm": 5000}),
]
# ... and a challenger exactly tau worse, looked at every 10 requests per arm from the first (false passes).
BOUNDARY = [
    ("1 % -> 5 %", {"p_champion": 0.01, "p_challenger": 0.05}),
    ("2 % -> 6 %", {"p_champion": 0.02, "p_challenger": 0.06}),
    ("0.5 % -> 2.5 %, tau 0.02", {"p_champion": 0.005, "p_challenger": 0.025, "tau": 0.02}),
    ("5 % -> 7 %, tau 0.02", {"p_champion": 0.05, "p_challenger": 0.07, "tau": 0.02}),
    ("0.01 % -> 4.01 %", {"p_champion": 0.0001, "p_challenger": 0.0401}),
    ("0.01 % -> 2.01 %, tau 0.02", {"p_champion": 0.0001, "p_challenger": 0.0201, "tau": 0.02}),
    ("success 85 % -> 80 %, every 5", {"p_champion": 0.85, "p_challenger": 0.80, "harmful": "lower", "tau": 0.05,
                                       "batch": 5}),
]


def measure(runs: int) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {"speed": [], "boundary": []}
    for name, scenario in SPEED:
        r = simulate(Scenario(runs=runs, seed=0, **scenario))
        out["speed"].append({"scenario": name, "rule": r.passing.mean_requests_per_arm,
                             "interval": r.previous_passing.mean_requests_per_arm,
                             "ratio": r.passing.mean_requests_per_arm / r.previous_passing.mean_requests_per_arm,
                             "passed": [r.passing.aa_pass_rate, r.previous_passing.aa_pass_rate]})
    for name, scenario in BOUNDARY:
        s = Scenario(runs=runs, seed=5, **{"batch": 10, "max_per_arm": 3000, **scenario})
        r = simulate(s)
        # The test from the first look, on the same draws: what the floor is for.
        bare = simulate(s.model_copy(update={"pass_min_events": 0})).passing.regression_pass_rate
        out["boundary"].append({"scenario": name, "rule": r.passing.regression_pass_rate,
                                "interval": r.previous_passing.regression_pass_rate, "no_floor": bare})
    return out


def _latencies(rng: np.random.Generator, kind: str, ratio: float, runs: int, n: int) -> np.ndarray:
    if kind == "bimodal":  # 90 % near 40 ms, 10 % near 700 ms; scaled to mean 100 x ratio
        slow = rng.random((runs, n)) < 0.1
        x = np.where(slow, rng.lognormal(np.log(700), 0.3, (runs, n)), rng.lognormal(np.log(40), 0.3, (runs, n)))
        return x * 100 * ratio / ((0.1 * 700 + 0.9 * 40) * np.exp(0.045))
    sigma = float(kind.removeprefix("lognormal "))
    return rng.lognormal(np.log(100 * ratio) - sigma**2 / 2, sigma, (runs, n))


def latency(runs: int = 2000, margin: float = 0.25, alpha: float = 0.05, n_max: int = 2000) -> list[dict]:
    """Per latency law and challenger (at the limit, equal): the share passed by ``n_max`` answers per arm and the
    mean answers at a pass, for the rollout's rule and the interval's, on the same draws. The arithmetic of
    ``relative_margin_cs``: psi = m_b - (1 + margin) m_a, V = s_b^2/n + (1 + margin)^2 s_a^2/n, tau = margin m_a."""
    out = []
    looks = np.arange(30, n_max + 1, 10)
    for kind in ("lognormal 0.5", "lognormal 1.0", "lognormal 1.5", "bimodal"):
        for ratio in (1 + margin, 1.0):
            rng = np.random.default_rng(11)
            a, b = (_latencies(rng, kind, r, runs, n_max) for r in (1.0, ratio))
            sums = [(np.cumsum(x, axis=1), np.cumsum(x * x, axis=1)) for x in (a, b)]
            rule, interval = [], []
            for n in looks:
                (ma, va), (mb, vb) = ((s[:, n - 1] / n, (q[:, n - 1] - s[:, n - 1] ** 2 / n) / (n - 1))
                                      for s, q in sums)
                k = 1 + margin
                psi, v, tau = mb - k * ma, vb / n + k * k * va / n, margin * ma
                rule.append(always_valid_p(no_regression_log_lr(psi + tau, v, tau)) <= alpha)  # as relative_margin_cs
                interval.append(psi + mixture_radius(v, tau, alpha) < 0)
            row = {"latencies": kind, "challenger": "at the limit" if ratio > 1 else "equal"}
            for name, passed in (("rule", rule), ("interval", interval)):
                passed = np.stack(passed, axis=1)
                hit = passed.any(axis=1)
                row[name] = {"passed": round(float(hit.mean()), 4),
                             "mean_answers": round(float(looks[passed.argmax(axis=1)][hit].mean()), 1) if hit.any()
                             else None}
            out.append(row)
    return out


def near_limit(margin: float = 0.25, alpha: float = 0.05) -> list[dict]:
    """Where the law centred on equal means costs: with fixed means and no noise (champion 100 ms, sd 40; the
    challenger's mean at ``ratio`` x, its sd 40 x ratio), the first look (every 10 answers per arm) at which each
    pass rule passes, through ``relative_margin_cs`` itself."""
    from lifecycle.sequential import relative_margin_cs

    out = []
    for ratio in (1.0, 1.05, 1.1, 1.15, 1.2):
        first: dict[str, int | None] = {"rule": None, "interval": None}
        for n in range(10, 20_001, 10):
            cs = relative_margin_cs(100, 1600, n, 100 * ratio, (40 * ratio) ** 2, n, margin=margin, alpha=alpha)
            first["rule"] = first["rule"] or (n if cs.pass_p_value <= alpha else None)
            first["interval"] = first["interval"] or (n if cs.upper < 0 else None)
            if all(first.values()):
                break
        out.append({"ratio": ratio, **first})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--latency", action="store_true", help="also the latency mean's pass (2,000 runs a cell)")
    args = parser.parse_args()
    out = measure(args.runs)
    if args.latency:
        out["latency"] = latency()
        out["near_limit"] = near_limit()
    print(f"{args.runs} runs a cell; requests per arm to pass equal arms (looks every 50):")
    for row in out["speed"]:
        print(f"  {row['scenario']:32s} rule {row['rule']:7.1f}  interval {row['interval']:7.1f}  "
              f"ratio {row['ratio']:.3f}  passed {row['passed'][0]:.1%} / {row['passed'][1]:.1%}")
    print("false passes, challenger exactly tau worse, a look every 10 requests per arm (5 for success):")
    for row in out["boundary"]:
        print(f"  {row['scenario']:32s} rule {row['rule']:.2%}  interval {row['interval']:.2%}  "
              f"test with no floor {row['no_floor']:.2%}")
    for row in out.get("latency", []):
        print(f"  latency {row['latencies']:14s} challenger {row['challenger']:12s} rule {row['rule']}  "
              f"interval {row['interval']}")
    for row in out.get("near_limit", []):
        print(f"  latency fixed means {row['ratio']:.2f}x: first pass at {row['rule']} answers a side "
              f"(interval: {row['interval']})")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
