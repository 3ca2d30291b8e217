"""What a slow shadow costs the served traffic, behind an upstream (vLLM mode), beside no shadow in the same run.

The gateway serves through its upstream backend, pointed at a stub OpenAI-compatible server on loopback that
answers the champion after ``--champion-ms`` and the shadow version after ``--shadow-s`` (a shadow far slower than
the traffic it mirrors). ``--callers`` closed-loop callers send requests for ``--seconds``; each round runs the
split without a shadow and with one, in a fresh random order, after waiting for the copies of the round before to
finish. Per run: the served requests' p50/p99 latency (as the callers see it) and their rate; the shadow copies
sent and shed (``shadow_max_in_flight``). Reported: per round the ratio shadow/no-shadow, and their medians over
the rounds. The registry is a temporary one with two weightless versions: nothing generates in process.

Run: ``.venv/bin/python bench/shadow_bench.py [--rounds 5] [--seconds 8] [--callers 8] [--shadow-s 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL = "intent-router"


def stub_upstream(champion_s: float, shadow_s: float) -> ThreadingHTTPServer:
    delays = {f"{MODEL}:v1": champion_s, f"{MODEL}:v2": shadow_s}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, body: dict) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass

        def do_GET(self) -> None:
            self._send({"object": "list", "data": [{"id": name, "object": "model"} for name in delays]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            time.sleep(delays.get(body.get("model"), 0.0))
            self._send({"id": "cmpl-stub", "object": "text_completion", "model": body.get("model"),
                        "choices": [{"index": 0, "text": "card_arrival", "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})

    class Server(ThreadingHTTPServer):
        request_queue_size = 256
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def temporary_registry(root: Path) -> None:
    """Two versions without weights (the upstream answers for them): v1 champion, v2 the shadow."""
    os.environ["SLM_HOME"] = str(root / "home")
    from lifecycle.prompting import INTENT_V1
    from lifecycle.records import BaseModelRef, Lineage
    from lifecycle.status import VersionStatus
    from registry.service import open_registry

    lineage = Lineage(base_model=BaseModelRef(model_id="local://base/never-loaded", revision="0" * 64),
                      prompt_format=INTENT_V1.identity)
    with open_registry() as reg:
        for _ in (1, 2):
            reg.register(MODEL, staged=None, status=VersionStatus.CANDIDATE, reason="bench", actor="bench",
                         lineage=lineage, evals=[], task="banking77")
        reg.store.promote(MODEL, 1, actor="bench", reason="bench champion")


def set_shadow(shadow: int | None) -> None:
    from lifecycle.routing import TrafficSplit
    from registry.service import open_registry
    from registry.traffic import set_split

    with open_registry() as reg:
        set_split(reg.store, TrafficSplit(model=MODEL, champion=1, shadow=shadow), actor="bench", reason="bench")


def load(url: str, callers: int, seconds: float) -> tuple[list[float], int]:
    """Closed-loop callers for ``seconds``: every served request's latency (s), and the failures."""
    import httpx

    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def caller(k: int) -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while time.monotonic() < stop:
                start = time.perf_counter()
                answer = client.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": "where is my card",
                                                                    "user": f"caller-{k}-{n}"})
                elapsed = time.perf_counter() - start
                with lock:
                    if answer.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        failures[0] += 1
                n += 1

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return latencies, failures[0]


def shed_count(state) -> float:
    """The gateway's ``slm_shadow_shed_total``, all versions."""
    return sum(s.value for m in state.metrics.shadow_shed.collect() for s in m.samples if s.name.endswith("_total"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--champion-ms", type=float, default=5.0)
    parser.add_argument("--shadow-s", type=float, default=2.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="slm-shadow-bench-"))
    temporary_registry(root)
    upstream = stub_upstream(args.champion_ms / 1000, args.shadow_s)
    from serving.app import build_app, load_serve_config
    from serving.server import BackgroundServer
    from serving.upstream import UpstreamConfig

    repo = Path(__file__).resolve().parents[1]
    config = load_serve_config(repo / "configs/serve.yaml").model_copy(update={
        "split_poll_s": 0.1, "upstream": UpstreamConfig(base_url=f"http://127.0.0.1:{upstream.server_port}/v1",
                                                        render_prompt=False, timeout_s=10)})
    app, state = build_app(config)
    rng, rows = random.Random(0), []
    with BackgroundServer(app) as gateway:
        for round_no in range(args.rounds):
            found = {}
            for shadow in rng.sample([None, 2], 2):
                set_shadow(shadow)
                deadline = time.monotonic() + 30
                while state.live.split.shadow != shadow or state._shadow_tasks:  # adopted, last copies done
                    assert time.monotonic() < deadline, "the gateway never settled"
                    time.sleep(0.05)
                shed_before, sent_before = shed_count(state), len(state._shadow_tasks)
                latencies, failures = load(gateway.url, args.callers, args.seconds)
                q = statistics.quantiles(latencies, n=100)
                found["shadow" if shadow else "none"] = {
                    "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "rps": len(latencies) / args.seconds,
                    "failures": failures, "shed": shed_count(state) - shed_before, "in_flight_at_start": sent_before}
            rows.append(found)
            none, slow = found["none"], found["shadow"]
            print(f"round {round_no + 1}: no shadow p50 {none['p50_ms']:.1f} ms p99 {none['p99_ms']:.1f} ms "
                  f"{none['rps']:.0f} req/s | slow shadow p50 {slow['p50_ms']:.1f} ms p99 {slow['p99_ms']:.1f} ms "
                  f"{slow['rps']:.0f} req/s, {slow['shed']:.0f} copies shed | p99 ratio "
                  f"{slow['p99_ms'] / none['p99_ms']:.2f}, rate ratio {slow['rps'] / none['rps']:.2f}", flush=True)
    state.registry.close()
    upstream.shutdown()

    def median(key: str, arm: str) -> float:
        return statistics.median(r[arm][key] for r in rows)

    ratios_p99 = [r["shadow"]["p99_ms"] / r["none"]["p99_ms"] for r in rows]
    ratios_rps = [r["shadow"]["rps"] / r["none"]["rps"] for r in rows]
    print(json.dumps({
        "callers": args.callers, "seconds": args.seconds, "shadow_s": args.shadow_s, "champion_ms": args.champion_ms,
        "none": {k: round(median(k, "none"), 2) for k in ("p50_ms", "p99_ms", "rps")},
        "shadow": {k: round(median(k, "shadow"), 2) for k in ("p50_ms", "p99_ms", "rps", "shed")},
        "p99_ratio_median": round(statistics.median(ratios_p99), 3),
        "p99_ratio_range": [round(min(ratios_p99), 3), round(max(ratios_p99), 3)],
        "rate_ratio_median": round(statistics.median(ratios_rps), 3),
        "rate_ratio_range": [round(min(ratios_rps), 3), round(max(ratios_rps), 3)],
        "failures": sum(r[a]["failures"] for r in rows for a in ("none", "shadow")),
    }, indent=2))


if __name__ == "__main__":
    main()
