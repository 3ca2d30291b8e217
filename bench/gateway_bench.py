"""Gateway benchmarks, each beside its baseline in the same run (issue #3; results in bench/RESULTS.md).

1. Added latency: the same prompts sent one at a time (a) straight to the in-process backend and (b)
   through the gateway over HTTP on loopback (routing, micro-batcher, guardrails, prediction log,
   metrics). Reports p50/p99 of each and the difference of the medians.
2. Two live versions against one merged model: closed-loop load at concurrency 1, 8 and 32 through the
   micro-batcher; tokens/s and p99 latency for (a) the challenger's adapter merged into the base weights
   (one plain model), (b) champion + challenger unmerged at 90/10 and (c) at 50/50 (mixed batches).
3. The 90/10 split on N requests through the gateway: observed share, stickiness, log completeness.
   (Two versions against one merged model at concurrency 1/8/32 has its own script now, with ``--device``:
   bench/two_versions_bench.py. Section 2 here is kept for the figures of issue #3.)
4. ``--overhead`` (issue #8, item 1): what routing + logging add, and what LiteLLM's proxy adds, in one
   interleaved run — see :func:`overhead`.

Needs a registry with a base champion (v1) and an adapter version (run `make demo` first); ``--overhead`` builds
a temporary one from the cached demo base when there is none.
Run: ``.venv/bin/python bench/gateway_bench.py [--latency-requests 300] [--split-requests 10000]``
     ``.venv/bin/python bench/gateway_bench.py --overhead [--litellm .venv-bench/bin/litellm] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("SLM_ADMIN_TOKEN", "bench-token")

import shapes  # noqa: E402  (bench/ is not a package: run as a script, bench/ is on the path)

PROMPTS = ["I still have not received my card", "my top up failed", "how do I get a virtual card",
           "what is the exchange rate", "I lost my card yesterday", "why was I charged a fee"]
ADMIN = {"Authorization": f"Bearer {os.environ['SLM_ADMIN_TOKEN']}"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(ms: list[float]) -> dict:
    return {"p50_ms": round(pct(ms, 50), 3), "p99_ms": round(pct(ms, 99), 3), "n": len(ms)}


def added_latency(state, url: str, n: int) -> dict:
    import httpx

    backend = state.live.backend
    direct, gateway = [], []
    with httpx.Client(base_url=url) as http:
        for i in range(n):  # interleaved, so drift in machine load hits both sides alike
            prompt = PROMPTS[i % len(PROMPTS)]
            t = time.perf_counter()
            backend.generate([prompt], [None])
            direct.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            r = http.post("/v1/completions", json={"model": state.model, "prompt": prompt})
            gateway.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
    d, g = summary(direct), summary(gateway)
    return {"direct": d, "gateway": g, "added_p50_ms": round(g["p50_ms"] - d["p50_ms"], 3),
            "added_p99_ms": round(g["p99_ms"] - d["p99_ms"], 3)}


def closed_loop(batcher, adapters: list[str | None], weights: list[float], concurrency: int, seconds: float) -> dict:
    tokens, latencies, lock = [0], [], threading.Lock()
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        i = 0
        while time.monotonic() < stop:
            u = ((k * 7919 + i * 104729) % 10_000) / 10_000  # deterministic spread over [0, 1)
            adapter = adapters[0] if u < weights[0] else adapters[-1]
            t = time.perf_counter()
            gen = batcher.submit(PROMPTS[(k + i) % len(PROMPTS)], adapter).result()
            with lock:
                latencies.append((time.perf_counter() - t) * 1000)
                tokens[0] += gen.completion_tokens
            i += 1

    elapsed = shapes.in_threads(concurrency, worker)
    return {"tokens_per_s": round(tokens[0] / elapsed, 1), "p99_ms": round(pct(latencies, 99), 1),
            "requests": len(latencies)}


def two_versions_vs_merged(registry, champion, challenger, seconds: float) -> dict:
    from lifecycle.prompting import format_by_identity
    from serving.backend import InProcessBackend
    from serving.batcher import MicroBatcher
    from serving.loader import load_version, open_backend

    unmerged = open_backend(registry, champion)
    name = load_version(unmerged, registry, challenger)
    with tempfile.TemporaryDirectory() as tmp:
        merged_dir = merge_adapter(registry.base_dir(champion), registry.version_dir(challenger), Path(tmp))
        merged = InProcessBackend(merged_dir, format_by_identity(challenger.prompt_format))
        results = {}
        for concurrency in (1, 8, 32):
            row = {}
            for label, backend, adapters, weights in (
                    ("merged", merged, [None], [1.0]),
                    ("split_90_10", unmerged, [None, name], [0.9]),
                    ("split_50_50", unmerged, [None, name], [0.5])):
                batcher = MicroBatcher(backend.generate, max_batch=32)
                row[label] = closed_loop(batcher, adapters, weights, concurrency, seconds)
                batcher.close()
            for label in ("split_90_10", "split_50_50"):
                row[f"{label}_vs_merged"] = round(row[label]["tokens_per_s"] / row["merged"]["tokens_per_s"], 3)
            results[f"concurrency_{concurrency}"] = row
    return results


def merge_adapter(base_dir: Path, adapter_dir: Path, out: Path) -> Path:
    from transformers import AutoTokenizer

    from serving.backend import merged_model

    merged_model(base_dir, adapter_dir).save_pretrained(out / "merged")
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out / "merged")
    return out / "merged"


def split_check(state, url: str, challenger: int, n: int) -> dict:
    import httpx

    started = datetime.now(UTC)
    httpx.put(f"{url}/admin/split", json={"challenger": challenger, "challenger_percent": 10,
                                          "reason": "benchmark 90/10"}, headers=ADMIN).raise_for_status()
    counts, first_seen, sticky_breaks = Counter(), {}, 0
    with httpx.Client(base_url=url) as http:
        for i in range(n):
            user = f"bench-user-{i % (n // 2)}"  # every user sends twice
            r = http.post("/v1/completions", json={"model": state.model, "prompt": PROMPTS[i % 6], "user": user})
            version = r.headers["x-slm-version"]
            counts[version] += 1
            sticky_breaks += first_seen.setdefault(user, version) != version
    httpx.put(f"{url}/admin/split", json={"reason": "benchmark done"}, headers=ADMIN).raise_for_status()
    state.writer.flush(timeout=60)
    logged = state.predictions.window(state.model, started, datetime.now(UTC), limit=None)
    share = counts[f"{state.model}:v{challenger}"] / n
    return {"requests": n, "challenger_share": round(share, 4), "expected": 0.10,
            "binomial_sd": round((0.1 * 0.9 / (n // 2)) ** 0.5, 4), "sticky_breaks": sticky_breaks,
            "logged_served": sum(p.served for p in logged)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--split-requests", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput cell")
    parser.add_argument("--overhead", action="store_true", help="only section 4: routing+logging and LiteLLM")
    parser.add_argument("--rounds", type=int, default=5, help="--overhead: interleaved rounds")
    parser.add_argument("--requests", type=int, default=400, help="--overhead: requests per path per round")
    parser.add_argument("--litellm", default=str(Path(__file__).resolve().parents[1] / ".venv-bench/bin/litellm"),
                        help="--overhead: the litellm CLI (its own venv: it conflicts with the pins)")
    parser.add_argument("--real-model", action="store_true",
                        help="--overhead: generate with the model instead of a constant answer")
    args = parser.parse_args()
    if args.overhead:
        import gateway_overhead

        print(json.dumps(gateway_overhead.main(args), indent=2))
        return

    from registry.service import open_registry
    from serving.app import build_app, load_serve_config
    from serving.server import BackgroundServer

    registry = open_registry()
    champion = registry.get("champion")
    adapters = [v for v in registry.store.list_versions(champion.model)
                if (registry.version_dir(v) / "adapter_config.json").is_file() and v.status.value == "candidate"]
    if not adapters:
        raise SystemExit("no candidate adapter version in the registry: run `make demo` first")
    challenger = registry.store.get_version(champion.model, adapters[0].number)
    app, state = build_app(load_serve_config(), registry)
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "champion": champion.ref,
              "challenger": challenger.ref}
    with BackgroundServer(app) as server:
        report["added_latency"] = added_latency(state, server.url, args.latency_requests)
        report["split_90_10"] = split_check(state, server.url, challenger.number, args.split_requests)
    report["two_versions_vs_merged"] = two_versions_vs_merged(registry, champion, challenger, args.seconds)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
