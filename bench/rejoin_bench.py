"""The micro-batcher's rejoin wait on and off, side by side (serving/batcher.py; bench/RESULTS.md "The rejoin wait").

The claim: closed-loop callers (each sends its next request as soon as the last is answered) split into cohorts
without the wait (eight callers: batches of 1 and 7), and the wait makes every mode faster. Each cell is a closed
loop of ``concurrency`` callers through ``serving.batcher.MicroBatcher`` into ``serving.backend.InProcessBackend``
for ``--seconds`` (bench/two_versions_bench.py's ``measure``), with the gateway's rejoin wait (``on``) and without
it (``off``, ``rejoin_share=0``) and with it but never suspended (``on_always``: the wait before it learned to
stop under independent arrivals), run back to back in an order that rotates by round, so each round gives one
paired ratio to ``off`` per cell and side. Cells: ``one`` (the challenger merged into the base, served alone) and
``auto_50_50`` (champion and challenger at 50/50 on the default backend). Reports tokens/s, rows per batch and p99
of each, the paired ratio (median over rounds, and its range), and each side's two-versions / one-model ratio.

The wait's cost (``--open-loads``): where callers do not come back, a batch may wait up to the 3 ms gap for
company that is not coming. Each load is a share of the cell's capacity (its requests/s in a closed loop of 32
callers without the wait, measured first); each round sends the SAME seeded Poisson arrivals through the batcher
on every side (order rotating by round) and reports p50 / p99 latency from the planned arrival time, and their
paired ratios to ``off``.

Run:  ``.venv/bin/python bench/rejoin_bench.py --shape demo [--concurrency 8,32 --seconds 3 --rounds 6]
[--open-loads 0.3,0.6,0.85]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import shapes  # noqa: E402  (bench/ is not a package; the path line above makes this import work)
import two_versions_bench as tvb  # noqa: E402

CELLS = {"one": None, "auto_50_50": 0.5}  # cell -> champion share (None: the one merged model)


def sides() -> dict[str, dict]:
    """The batcher settings compared: the wait off, on (the gateway's defaults), and on without its suspension
    (``rejoin_suspend_after`` None: the wait as it was before 2026-11-28's session 10)."""
    from serving.batcher import REJOIN_SHARE

    return {"off": {"rejoin_share": 0.0}, "on": {"rejoin_share": REJOIN_SHARE},
            "on_always": {"rejoin_share": REJOIN_SHARE, "rejoin_suspend_after": None}}


def rotated(names: list[str], r: int) -> list[str]:
    """Round ``r``'s order: each side goes first, second, ... in turn (drift in machine speed hits all alike)."""
    k = r % len(names)
    return names[k:] + names[:k]


def run(shape: str, concurrency: list[int], seconds: float, rounds: int, threads: int, adapter_steps: int,
        open_loads: list[float] = ()) -> dict:
    import torch

    from serving.batcher import REJOIN_GAP_S, REJOIN_MAX_S, REJOIN_PROBE_EVERY, REJOIN_SHARE, REJOIN_SUSPEND_AFTER

    torch.set_num_threads(threads)
    _, evals = shapes.task_pairs(eval_rows=300)
    prompts = [p.prompt for p in evals]
    settings = sides()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base_dir, origin = shapes.build_base(shape, root / "base")
        adapters = {name: tvb.train_adapter(base_dir, root / name, adapter_steps, seed, "cpu", threads)
                    for name, seed in ((tvb.CHAMPION, 1), (tvb.CHALLENGER, 0))}
        models = tvb.backends(base_dir, tvb.merge(base_dir, adapters[tvb.CHALLENGER], root / "merged"), adapters,
                              ["auto"], "cpu", threads)
        models["auto_50_50"] = models.pop("auto")
        for name, backend in models.items():  # warm-up
            backend.generate(prompts[:32], [None] * 32 if name == "one" else [tvb.CHAMPION, tvb.CHALLENGER] * 16)
        report = {"benchmark": "rejoin wait on / off", "shape": shape, "base": origin,
                  "parameters": shapes.parameters(base_dir), "seconds_per_cell": seconds, "rounds": rounds,
                  "rejoin": {"share": REJOIN_SHARE, "max_s": REJOIN_MAX_S, "gap_s": REJOIN_GAP_S,
                             "suspend_after": REJOIN_SUSPEND_AFTER, "probe_every": REJOIN_PROBE_EVERY},
                  "sides": settings, "machine_before": shapes.machine("cpu"), "results": {}}
        for c in concurrency:
            raw = {(cell, side): [] for cell in CELLS for side in settings}
            for r in range(rounds):
                for cell, share in CELLS.items():
                    for side in rotated(list(settings), r):
                        raw[(cell, side)].append(tvb.measure(models[cell], prompts, share, c, seconds,
                                                             **settings[side]))
                print(f"concurrency {c} round {r + 1}/{rounds}: " + ", ".join(
                    f"{cell} {side} {raw[(cell, side)][-1]['tokens_per_s']}" for cell, side in raw),
                    file=sys.stderr, flush=True)
            report["results"][f"concurrency_{c}"] = summarize(raw, list(settings))
        if open_loads:
            report["open_loop"] = open_loop(models, prompts, settings, open_loads, seconds, rounds)
        report["machine_after"] = shapes.machine("cpu")
    return report


def open_loop(models: dict, prompts: list[str], settings: dict[str, dict], loads: list[float], seconds: float,
              rounds: int) -> dict:
    """Independent (Poisson) arrivals at shares of each cell's capacity, every side on the same arrivals."""
    out: dict[str, dict] = {}
    if not all(load > 0 for load in loads):
        raise SystemExit(f"--open-loads are shares of capacity above 0, got {loads}")
    for cell, share in CELLS.items():
        full = tvb.measure(models[cell], prompts, share, 32, seconds, rejoin_share=0.0)  # capacity: saturated
        capacity = full["requests"] / seconds
        out[cell] = {"capacity_per_s": round(capacity, 2)}
        for load in loads:
            raw: dict[str, list[dict]] = {side: [] for side in settings}
            for r in range(rounds):
                for side in rotated(list(settings), r):
                    raw[side].append(tvb.measure(models[cell], prompts, share, 0, seconds, rate=load * capacity,
                                                 seed=r, **settings[side]))
            print(f"open loop {cell} load {load}: " + ", ".join(
                f"{side} p50 {[x['p50_ms'] for x in rows]} p99 {[x['p99_ms'] for x in rows]}"
                for side, rows in raw.items()), file=sys.stderr, flush=True)
            row = {side: {key: shapes.spread_of(rows, key, 2)
                          for key in ("p50_ms", "p99_ms", "rows_per_batch", "tokens_per_s")}
                   for side, rows in raw.items()}
            row["failed"] = sum(x["failed"] for rows in raw.values() for x in rows)
            for side, rows in raw.items():
                row[side]["rejoin_counts"] = shapes.summed([x["rejoin_counts"] for x in rows])
            row.update(shapes.over_off(raw, ("p50_ms", "p99_ms")))
            out[cell][f"load_{load}"] = row
    return out


def summarize(raw: dict[tuple[str, str], list[dict]], names: list[str]) -> dict:
    out: dict[str, dict] = {}
    for (cell, side), rows in raw.items():
        out.setdefault(cell, {})[side] = {
            "tokens_per_s": shapes.spread([x["tokens_per_s"] for x in rows], 1),
            "rows_per_batch": shapes.spread([x["rows_per_batch"] for x in rows], 2),
            "p99_ms": shapes.spread([x["p99_ms"] for x in rows], 1),
            "rejoin_counts": shapes.summed([x["rejoin_counts"] for x in rows])}
    for cell in CELLS:
        out[cell].update(shapes.over_off({side: raw[(cell, side)] for side in names}, ("tokens_per_s",)))
    for side in names:  # two versions against one model, the same batcher on both (issue #8 item 2's ratio)
        out[f"two_over_one_{side}"] = shapes.ratios(raw[("auto_50_50", side)], raw[("one", side)], "tokens_per_s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="demo", choices=shapes.SHAPE_NAMES)
    parser.add_argument("--concurrency", default="8,32", help="comma-separated caller counts")
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (FACTS.md: set it)")
    parser.add_argument("--adapter-steps", type=int, default=60, help="LoRA steps that make each version's adapter")
    parser.add_argument("--open-loads", default="",
                        help="comma-separated shares of capacity for independent (Poisson) arrivals, e.g. 0.3,0.6,0.85 "
                             "(default: none)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    shapes.emit(run(args.shape, [int(c) for c in args.concurrency.split(",") if c], args.seconds, args.rounds,
                    args.threads, args.adapter_steps, [float(x) for x in args.open_loads.split(",") if x]),
                args.json_out)


if __name__ == "__main__":
    main()
