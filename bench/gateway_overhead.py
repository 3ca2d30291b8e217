"""What routing + logging add to a gateway request, and what LiteLLM's proxy adds (issue #8, item 1).

Run through ``bench/gateway_bench.py --overhead``. One gateway app, one state, one backend, served on two loopback
ports by two uvicorn servers: on the *full* port every request is routed (sticky weighted split 90/10 from the
registry) and logged (the row's fields queued for the writer, which validates and stores them in batches); on
the *bare* port the same app answers with routing and logging switched off (the champion fixed, no row queued) —
everything else (HTTP, validation, micro-batcher, guardrails, metrics) is the same code. LiteLLM's proxy
(``litellm --config``, its own venv) is put in front of the bare port as the peer: a separate proxy hop, which is
what LiteLLM is. Paths, all ``POST /v1/chat/completions`` over loopback from one httpx client, one request at a
time, interleaved request by request for ``--rounds`` rounds (``bare_again`` is a second path to the bare port: an
A/A pair whose difference is the noise floor of the comparison):

- each round sends every path once per step, in a fresh random order, so no path always follows another;
- gateway added = full - bare (p50 and p99 per round, medians and ranges over rounds);
- LiteLLM added = litellm->bare - bare;
- in-situ: the routing and logging calls timed inside the full path (wall ``perf_counter_ns`` and the thread's CPU
  time around ``LiveModel.assign`` and ``GatewayState.log_answer``, which queues the row's fields) — the cost
  itself, free of the HTTP noise that dominates a p99 difference on a shared 2-core machine. Not counted there:
  the writer thread's work (validating rows into ``Prediction``s, batched SQLite inserts), which the HTTP-level
  difference does include. Until 2026-11-27 the row was validated on the request path (``build_row``, ~53 µs
  CPU p50 in situ, the largest part); it is now the writer's.

The model answers a constant (``Generation`` built without running a model) unless ``--real-model``: what is
measured is the gateway, and a 14 ms generation's jitter would bury a microsecond difference. The registry is a
temporary one (the cached demo base as v1 — random init of its shape when there is none — and a 30-step
adapter as v2), so the run never touches a registry someone else is using.
"""

from __future__ import annotations

import contextvars
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gateway_bench
import shapes

BARE: contextvars.ContextVar[bool] = contextvars.ContextVar("bare", default=False)
ADMIN = gateway_bench.ADMIN
MASTER_KEY = f"sk-bench-{os.getpid()}-{time.time_ns()}"


def switchable(app, bare: bool):
    """The app with routing and logging off (``bare``) or on for every request it serves. The bare server skips
    the app's lifespan: both servers share one state, and only one may close it."""

    async def asgi(scope, receive, send):
        if scope["type"] == "lifespan" and bare:
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        token = BARE.set(bare)
        try:
            await app(scope, receive, send)
        finally:
            BARE.reset(token)

    return asgi


def instrument(state, timings: dict[str, list[int]]) -> None:
    """Switch routing/logging off when BARE is set, and time them when it is not."""
    from lifecycle.routing import Assignment

    champion = state.live.split.champion
    assign, log_answer = state.live.assign, state.log_answer

    def timed(name: str, fn, *args, **kwargs):
        # Wall time includes waiting for the GIL and the CPU (other threads, other jobs on the cores); thread
        # CPU time is the work itself.
        start, cpu = time.perf_counter_ns(), time.thread_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[name].append(time.perf_counter_ns() - start)
            timings[f"{name}_cpu"].append(time.thread_time_ns() - cpu)

    def routed(key, pinned=None):
        return Assignment(version=champion, role="champion") if BARE.get() else timed("route", assign, key, pinned)

    def logged(*args, **kwargs) -> None:  # the whole request-path part of logging: the row's fields built and queued
        if not BARE.get():
            timed("log_row", log_answer, *args, **kwargs)

    state.live.assign, state.log_answer = routed, logged


def constant_model(state) -> None:
    """Answer every prompt with a constant, valid label without running a model (see the module docstring)."""
    from serving.backend import Generation

    label = sorted(state.allowed)[0]

    def generate(prompts, adapters):
        return [Generation(text=f" {label}\n", completion=label, prompt_tokens=12, completion_tokens=4,
                           latency_ms=0.01, adapter=a) for a in adapters]

    state.batcher._generate = generate  # the one seam between batcher and model: the bench's stand-in


