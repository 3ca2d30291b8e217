"""The micro-batcher's rejoin wait on and off through the gateway over HTTP (bench/RESULTS.md "The rejoin wait").

bench/rejoin_bench.py measures the wait in process; here real requests go through the gateway on loopback with the
``openai`` client (HTTP, validation, routing, guardrails, the prediction log: everything a caller's request passes).
The registry is a temporary one as bench/gateway_overhead.py makes it (the cached demo base as champion v1, a 30-step
adapter as v2) with v2 at ``--challenger-percent`` (sticky by user). One server; each round runs every cell on each
side of bench/rejoin_bench.py (the wait off, on, on without its suspension), switched on the gateway's one batcher,
in an order that rotates by round, so each round gives one paired ratio to ``off`` per cell and side:

- ``closed_C``: C callers, each its own client and user, sending again as soon as it is answered, for ``--seconds``;
- ``open_L``: independent arrivals (a seeded Poisson process, a new user each request, the same arrivals on both
  sides) at L x the answers/s of 32 closed-loop callers without the wait (measured first); latency from the planned
  arrival time.

Reports answers/s and p50 / p99 latency per cell and side, and the paired ratios to ``off`` (median, range; a round
without answers on either side is left out of them).

The clients run in the gateway's process (as in bench/gateway_overhead.py): they share its 2 cores and its GIL, whose
5 ms switch interval is longer than the wait's 3 ms gap, so arrivals reach the batcher in bursts that the clients'
threads shape; both sides get the same.

Run:  ``.venv/bin/python bench/rejoin_http.py [--concurrency 8,16 --open-loads 0.3,0.6 --seconds 5 --rounds 6]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SLM_ADMIN_TOKEN", "bench-token")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway_bench  # noqa: E402  (bench/ is not a package; the path line above makes these imports work)
import gateway_overhead  # noqa: E402
import rejoin_bench  # noqa: E402
import shapes  # noqa: E402

PROMPTS = gateway_bench.PROMPTS


def client(url: str):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=60)


class Tally:
    """Answers' latencies and failures of one cell, from any thread."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.failed = 0
        self._lock = threading.Lock()

    def ask(self, api, model: str, user: str, i: int, since: float) -> None:
        """One chat completion; its latency counted from ``since`` (perf_counter), or a failure."""
        try:
            api.chat.completions.create(model=model, user=user,
                                        messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}])
        except Exception:
            with self._lock:
                self.failed += 1
        else:
            with self._lock:
                self.latencies.append((time.perf_counter() - since) * 1000)

    def cell(self, elapsed: float) -> dict:
        return {"answers_per_s": round(len(self.latencies) / elapsed, 2), "answers": len(self.latencies),
                "failed": self.failed,
                "p50_ms": round(shapes.pct(self.latencies, 50), 2) if self.latencies else None,
                "p99_ms": round(shapes.pct(self.latencies, 99), 2) if self.latencies else None,
                "load_1min": round(os.getloadavg()[0], 2)}


def closed(url: str, model: str, callers: int, seconds: float) -> dict:
    """``callers`` closed-loop callers (each its own client and sticky user) for ``seconds``."""
    tally, stop = Tally(), time.monotonic() + seconds

    def caller(k: int) -> None:
        api, i = client(url), 0
        while time.monotonic() < stop:
            tally.ask(api, model, f"closed-{k}", k + i, time.perf_counter())
            i += 1

    return tally.cell(shapes.in_threads(callers, caller))


def open_loop(url: str, model: str, rate: float, seconds: float, seed: int) -> dict:
    """Seeded Poisson arrivals at ``rate`` a second for ``seconds`` (a new user each), each sent at its time by a
    pool of clients whatever came back; every answer awaited. Latency from the planned arrival time."""
    plan, tally, local = shapes.poisson_times(rate, seconds, seed), Tally(), threading.local()

    def send(i: int, due: float) -> None:
        if not hasattr(local, "api"):
            local.api = client(url)
        tally.ask(local.api, model, f"open-{seed}-{i}", i, due)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=64) as pool:
        for i, at in enumerate(plan):
            delay = start + at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(send, i, start + at)
    return tally.cell(time.perf_counter() - start)


