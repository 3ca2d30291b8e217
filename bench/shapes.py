"""Models, data and measurement helpers shared by the issue-8 benchmarks (train_bench, two_versions_bench).

Why a module of its own: the GPU check (bench/gpu_check.sh) runs on a machine that has torch, transformers and
peft but no web-server packages and no download access, so everything here builds from config and the bundled
BANKING77 files, and imports only ``lifecycle`` (pydantic, yaml) and ``training`` — never fastapi, uvicorn,
httpx or prefect (gpu_check.sh proves it by running the benchmarks with those imports blocked, bench/noweb.py).

Shapes:

- ``tiny``: hidden 64, 2 layers (~0.3M parameters with the 2,000-token BPE vocabulary). Random init.
  For dry runs and unit-sized checks.
- ``demo``: the shape of ``configs/base_model.yaml`` (~1.2M parameters). The pretrained demo base from
  ``.slm/cache`` when one is there (what ``make demo`` serves and retrains), else random init.
- ``small-2m``, ``small-4m``, ``small-8m``, ``small-12m``: between the two (hidden 192/256/320/384, 4/4/6/6 layers,
  MLP 384/512/768/1024, the 2,000-token vocabulary; ~2.2M, ~3.6M, ~8.2M, ~12.2M parameters), random init:
  where the auto backend's stacked pass stops paying (``STACK_MAX_PARAMS``, bench/mixed_batches.py).
- ``smollm2-135m``: SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads, 3 KV heads, MLP 1536, vocabulary
  49,152, tied embeddings, RoPE theta 100,000), random init. The byte-level BPE tokenizer uses only the first
  2,000 ids; the other rows of the embedding and output head still cost what they cost in the real model.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPE_NAMES = ("tiny", "demo", "small-2m", "small-4m", "small-8m", "small-12m", "smollm2-135m")
TOKENIZER_VOCAB = 2000
MAX_LENGTH = 192  # the demo base's tokenizer limit: longest BANKING77 row is ~150 tokens


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int | None  # None: the tokenizer's size
    tie: bool
    positions: int
    rope_theta: float = 10_000.0


SHAPES = {
    "tiny": Shape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=4, vocab=None, tie=False, positions=256),
    "demo": Shape(hidden=128, intermediate=256, layers=4, heads=4, kv_heads=4, vocab=None, tie=False, positions=256),
    "small-2m": Shape(hidden=192, intermediate=384, layers=4, heads=4, kv_heads=4, vocab=None, tie=False,
                      positions=256),
    "small-4m": Shape(hidden=256, intermediate=512, layers=4, heads=4, kv_heads=4, vocab=None, tie=False,
                      positions=256),
    "small-8m": Shape(hidden=320, intermediate=768, layers=6, heads=5, kv_heads=5, vocab=None, tie=False,
                      positions=256),
    "small-12m": Shape(hidden=384, intermediate=1024, layers=6, heads=6, kv_heads=6, vocab=None, tie=False,
                       positions=256),
    "smollm2-135m": Shape(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49_152, tie=True,
                          positions=8192, rope_theta=100_000.0),
}


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def spread(values: list[float], digits: int = 3) -> dict:
    """Median and range of repeated measurements: on a shared machine one run says little."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "runs": [round(v, digits) for v in values]}


def spread_of(rows: list[dict], key: str, digits: int = 3) -> dict | None:
    """``spread`` of ``key`` over the rows that have it (an open loop without answers has no p50): None if none."""
    values = [x[key] for x in rows if x.get(key) is not None]
    return spread(values, digits) if values else None


def ratios(rows: list[dict], baseline: list[dict], key: str) -> dict | None:
    """``spread`` of the paired ratios ``rows[r][key] / baseline[r][key]``, leaving out rounds where either is missing
    or the baseline is 0; None if no round is left."""
    pairs = [(a.get(key), b.get(key)) for a, b in zip(rows, baseline, strict=True)]
    values = [a / b for a, b in pairs if a is not None and b]
    return spread(values) if values else None


def over_off(by_side: dict[str, list[dict]], keys: tuple[str, ...]) -> dict[str, dict | None]:
    """Every side's paired ratios (:func:`ratios`) to the rounds of side ``off``, per key, named
    ``{key}_{side}_over_off``."""
    return {f"{key}_{side}_over_off": ratios(rows, by_side["off"], key)
            for side, rows in by_side.items() if side != "off" for key in keys}


