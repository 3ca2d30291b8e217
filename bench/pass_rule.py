"""The rollout's pass side: requests per arm to pass equal arms, and false passes at the null's boundary.

Compares, on the same seeded draws (``lifecycle.simulate``), the pass rule of ``RateTest.rules_out`` (the
no-regression test from its floor of trials, the interval's bound below it) with the rule it replaced on
2026-11-28 (the interval's bound alone), and the test with no floor. Pure arithmetic: no timing, so one run is
the figure (Monte Carlo error ~0.2 points on a 5 % rate at 10,000 runs).

    .venv/bin/python bench/pass_rule.py --runs 10000
"""

from __future__ import annotations

import argparse
import json

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    out = measure(args.runs)
    print(f"{args.runs} runs a cell; requests per arm to pass equal arms (looks every 50):")
    for row in out["speed"]:
        print(f"  {row['scenario']:32s} rule {row['rule']:7.1f}  interval {row['interval']:7.1f}  "
              f"ratio {row['ratio']:.3f}  passed {row['passed'][0]:.1%} / {row['passed'][1]:.1%}")
    print("false passes, challenger exactly tau worse, a look every 10 requests per arm (5 for success):")
    for row in out["boundary"]:
        print(f"  {row['scenario']:32s} rule {row['rule']:.2%}  interval {row['interval']:.2%}  "
              f"test with no floor {row['no_floor']:.2%}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