def run(concurrency: list[int], open_loads: list[float], seconds: float, rounds: int, percent: int) -> dict:
    import httpx

    from serving.server import BackgroundServer

    with tempfile.TemporaryDirectory(prefix="slm-rejoin-http-") as tmp:
        gateway_overhead.temporary_registry(Path(tmp))
        from registry.service import open_registry
        from serving.app import build_app, load_serve_config

        registry = open_registry()
        config = load_serve_config()
        app, state = build_app(config, registry)
        batcher = state.batcher
        sides = rejoin_bench.sides()
        defaults = {"rejoin_share": batcher.rejoin_share, "rejoin_suspend_after": batcher.rejoin_suspend_after}

        def use(side: str) -> None:  # the same batcher, its wait switched, and its count of fruitless waits reset
            for key, value in {**defaults, **sides[side]}.items():
                setattr(batcher, key, value)
            batcher._fruitless = 0

        report = {"benchmark": "rejoin wait on / off over HTTP", "rounds": rounds, "seconds_per_cell": seconds,
                  "challenger_percent": percent, "sides": sides,
                  "rejoin": {"share": config.rejoin_share, "max_ms": config.rejoin_max_ms,
                             "gap_ms": config.rejoin_gap_ms},
                  "machine_before": shapes.machine("cpu")}
        with BackgroundServer(app) as server:
            versions = [v for v in registry.store.list_versions(state.model) if v.number != state.live.split.champion]
            httpx.put(f"{server.url}/admin/split", json={"challenger": versions[-1].number,
                      "challenger_percent": percent, "reason": "rejoin bench"},
                      headers=gateway_bench.ADMIN).raise_for_status()
            time.sleep(3 * config.split_poll_s + 1)
            use("off")
            closed(server.url, state.model, 8, 3.0)  # warm-up: connections, first-call paths
            capacity = closed(server.url, state.model, 32, seconds)["answers_per_s"]
            report["capacity_per_s"] = capacity
            cells = {f"closed_{c}": (lambda r, c=c: closed(server.url, state.model, c, seconds)) for c in concurrency}
            cells.update({f"open_{load}": (lambda r, load=load: open_loop(server.url, state.model, load * capacity,
                                                                          seconds, r)) for load in open_loads})
            raw = {(cell, side): [] for cell in cells for side in sides}
            for r in range(rounds):
                for cell, measure in cells.items():
                    for side in rejoin_bench.rotated(list(sides), r):
                        use(side)
                        before = dict(batcher.rejoin_counts)
                        row = measure(r)
                        row["rejoin_counts"] = {k: v - before[k] for k, v in batcher.rejoin_counts.items()}
                        raw[(cell, side)].append(row)
                print(f"round {r + 1}/{rounds}: " + ", ".join(
                    f"{cell} {side} {rows[-1]['answers_per_s']}/s p99 {rows[-1]['p99_ms']}"
                    for (cell, side), rows in raw.items()), file=sys.stderr, flush=True)
            state.writer.flush(timeout=60)
        registry.close()
    report["results"] = {}
    for cell in cells:
        row = {side: {key: shapes.spread_of(raw[(cell, side)], key, 2)
                      for key in ("answers_per_s", "p50_ms", "p99_ms")} for side in sides}
        row["failed"] = sum(x["failed"] for side in sides for x in raw[(cell, side)])
        for side in sides:
            row[side]["rejoin_counts"] = shapes.summed([x["rejoin_counts"] for x in raw[(cell, side)]])
        row.update(shapes.over_off({side: raw[(cell, side)] for side in sides}, ("answers_per_s", "p50_ms", "p99_ms")))
        report["results"][cell] = row
    report["machine_after"] = shapes.machine("cpu")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="8,16", help="closed-loop caller counts, comma-separated")
    parser.add_argument("--open-loads", default="0.3,0.6",
                        help="shares of capacity for independent arrivals, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="per cell per side per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--challenger-percent", type=int, default=50)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    shapes.emit(run([int(c) for c in args.concurrency.split(",") if c],
                    [float(x) for x in args.open_loads.split(",") if x], args.seconds, args.rounds,
                    args.challenger_percent), args.json_out)


if __name__ == "__main__":
    main()
