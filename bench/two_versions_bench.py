"""Two live versions against one merged model, through the in-process backend (issue #8, item 2).

The question: what does serving champion + challenger side by side cost against serving one model? Cells, each a
closed loop of ``concurrency`` callers through ``serving.batcher.MicroBatcher`` (max batch 32, as the gateway)
into ``serving.backend.InProcessBackend`` — the code the gateway serves with — for ``--seconds``:

- ``one``: the baseline, the challenger's adapter merged into the base weights, served alone (one plain model);
- ``fused_90_10`` / ``fused_50_50``: champion + challenger on one backend in ``adapter_mode="fused"`` (what
  ``auto`` picks: one base with the majority version merged in, the other as a per-row low-rank delta inside
  the same forward pass), split 90/10 and 50/50 by caller request;
- ``auto_90_10`` / ``auto_50_50``: the default mode: fused, plus a merged copy per version (small models), so a
  batch of one non-home version runs plain; on models up to ``serving.backend.STACK_MAX_PARAMS`` a mixed batch of
  up to ``STACK_MAX_ROWS`` rows whose version groups are (nearly) equal runs as one stacked pass (one batched
  matmul per Linear over the versions' full weights), and one whose groups differ more (up to half its rows of
  padding) reads its prompts fused and stacks its decode steps only; a mixed batch whose version groups all hold
  at least ``SPLIT_MIN_ROWS`` rows runs as plain passes on the copies; the other mixed batches take the fused pass;
- ``auto_nosplit_90_10`` / ``auto_nosplit_50_50``: auto with that split turned off (``split_min_rows=None``),
  ``auto_nostack_*``: auto without stacked passes (``stack_max_params=None``, the default before them), and
  ``auto_nodecodestack_*``: auto whose unequal groups never stack their decode steps alone
  (``stack_max_decode_padding=0``, the default before session 7), and ``auto_nobigstack_*``: auto that stacks
  batches of at most 16 rows (``stack_max_rows=16``: with two versions, the paths of the default before session 14),
  for a before/after inside one run;
- ``merged_90_10`` / ``merged_50_50``: the same in ``adapter_mode="merged"`` (a merged copy per version, one
  ``generate`` per version in a mixed batch: the default before fused mode);
- ``unmerged_90_10`` / ``unmerged_50_50``: the same in ``adapter_mode="unmerged"`` (one base, peft adapters).

In fused mode the home (the version merged into the base) follows the traffic: after the warm-up and the
first 90/10 cell it is the champion, as in production; at 50/50 it stays where it is (the move needs a 2:1
majority), so half the rows take the delta path — the harder case. The report names the home at the end.

Both versions are real adapters, trained by ``training.lora.train_lora`` with the shipped recipe for
``--adapter-steps`` (champion seed 1, challenger seed 0) — as after the first promotion, when the champion is an
adapter too. Why not the bare base as champion: on the random-init shapes the bare base never writes the stop
token, so its rows would always run to ``max_new_tokens`` while the adapters stop early, and tokens/s would
compare output lengths, not serving cost. Each cell reports tokens per request so that stays visible.
With ``--same-adapter`` both versions load the challenger's adapter (two names, one set of weights): every cell then
writes the same answers (up to float rounding: the fused delta of equal factors cancels to a rounding error), so
tokens/s compares serving cost alone. Two different adapters write answers of different lengths (on the pretrained
demo base the champion's are shorter: about 6.7 tokens a request against the challenger's 7.3-7.4; bench/RESULTS.md,
"Two live versions", session 14), and a request's prompt costs the same however few tokens it answers with, so a
cell that serves more champion rows reads slower in tokens/s (and faster in requests/s) than the one model with no
serving cost at all; the serving machinery never looks at the weights' values, so equal weights change nothing but
the answers.
Prompts are held-out BANKING77 queries. Cells run interleaved — every round visits every cell, the order rotating,
with a run of ``one`` before the first and after every cell (A-B-A) — and the report gives medians and ranges over
rounds, and ratios to ``one``: the headline ``paired_ratio`` is the median over rounds of each run against the mean
of the two ``one`` runs around it (this machine's speed drifts by 10-30 % within a minute); ``ratio_of_medians``
too.
Only torch/transformers/peft and the project's ``lifecycle``/``training``/``serving.backend``/``serving.batcher``
are imported, so it runs on a GPU machine without web packages (bench/gpu_check.sh).

Run:  ``.venv/bin/python bench/two_versions_bench.py --shape demo [--device cuda] [--seconds 4 --rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import shapes  # noqa: E402  (bench/ is not a package; the path line above makes this import work)

CHAMPION, CHALLENGER = "champion", "challenger"
SPLITS = {"90_10": 0.9, "50_50": 0.5}
# auto with one of its choices turned off, for a before/after inside one run: mode "auto_no<key>".
VARIANTS = {"": {}, "split": {"split_min_rows": None}, "stack": {"stack_max_params": None},
            "decodestack": {"stack_max_decode_padding": 0.0}, "bigstack": {"stack_max_rows": 16}}


def closed_loop(batcher, prompts: list[str], versions: tuple[str | None, str | None], champion_share: float,
                concurrency: int, seconds: float) -> dict:
    """``concurrency`` callers, each sending its next request when the last one returns; a request goes to
    ``versions[0]`` (the champion) when a deterministic spread over [0, 1) falls under ``champion_share``, else to
    ``versions[1]``. ``None`` is a backend's bare model (the baseline's merged model)."""
    tokens, latencies, lock = [0], [], threading.Lock()
    stop = time.monotonic() + seconds

    def caller(k: int) -> None:
        i = 0
        while time.monotonic() < stop:
            u = ((k * 7919 + i * 104729) % 10_000) / 10_000
            adapter = versions[0] if u < champion_share else versions[1]
            t = time.perf_counter()
            gen = batcher.submit(prompts[(k * 31 + i) % len(prompts)], adapter).result()
            with lock:
                latencies.append((time.perf_counter() - t) * 1000)
                tokens[0] += gen.completion_tokens
            i += 1

    elapsed = shapes.in_threads(concurrency, caller)
    return {"tokens": tokens[0], "tokens_per_s": round(tokens[0] / elapsed, 1),
            "tokens_per_request": round(tokens[0] / len(latencies), 2),
            "p50_ms": round(shapes.pct(latencies, 50), 2),
            "p99_ms": round(shapes.pct(latencies, 99), 2), "requests": len(latencies),
            "requests_per_s": round(len(latencies) / elapsed, 3), "load_1min": round(os.getloadavg()[0], 2)}


def open_loop(batcher, prompts: list[str], versions: tuple[str | None, str | None], champion_share: float,
              rate: float, seconds: float, seed: int = 0) -> dict:
    """Independent arrivals: requests at the times of a seeded Poisson process of ``rate`` a second for ``seconds``,
    whether or not earlier ones were answered (callers that do not wait on each other: many users, few requests
    each); then every answer is awaited. The same ``seed`` gives the same arrival times, prompts and versions, so two
    batchers can be compared on identical traffic. Latency is from the planned arrival time, so a sender that falls
    behind its schedule shows as latency, not as a lighter load."""
    import random

    pick = random.Random(seed + 1_000_003)  # prompts and versions: a stream of their own, seeded too
    plan = [(t, prompts[pick.randrange(len(prompts))], versions[0] if pick.random() < champion_share else versions[1])
            for t in shapes.poisson_times(rate, seconds, seed)]
    latencies, tokens, lock, done = [], [0], threading.Lock(), threading.Event()
    left = [len(plan)]

    def answered(future, due: float) -> None:
        with lock:
            try:
                if future.exception() is None:  # a failed request counts as not answered (``failed``)
                    latencies.append((time.perf_counter() - due) * 1000)
                    tokens[0] += future.result().completion_tokens
            finally:
                left[0] -= 1
                if left[0] == 0:
                    done.set()

    start = time.perf_counter()
    for at, prompt, adapter in plan:
        delay = start + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        batcher.submit(prompt, adapter).add_done_callback(lambda f, due=start + at: answered(f, due))
    if plan and not done.wait(timeout=seconds + 600):
        raise RuntimeError(f"{left[0]} of {len(plan)} open-loop requests still unanswered 10 minutes after the last")
    elapsed = time.perf_counter() - start
    return {"tokens": tokens[0], "tokens_per_s": round(tokens[0] / elapsed, 1),
            "tokens_per_request": round(tokens[0] / max(len(latencies), 1), 2),
            "p50_ms": round(shapes.pct(latencies, 50), 2) if latencies else None,
            "p99_ms": round(shapes.pct(latencies, 99), 2) if latencies else None, "requests": len(latencies),
            "requests_per_s": round(len(latencies) / elapsed, 3),
            "failed": len(plan) - len(latencies), "offered_per_s": round(len(plan) / seconds, 2),
            "load_1min": round(os.getloadavg()[0], 2)}


def merge(base_dir: Path, adapter_dir: Path, out: Path) -> Path:
    """The challenger as one plain model (its adapter folded into the base weights): the baseline."""
    from transformers import AutoTokenizer

    from serving.backend import merged_model

    merged_model(base_dir, adapter_dir).save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir, local_files_only=True).save_pretrained(out)
    return out


def train_adapter(base_dir: Path, out: Path, steps: int, seed: int, device: str, threads: int) -> Path:
    from training.lora import LoraRecipe, train_lora

    recipe = LoraRecipe.from_yaml(shapes.REPO / "configs/recipe_lora.yaml")
    recipe = recipe.model_copy(update={"max_steps": steps, "log_every": min(recipe.log_every, steps), "seed": seed})
    train, _ = shapes.task_pairs()
    train_lora(base_dir, train, recipe, out, threads=threads, device=device)
    return out


def backends(base_dir: Path, merged_dir: Path, adapters: dict[str, Path], modes: list[str], device: str,
             threads: int):
    from lifecycle.prompting import INTENT_V1
    from serving.backend import InProcessBackend

    made = {"one": InProcessBackend(merged_dir, INTENT_V1, threads=threads, device=device, adapter_mode="merged")}
    for mode in modes:
        base_mode, _, without = mode.partition("_no")
        if without not in VARIANTS or (without and base_mode != "auto"):
            raise SystemExit(f"unknown mode {mode!r}: a backend adapter mode, or auto_no"
                             + " / auto_no".join(k for k in VARIANTS if k))
        backend = InProcessBackend(base_dir, INTENT_V1, threads=threads, device=device, adapter_mode=base_mode,
                                   **VARIANTS[without])
        for name, folder in adapters.items():
            backend.load_adapter(name, folder)
        made[mode] = backend
    return made


def measure(backend, prompts: list[str], champion_share: float | None, concurrency: int, seconds: float,
            rate: float | None = None, seed: int = 0, **batcher_settings) -> dict:
    """One cell: ``concurrency`` closed-loop callers through a fresh micro-batcher (the gateway's settings but
    ``batcher_settings``, e.g. ``rejoin_share``) into ``backend`` for ``seconds``; ``champion_share`` None: the
    baseline's one model (every request to its bare model). With ``rate``: independent arrivals at that rate instead
    (``open_loop``, ``seed``), ``concurrency`` unused."""
    from serving.batcher import MicroBatcher

    cpu = [0.0, 0]  # the worker thread's CPU seconds (less shaken by other people's load than wall time), batches

    def account(_adapters, _wall, seconds, cpu=cpu):
        cpu[0] += seconds
        cpu[1] += 1

    batcher = MicroBatcher(backend.generate, max_batch=32, on_batch=account, **batcher_settings)
    versions = (None, None) if champion_share is None else (CHAMPION, CHALLENGER)
    share = 1.0 if champion_share is None else champion_share
    cell = (closed_loop(batcher, prompts, versions, share, concurrency, seconds) if rate is None
            else open_loop(batcher, prompts, versions, share, rate, seconds, seed))
    batcher.close()
    cell["cpu_ms_per_token"] = round(cpu[0] * 1000 / max(cell.pop("tokens"), 1), 3)
    cell["rows_per_batch"] = round(cell["requests"] / max(cpu[1], 1), 2)
    cell["rejoin_counts"] = dict(batcher.rejoin_counts)
    return cell


def run(shape: str, device: str, concurrency: list[int], seconds: float, rounds: int, threads: int,
        modes: list[str], adapter_steps: int, rejoin_share: float, work: Path | None = None,
        same_adapter: bool = False) -> dict:
    import torch

    shapes.require_device(device)
    torch.set_num_threads(threads)
    _, evals = shapes.task_pairs(eval_rows=300)
    prompts = [p.prompt for p in evals]
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        root = Path(tmp)
        base_dir, origin = shapes.build_base(shape, root / "base")
        if same_adapter:  # one adapter under both names (module docstring): the same answers in every cell
            folder = train_adapter(base_dir, root / CHALLENGER, adapter_steps, 0, device, threads)
            adapters = {CHAMPION: folder, CHALLENGER: folder}
        else:
            adapters = {name: train_adapter(base_dir, root / name, adapter_steps, seed, device, threads)
                        for name, seed in ((CHAMPION, 1), (CHALLENGER, 0))}
        models = backends(base_dir, merge(base_dir, adapters[CHALLENGER], root / "merged"), adapters, modes,
                          device, threads)
        others = [(f"{m}_{s}", m, share) for m in modes for s, share in SPLITS.items()]
        cells = [("one", "one", 1.0), *others]
        for backend in models.values():  # warm-up: first calls (CUDA context, kernels, allocator) are slow
            mixed = [None] * 32 if backend is models["one"] else [CHAMPION, CHALLENGER] * 16
            backend.generate(prompts[:32], mixed)
        report = {"benchmark": "two live versions vs one merged model", "shape": shape, "base": origin,
                  "parameters": shapes.parameters(base_dir), "modes": {m: models[m].mode for m in modes},
                  "seconds_per_cell": seconds, "rounds": rounds, "max_batch": 32, "rejoin_share": rejoin_share,
                  "same_adapter": same_adapter,
                  "machine_before": shapes.machine(device), "results": {}}
        for mode in modes:  # the version merged into the base: the warm-up leaves none
            if models[mode].mode == "fused":
                models[mode].generate(prompts[:64], [CHAMPION] * 58 + [CHALLENGER] * 6)
                report[f"{mode}_home_before"] = models[mode].home
        for c in concurrency:
            raw: dict[str, list[dict]] = {name: [] for name, _, _ in cells}
            for r in range(rounds):
                # A-B-A: ``one`` runs before the round's first cell and after every cell, and each cell is paired with
                # the mean of the two ``one`` runs around it: the machine's speed drifts by 10-30 % over a minute
                # here, which a pairing across a whole round (35 s and more) does not cancel.
                shift = r % len(others)
                before = measure(models["one"], prompts, None, c, seconds, rejoin_share=rejoin_share)
                raw["one"].append(before)
                for name, key, share in others[shift:] + others[:shift]:
                    cell = measure(models[key], prompts, share, c, seconds, rejoin_share=rejoin_share)
                    after = measure(models["one"], prompts, None, c, seconds, rejoin_share=rejoin_share)
                    cell["baseline_tokens_per_s"] = round((before["tokens_per_s"] + after["tokens_per_s"]) / 2, 1)
                    cell["baseline_requests_per_s"] = round((before["requests_per_s"] + after["requests_per_s"]) / 2, 3)
                    raw[name].append(cell)
                    raw["one"].append(after)
                    before = after
                print(f"concurrency {c} round {r + 1}/{rounds}: "
                      + ", ".join(f"{n} {raw[n][-1]['tokens_per_s']} ({raw[n][-1]['cpu_ms_per_token']} cpu-ms/t)"
                                  + (f" / one {raw[n][-1]['baseline_tokens_per_s']}" if n != "one" else "")
                                  for n in raw), file=sys.stderr, flush=True)
            report["results"][f"concurrency_{c}"] = summarize(raw)
        report["machine_after"] = shapes.machine(device)
        for mode in modes:
            if models[mode].mode == "fused":
                report[f"{mode}_home_after"] = models[mode].home
    return report


def summarize(raw: dict[str, list[dict]]) -> dict:
    out = {}
    one = raw["one"]  # the baseline's runs: one before each round's first cell and one after every cell
    for name, rows in raw.items():
        cell = {"tokens_per_s": shapes.spread([r["tokens_per_s"] for r in rows], 1),
                "p99_ms": shapes.spread([r["p99_ms"] for r in rows], 2),
                "cpu_ms_per_token": shapes.spread([r["cpu_ms_per_token"] for r in rows], 3),
                "p50_ms_median": round(statistics.median(r["p50_ms"] for r in rows), 2),
                "tokens_per_request": round(statistics.median(r["tokens_per_request"] for r in rows), 2),
                "rows_per_batch": round(statistics.median(r["rows_per_batch"] for r in rows), 2),
                "load_1min": [r["load_1min"] for r in rows]}
        if name != "one":
            # Each run against the mean of the two ``one`` runs around it (A-B-A, see run()).
            cell["ratio_per_round"] = shapes.spread([r["tokens_per_s"] / r["baseline_tokens_per_s"] for r in rows], 3)
            # The headline: the median of the paired ratios (a slow minute of the machine hits both sides of a pair).
            cell["paired_ratio"] = cell["ratio_per_round"]["median"]
            # The same pairing on requests/s: where the versions' answers differ in length (module docstring), the
            # truth about serving cost lies between the two ratios; with --same-adapter they agree.
            cell["paired_requests_ratio"] = statistics.median(
                round(r["requests_per_s"] / r["baseline_requests_per_s"], 3) for r in rows)
            cell["ratio_of_medians"] = round(cell["tokens_per_s"]["median"]
                                             / statistics.median(o["tokens_per_s"] for o in one), 3)
            cell["target_0_95x_met"] = cell["paired_ratio"] >= 0.95
            # The same ratio on the worker's CPU time per token (one over it: higher is better, as tokens/s).
            cell["cpu_ratio_of_medians"] = round(statistics.median(o["cpu_ms_per_token"] for o in one)
                                                 / cell["cpu_ms_per_token"]["median"], 3)
        out[name] = cell
    return out


def main() -> None:
    from serving.batcher import REJOIN_SHARE  # imports no torch and no web package

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fails loudly when CUDA is absent)")
    parser.add_argument("--shape", default="demo", choices=shapes.SHAPE_NAMES)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated caller counts")
    parser.add_argument("--seconds", type=float, default=4.0, help="per cell per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (FACTS.md: set it)")
    parser.add_argument("--modes", default="auto,fused,merged,unmerged",
                        help="backend adapter modes to compare; also auto_nosplit / auto_nostack / "
                             "auto_nodecodestack / auto_nobigstack: auto without the split of mixed batches / without "
                             "stacked passes / without decode-only stacking / stacking at most 16 rows (opt-in: "
                             "bench/gpu_check.sh's time budget counts the default cells)")
    parser.add_argument("--adapter-steps", type=int, default=60, help="LoRA steps that make each version's adapter")
    parser.add_argument("--rejoin-share", type=float, default=REJOIN_SHARE,
                        help="the micro-batcher's rejoin wait for every cell (default: the gateway's, "
                             "%(default)s; 0: off, the batcher before 2026-11-28)")
    parser.add_argument("--same-adapter", action="store_true",
                        help="both versions load the challenger's adapter: the same answers in every cell, so "
                             "tokens/s compares serving cost alone (module docstring)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    report = run(args.shape, args.device, [int(c) for c in args.concurrency.split(",")], args.seconds, args.rounds,
                 args.threads, args.modes.split(","), args.adapter_steps, args.rejoin_share,
                 same_adapter=args.same_adapter)
    shapes.emit(report, args.json_out)


if __name__ == "__main__":
    main()
