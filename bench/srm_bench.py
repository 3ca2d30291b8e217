"""The rollout's sample-ratio check, looked at again and again: false mismatches on a sound split, and callers to
catch a broken one — the chi-square test at every look (the check until 2026-11-29) against the beta-binomial
mixture test (``lifecycle.srm``), whose p-value stays valid however often the stage looks.

A stage's window gains callers as it runs, and the rollout checks the split at every look: ``--every`` new
callers a look (arms together), up to ``--max-callers``. Under a sound split each new caller lands on the
challenger's arm with the planned share; a broken one sends it there with another. Pure arithmetic on seeded draws:
no timing, so one run is the figure (Monte Carlo error ~0.2 points on a 1 % rate at 10,000 runs).

    .venv/bin/python bench/srm_bench.py --runs 10000
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from lifecycle.srm import PRIOR_CONCENTRATION, mixture_p_value

THRESHOLD = 0.001
# (planned challenger share, the share a broken split delivers); planned == delivered: a sound split.
CASES = [(0.5, 0.5), (0.25, 0.25), (0.05, 0.05),
         (0.5, 0.4), (0.5, 0.45), (0.5, 0.0), (0.25, 0.15), (0.25, 0.2), (0.05, 0.025), (0.05, 0.1), (0.05, 0.0)]


def chi2_p(b: np.ndarray, n: np.ndarray, s: float) -> np.ndarray:
    chi2 = (b - n * s) ** 2 / (n * s) + ((n - b) - n * (1 - s)) ** 2 / (n * (1 - s))
    return np.vectorize(lambda c: math.erfc(math.sqrt(c / 2)))(chi2)


def first_look(rejected: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Callers at each run's first rejection; inf where it never rejected."""
    hit = rejected.any(axis=1)
    return np.where(hit, sizes[rejected.argmax(axis=1)], np.inf)


def measure(runs: int, every: int, max_callers: int, concentrations: list[float]) -> list[dict[str, object]]:
    sizes = np.arange(every, max_callers + 1, every)
    out = []
    for i, (planned, delivered) in enumerate(CASES):
        rng = np.random.default_rng(i)
        b = np.cumsum(rng.binomial(every, delivered, size=(runs, len(sizes))), axis=1)
        n = np.broadcast_to(sizes, b.shape)
        rules = {"chi2 every look": chi2_p(b, n, planned) < THRESHOLD,
                 **{f"mixture k={k:g}": mixture_p_value(b, n, planned, k) < THRESHOLD for k in concentrations}}
        row: dict[str, object] = {"planned": planned, "delivered": delivered}
        for name, rejected in rules.items():
            stops = first_look(rejected, sizes)
            caught = np.isfinite(stops)
            row[name] = {"rate": float(caught.mean()),
                         "median_callers": float(np.median(stops[caught])) if caught.any() else None}
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=10, help="new callers a look, arms together")
    parser.add_argument("--max-callers", type=int, default=4_000)
    parser.add_argument("--concentrations", default=f"1,{PRIOR_CONCENTRATION:g},100",
                        help="the mixture prior's concentrations to compare (the shipped one is "
                             f"{PRIOR_CONCENTRATION:g})")
    args = parser.parse_args()
    ks = [float(k) for k in args.concentrations.split(",")]
    rows = measure(args.runs, args.every, args.max_callers, ks)
    print(json.dumps({"runs": args.runs, "every": args.every, "max_callers": args.max_callers,
                      "threshold": THRESHOLD, "rows": rows}, indent=1))
    rules = [k for k in rows[0] if k not in ("planned", "delivered")]
    print(f"\n| planned -> delivered | {' | '.join(rules)} |\n|---|{'---|' * len(rules)}")
    for r in rows:
        cells = []
        for k in rules:
            c = r[k]
            med = "-" if c["median_callers"] is None else f"{c['median_callers']:.0f}"
            cells.append(f"{100 * c['rate']:.2f} % ({med})")
        print(f"| {r['planned']:g} -> {r['delivered']:g} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