def in_threads(n: int, target) -> float:
    """Run ``target(k)`` for k in 0..n-1 on ``n`` threads started together; seconds until the last returns."""
    import threading
    import time

    start = time.monotonic()
    threads = [threading.Thread(target=target, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start


def poisson_times(rate: float, seconds: float, seed: int) -> list[float]:
    """Arrival times (seconds from 0) of a Poisson process of ``rate`` a second over ``seconds``, seeded: the same
    arrivals for every side an open-loop benchmark compares."""
    import random

    if not rate > 0:
        raise ValueError(f"an open loop needs a rate above 0 requests a second, got {rate}")
    rng, times = random.Random(seed), []
    t = rng.expovariate(rate)
    while t < seconds:
        times.append(t)
        t += rng.expovariate(rate)
    return times


def summed(counts: list[dict[str, int]]) -> dict[str, int]:
    """Counters added key by key (e.g. each round's ``rejoin_counts``)."""
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere): these VMs come as AMD EPYC
    or Intel Xeon, and several figures differ between the two kinds (bench/RESULTS.md)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device: str) -> dict:
    """What ran the benchmark: CPU model, load average (other people share these cores), threads, versions, GPU."""
    import torch

    info = {"cpu": cpu_model(), "load_average": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def emit(report: dict, json_out: Path | None) -> None:
    """Print the report as JSON (the last thing a bench prints) and keep a copy when asked."""
    text = json.dumps(report, indent=2)
    if json_out:
        json_out.write_text(text)
    print(text)


def require_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device} asked for, but torch {torch.__version__} sees no CUDA device "
                         f"(CUDA build: {torch.version.cuda}); use --device cpu or run on a GPU machine")


def task_pairs(train_rows: int | None = None, eval_rows: int = 300):
    """The demo retrain's data (every drifted row + 3,000 replayed "before" rows) and a held-out eval set
    (golden items of both worlds, never trained on)."""
    from lifecycle.task import load_task
    from training.task_data import retrain_mix, split_worlds

    spec = load_task(REPO / "configs/task.yaml", REPO)
    worlds = split_worlds(spec)
    train = retrain_mix(worlds.drifted_labelled, worlds.before_train, 3000, seed=0)
    if train_rows is not None:
        train = train[:train_rows]
    half = eval_rows // 2
    return train, worlds.golden_before[:half] + worlds.golden_drifted[: eval_rows - half]


def cached_demo_base() -> Path | None:
    """The pretrained demo base ``make demo`` leaves in ``.slm/cache``, if any (newest first)."""
    home = Path(os.environ.get("SLM_HOME", REPO / ".slm"))
    found = sorted((home / "cache").glob("base-*/model.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    return found[0].parent if found else None


def build_base(shape_name: str, out_dir: Path, seed: int = 0) -> tuple[Path, str]:
    """A base model folder for ``shape_name`` (loads with AutoModelForCausalLM/AutoTokenizer) and where it came
    from. ``demo`` reuses the pretrained cached base when present; everything else is random init."""
    if shape_name not in SHAPES:
        raise SystemExit(f"unknown shape {shape_name!r}; choose one of {', '.join(SHAPE_NAMES)}")
    if shape_name == "demo" and (cached := cached_demo_base()) is not None:
        return cached, f"pretrained demo base {cached.name}"
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from lifecycle.prompting import INTENT_V1
    from training.tokenizer import train_tokenizer

    shape = SHAPES[shape_name]
    train, _ = task_pairs()
    tokenizer = train_tokenizer(("".join(INTENT_V1.training_text(p.prompt, p.completion)) for p in train),
                                TOKENIZER_VOCAB, model_max_length=MAX_LENGTH)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = LlamaConfig(vocab_size=shape.vocab or len(tokenizer), hidden_size=shape.hidden,
                         intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
                         num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                         max_position_embeddings=shape.positions, tie_word_embeddings=shape.tie,
                         rope_theta=shape.rope_theta, rms_norm_eps=1e-5,
                         pad_token_id=pad, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(pad_token_id=pad, eos_token_id=eos, bos_token_id=eos, do_sample=False)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    n = sum(p.numel() for p in model.parameters())
    (out_dir / "bench_shape.json").write_text(json.dumps({"shape": shape_name, "parameters": n}))
    return out_dir, f"random init from config, {n / 1e6:.1f}M parameters"


def parameters(base_dir: Path) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_dir, local_files_only=True)
    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