def temporary_registry(root: Path) -> None:
    """A registry under ``root`` (SLM_HOME): the cached demo base as champion v1, a 30-step adapter as v2."""
    base_dir, _ = shapes.build_base("demo", root / "base")
    os.environ["SLM_HOME"] = str(root / "home")
    from lifecycle.prompting import INTENT_V1
    from lifecycle.records import BaseModelRef, Lineage
    from lifecycle.status import VersionStatus
    from registry.service import open_registry
    from training.lora import LoraRecipe, train_lora

    train, _ = shapes.task_pairs(train_rows=400)
    with open_registry() as reg:
        uri, revision = reg.artifacts.put_base("bench", base_dir)
        lineage = Lineage(base_model=BaseModelRef(model_id=uri, revision=revision), prompt_format=INTENT_V1.identity)
        v1 = reg.register("intent-router", staged=None, status=VersionStatus.CANDIDATE, reason="bench base",
                          actor="bench", lineage=lineage, evals=[], task="banking77")
        reg.store.promote("intent-router", v1.number, actor="bench", reason="bench champion")
        recipe = LoraRecipe(max_steps=30, log_every=10)
        train_lora(reg.base_dir(v1), train, recipe, root / "adapter", threads=1, device="cpu")
        reg.register("intent-router", staged=root / "adapter", status=VersionStatus.CANDIDATE, reason="bench adapter",
                     actor="bench", lineage=lineage.model_copy(update={"parent": "intent-router:v1"}), evals=[],
                     task="banking77")


class LiteLLM:
    """``litellm --config`` in front of ``upstream`` (an OpenAI-compatible base URL), as a child process."""

    def __init__(self, executable: str, upstream: str, model: str, workdir: Path) -> None:
        from serving.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "litellm.yaml"
        config.write_text(f"model_list:\n  - model_name: {model}\n    litellm_params:\n      model: openai/{model}\n"
                          f"      api_base: {upstream}\n      api_key: none\n"
                          "litellm_settings:\n  drop_params: true\n  telemetry: false\n")
        # LiteLLM refuses to start without a master key (no auth otherwise); with one and no database, checking it
        # is a comparison per request, as in a minimal production setup. The same header goes to every path.
        env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True",
               "LITELLM_MASTER_KEY": MASTER_KEY}
        self.log = (workdir / "litellm.log").open("w")
        self.proc = subprocess.Popen([executable, "--config", str(config), "--host", "127.0.0.1", "--port",
                                      str(self.port), "--num_workers", "1"], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, cwd=workdir)
        self.version = subprocess.run([executable.replace("/litellm", "/python"), "-c",
                                       "import importlib.metadata as m; print(m.version('litellm'))"],
                                      capture_output=True, text=True).stdout.strip()

    def wait(self, timeout_s: float = 180) -> float:
        import httpx

        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"litellm exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/health/liveliness", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"litellm did not start in {timeout_s} s; see {self.log.name}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def measure(urls: dict[str, str], model: str, rounds: int, n: int) -> list[dict[str, list[float]]]:
    """``rounds`` rounds of ``n`` requests per path, the paths taking turns request by request."""
    import httpx

    names = list(urls)
    out = []
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as http:
        def send(name: str, i: int) -> float:
            body = {"model": model, "user": f"bench-user-{i % 1000}",
                    "messages": [{"role": "user", "content": gateway_bench.PROMPTS[i % len(gateway_bench.PROMPTS)]}]}
            start = time.perf_counter()
            r = http.post(f"{urls[name]}/v1/chat/completions", json=body)
            elapsed = (time.perf_counter() - start) * 1000
            r.raise_for_status()
            return elapsed

        for i in range(30):  # warm-up: connections, first-call paths
            for name in names:
                send(name, i)
        rng = random.Random(0)
        for r in range(rounds):
            ms: dict[str, list[float]] = {name: [] for name in names}
            for i in range(n):
                # A fresh random order each time: with a fixed rotation every path always follows the same
                # neighbour, and LiteLLM's after-request work then lands on whichever path comes next.
                for name in rng.sample(names, len(names)):
                    ms[name].append(send(name, i))
            ms["load_1min"] = [os.getloadavg()[0]]
            out.append(ms)
            print(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{k} p50 {shapes.pct(v, 50):.2f} p99 {shapes.pct(v, 99):.2f}" for k, v in ms.items()
                if k != "load_1min"), file=sys.stderr, flush=True)
    return out


