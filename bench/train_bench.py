"""LoRA training throughput: the project's trainer against a naive HF Trainer + peft baseline (issue #8, item 3).

Both sides train the same LoRA (the shipped recipe's rank, alpha, dropout, targets incl. the output head, learning
rate, batch size and seed) on the same rows for the same number of steps, from the same base:

- project: ``training.lora.train_lora`` — completion-only loss with the output head run on target positions only,
  length-grouped batches padded to the batch's longest row, bf16 autocast and fused AdamW on CUDA.
- naive: ``transformers.Trainer`` on a ``peft`` model with everything else at its defaults — rows padded to the
  tokenizer's max length (192), full-vocabulary logits at every position, fp32, linear schedule, no warmup.
  The completion-only labels are kept (context and pads are -100), so both optimise the same objective.

Throughput is non-pad tokens per second of the training loop (model loading excluded on both sides); loss is
judged on one held-out set (golden items of both worlds) scored by the same function
(``training.loop.evaluate_loss``). Rounds run interleaved (ABAB, order alternating) so machine load hits both.

Equal steps are not equal loss: in short runs the project's recipe (length-grouped batches, betas 0.95, warmup +
cosine to 0.1) ends a little higher than the Trainer's defaults (demo shape, 40 steps: 0.88 vs 0.76). So each
round also trains the project's recipe for ``--ladder`` multiples of the steps, and the headline ratio is time to
equal loss: the naive run's loop time over that of the shortest project run whose eval loss is at or below the
naive's (the learning-rate schedule follows the step budget, as it would for someone aiming at that loss).

Run:  ``.venv/bin/python bench/train_bench.py --shape demo --steps 100 --rounds 3 [--device cuda]``
Prints one JSON object; figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import shapes  # noqa: E402  (bench/ is not a package; the path line above makes this import work)


def recipe_for(steps: int, batch_size: int | None):
    from training.lora import LoraRecipe

    recipe = LoraRecipe.from_yaml(shapes.REPO / "configs/recipe_lora.yaml")
    update = {"max_steps": steps, "log_every": min(recipe.log_every, steps)}
    if batch_size:
        update["batch_size"] = batch_size
    return recipe.model_copy(update=update)


def project_run(base_dir: Path, train, evals, recipe, device: str, threads: int, out: Path) -> dict:
    from training.lora import train_lora

    load = os.getloadavg()[0]
    res = train_lora(base_dir, train, recipe, out, eval_pairs=evals, threads=threads, device=device)
    return {"steps": res.steps, "tokens_per_s": round(res.tokens_per_s, 1), "loop_s": round(res.wall_seconds, 2),
            "steps_per_s": round(res.steps / res.wall_seconds, 3), "final_train_loss": round(res.final_loss, 4),
            "eval_loss": round(res.eval_loss, 4), "load_1min": round(load, 2)}


def _all_linear(model) -> list[str]:
    """Every linear layer's name, the output head included: the same targets as the recipe's
    ``all-linear`` + ``include_output_head``."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