def summarize(rounds: list[dict[str, list[float]]], timings: dict[str, list[int]]) -> dict:
    def added(path: str, q: float) -> list[float]:
        return [shapes.pct(r[path], q) - shapes.pct(r["bare"], q) for r in rounds]

    paths = [k for k in rounds[0] if k != "load_1min"]
    report = {"paths_ms": {p: {"p50": shapes.spread([shapes.pct(r[p], 50) for r in rounds]),
                               "p99": shapes.spread([shapes.pct(r[p], 99) for r in rounds])} for p in paths},
              "load_1min_per_round": [round(r["load_1min"][0], 2) for r in rounds]}
    report["gateway_added_ms"] = {"p50": shapes.spread(added("full", 50)), "p99": shapes.spread(added("full", 99))}
    report["a_a_noise_ms"] = {"p50": shapes.spread(added("bare_again", 50)),
                              "p99": shapes.spread(added("bare_again", 99))}
    report["in_situ_us"] = {name: {"p50": round(shapes.pct(v, 50) / 1000, 2), "p99": round(shapes.pct(v, 99) / 1000, 2),
                                   "n": len(v)} for name, v in timings.items()}
    for suffix in ("", "_cpu"):  # per request: the three parts summed (requests were sequential, lists aligned)
        per_request = [sum(parts) / 1000 for parts in zip(*(timings[k + suffix] for k in ("route", "log_row")),
                                                          strict=True)]
        report["in_situ_us"][f"routing_plus_logging{suffix}"] = {"p50": round(shapes.pct(per_request, 50), 2),
                                                                 "p99": round(shapes.pct(per_request, 99), 2)}
    if "litellm" in paths:
        report["litellm_added_ms"] = {"p50": shapes.spread(added("litellm", 50)),
                                      "p99": shapes.spread(added("litellm", 99))}
        lite_p99 = report["litellm_added_ms"]["p99"]["median"]
        ours_http = report["gateway_added_ms"]["p99"]["median"]
        ours_situ = report["in_situ_us"]["routing_plus_logging"]["p99"] / 1000
        report["ratio_litellm_over_gateway_p99"] = {
            "in_situ": round(lite_p99 / ours_situ, 1) if ours_situ > 0 else None,
            "http_difference": round(lite_p99 / ours_http, 1) if ours_http > 0 else "gateway difference <= 0 (noise)"}
    report["targets"] = {
        "gateway_added_p99_le_0_2_ms_http": report["gateway_added_ms"]["p99"]["median"] <= 0.2,
        "gateway_added_p99_le_0_2_ms_in_situ": report["in_situ_us"]["routing_plus_logging"]["p99"] <= 200}
    if "litellm" in paths:
        ratio = report["ratio_litellm_over_gateway_p99"]
        report["targets"]["ge_10x_under_litellm_in_situ"] = (ratio["in_situ"] or 0) >= 10
        report["targets"]["ge_10x_under_litellm_http"] = isinstance(ratio["http_difference"], float) and \
            ratio["http_difference"] >= 10
    return report


def main(args) -> dict:
    from serving.server import BackgroundServer

    with tempfile.TemporaryDirectory(prefix="slm-overhead-") as tmp:
        tmp = Path(tmp)
        temporary_registry(tmp)
        from registry.service import open_registry
        from serving.app import build_app, load_serve_config

        registry = open_registry()

        app, state = build_app(load_serve_config(), registry)
        adapters = [v for v in registry.store.list_versions(state.model) if v.number != state.live.split.champion]
        if not args.real_model:
            constant_model(state)
        timings: dict[str, list[int]] = {k: [] for part in ("route", "log_row")
                                         for k in (part, f"{part}_cpu")}
        report = {"date": time.strftime("%Y-%m-%d"), "model": "constant answer" if not args.real_model else "real",
                  "rounds": args.rounds, "requests_per_path_per_round": args.requests,
                  "machine_before": shapes.machine("cpu")}
        with BackgroundServer(switchable(app, False)) as full, BackgroundServer(switchable(app, True)) as bare:
            import httpx

            if adapters:
                httpx.put(f"{full.url}/admin/split", json={"challenger": adapters[-1].number, "challenger_percent": 10,
                          "reason": "overhead bench 90/10"}, headers=ADMIN).raise_for_status()
                time.sleep(3 * state.config.split_poll_s + 1)
            report["split"] = {"champion": state.live.split.champion, "challenger": state.live.split.challenger,
                               "challenger_percent": state.live.split.challenger_percent}
            instrument(state, timings)
            # "bare_again" hits the bare server once more: an A/A pair that shows the noise of a difference.
            urls = {"full": full.url, "bare": bare.url, "bare_again": bare.url}
            lite = None
            if args.litellm and Path(args.litellm).is_file():
                lite = LiteLLM(args.litellm, f"{bare.url}/v1", state.model, tmp)
                report["litellm"] = {"version": lite.version, "startup_s": round(lite.wait(), 1)}
                urls["litellm"] = lite.url
            else:
                report["litellm"] = f"not run: {args.litellm} not found (install it in .venv-bench, see RESULTS.md)"
            try:
                rounds = measure(urls, state.model, args.rounds, args.requests)
            finally:
                if lite:
                    lite.close()
            if adapters:
                httpx.put(f"{full.url}/admin/split", json={"reason": "overhead bench done"},
                          headers=ADMIN).raise_for_status()
        report.update(summarize(rounds, timings))
        report["machine_after"] = shapes.machine("cpu")
        registry.close()
    return report