class _PaddedRows:
    """Rows padded to ``width`` — what a first HF fine-tuning script does (``padding="max_length"``)."""

    def __init__(self, examples, width: int, pad_id: int) -> None:
        self.rows = []
        for e in examples:
            n = len(e.ids)
            ids = list(e.ids) + [pad_id] * (width - n)
            labels = [-100] * e.n_context + list(e.ids[e.n_context:]) + [-100] * (width - n)
            self.rows.append({"input_ids": ids, "attention_mask": [1] * n + [0] * (width - n), "labels": labels})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def naive_run(base_dir: Path, train, evals, recipe, device: str, threads: int, out: Path) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    from lifecycle.prompting import format_by_identity
    from training.loop import encode_pairs, evaluate_loss

    torch.set_num_threads(threads)
    fmt = format_by_identity(recipe.prompt_format)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
    width = min(tokenizer.model_max_length, base.config.max_position_embeddings)
    torch.manual_seed(recipe.seed)
    model = get_peft_model(base, LoraConfig(r=recipe.r, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout,
                                            target_modules=_all_linear(base), task_type="CAUSAL_LM"))
    data = _PaddedRows(encode_pairs(tokenizer, train, fmt, width), width, tokenizer.pad_token_id)
    tokens = [0]

    def collate(rows):
        tokens[0] += sum(sum(r["attention_mask"]) for r in rows)
        return default_data_collator(rows)

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=recipe.batch_size,
                             max_steps=recipe.max_steps, learning_rate=recipe.lr, seed=recipe.seed,
                             logging_steps=recipe.log_every, save_strategy="no", report_to="none",
                             use_cpu=device == "cpu", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate)
    load = os.getloadavg()[0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    # The Trainer logs only every ``logging_steps``: this is the last logged window's mean, not the project's
    # last-window mean over the same steps. Compare eval losses.
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    target = torch.device(device)
    eval_loss = evaluate_loss(model, encode_pairs(tokenizer, evals, fmt, width), recipe.batch_size,
                              tokenizer.pad_token_id, target)
    return {"tokens_per_s": round(tokens[0] / wall, 1), "loop_s": round(wall, 2),
            "steps_per_s": round(recipe.max_steps / wall, 3), "final_train_loss": round(losses[-1], 4),
            "eval_loss": round(eval_loss, 4), "load_1min": round(load, 2), "padded_to": width,
            "optim": str(args.optim), "precision": "fp32"}


def run(shape: str, device: str, steps: int, rounds: int, threads: int, batch_size: int | None = None,
        train_rows: int | None = None, eval_rows: int = 300, ladder: tuple[float, ...] = (1.5, 2, 3),
        work: Path | None = None) -> dict:
    import torch

    shapes.require_device(device)
    torch.set_num_threads(threads)
    recipe = recipe_for(steps, batch_size)
    train, evals = shapes.task_pairs(train_rows, eval_rows)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        root = Path(tmp)
        base_dir, origin = shapes.build_base(shape, root / "base")
        report = {"benchmark": "lora training throughput", "shape": shape, "base": origin,
                  "parameters": shapes.parameters(base_dir), "steps": steps, "batch_size": recipe.batch_size,
                  "train_rows": len(train), "eval_rows": len(evals), "machine_before": shapes.machine(device)}
        project, naive, longer = [], [], []
        for i in range(rounds):
            sides = [("project", project_run, project), ("naive", naive_run, naive)]
            for name, fn, sink in sides if i % 2 == 0 else reversed(sides):
                sink.append(fn(base_dir, train, evals, recipe, device, threads, root / f"{name}-{i}"))
                print(f"round {i + 1}/{rounds} {name}: {json.dumps(sink[-1])}", file=sys.stderr, flush=True)
            longer.append({})
            for k in ladder:
                steps_k = round(steps * k)
                longer[-1][steps_k] = project_run(base_dir, train, evals, recipe_for(steps_k, batch_size), device,
                                                  threads, root / f"project-{steps_k}-{i}")
                print(f"round {i + 1}/{rounds} project {steps_k} steps: {json.dumps(longer[-1][steps_k])}",
                      file=sys.stderr, flush=True)
        report["project"], report["naive"], report["project_longer"] = project, naive, longer
        report["summary"] = summarize(project, naive, longer)
        report["machine_after"] = shapes.machine(device)
    return report


def equal_loss(naive: dict, project: dict, longer: dict[int, dict], steps: int) -> dict:
    """The shortest project run (the same steps, then the ladder) whose eval loss is at or below the naive's."""
    for n_steps, run_ in [(steps, project), *sorted(longer.items())]:
        if run_["eval_loss"] <= naive["eval_loss"]:
            return {"project_steps": n_steps, "project_loop_s": run_["loop_s"], "project_eval_loss": run_["eval_loss"],
                    "time_ratio": round(naive["loop_s"] / run_["loop_s"], 2)}
    return {"project_steps": None, "time_ratio": None}


def summarize(project: list[dict], naive: list[dict], longer: list[dict[int, dict]]) -> dict:
    per_round = [p["tokens_per_s"] / n["tokens_per_s"] for p, n in zip(project, naive, strict=True)]
    steps = project[0]["steps"]
    matched = [equal_loss(n, p, lg, steps) for n, p, lg in zip(naive, project, longer, strict=True)]
    ratios = [m["time_ratio"] for m in matched if m["time_ratio"] is not None]
    med = {side: {k: statistics.median(r[k] for r in rows) for k in ("tokens_per_s", "eval_loss", "final_train_loss")}
           for side, rows in (("project", project), ("naive", naive))}
    return {"project_tokens_per_s": shapes.spread([r["tokens_per_s"] for r in project], 1),
            "naive_tokens_per_s": shapes.spread([r["tokens_per_s"] for r in naive], 1),
            "ratio_of_medians": round(med["project"]["tokens_per_s"] / med["naive"]["tokens_per_s"], 2),
            "ratio_per_round": shapes.spread(per_round, 2),
            "project_eval_loss": med["project"]["eval_loss"], "naive_eval_loss": med["naive"]["eval_loss"],
            "project_final_train_loss": med["project"]["final_train_loss"],
            "naive_final_train_loss": med["naive"]["final_train_loss"],
            "equal_loss_per_round": matched,
            "time_to_equal_loss_ratio": shapes.spread(ratios, 2) if ratios else None,
            "target_1_5x_at_equal_loss": len(ratios) == len(matched) and min(ratios) >= 1.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fails loudly when CUDA is absent)")
    parser.add_argument("--shape", default="demo", choices=shapes.SHAPE_NAMES)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved project/naive pairs")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (FACTS.md: set it)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's (32)")
    parser.add_argument("--train-rows", type=int, default=None, help="default: the demo retrain's 4,570 rows")
    parser.add_argument("--eval-rows", type=int, default=300)
    parser.add_argument("--ladder", default="1.5,2,3", help="multiples of --steps for the project's longer runs")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    report = run(args.shape, args.device, args.steps, args.rounds, args.threads, args.batch_size,
                 args.train_rows, args.eval_rows, tuple(float(k) for k in args.ladder.split(",") if k))
    shapes.emit(report, args.json_out)


if __name__ == "__main__":
    main()
