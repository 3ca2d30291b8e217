"""Where a fused mixed batch's extra CPU goes: the fused delta taken apart, piece by piece (issue #8, item 2).

A mixed batch in the fused pass (serving.fused_lora) runs every targeted Linear plain over the whole batch, then adds
the other version's low-rank delta to its rows: slice the rows' inputs, one ``mm`` into the rank-(r_v + r_h) space,
one ``addmm_`` back onto the rows' outputs. This probe measures, on the same batches, CPU per batch of:

- ``home``: every row sent to the home version (the baseline: what one merged model costs);
- ``hooks``: the mixed batch with each Linear's hook in place but adding nothing (the cost of hooking alone);
- ``first``: the hook, the rows' slice and the first ``mm`` (its result dropped);
- ``fused``: the shipped delta (serving.fused_lora._delta_forward);
- ``dense``: in decode steps, the other version's rows recomputed on its merged copy's full weights instead (one
  ``mm`` into the rows' outputs in place of two low-rank ones; Linears of at most 64K weights: the 2,000-wide head
  keeps the low-rank delta);
- ``shared``: one ``mm`` into the rank space for the Linears that read the same input (q/k/v, gate/up: their A
  factors side by side), each taking its own columns of the result for its ``addmm_`` (12 of 29 first ``mm`` calls
  saved a decode step on the demo model);
- ``cat``: in decode steps, the other version's A factor appended to the home's weight as extra output rows, so that
  the base ``F.linear`` also yields every row's rank-space projection and the first ``mm`` and its slice go (the
  rows' part of it feeds the ``addmm_``; the outputs are a view of the wide result). Half of a fused LoRA GEMM.

The last three are alternatives that were measured and not kept (bench/RESULTS.md, sessions 15 and 16); the probe
keeps them so that another machine (another CPU kind, a GPU) can be asked the same question in one command. And:

- ``shipped``: the batch as the auto backend serves it by default (stacked, decode-stacked, split or fused:
  serving.backend, "auto"): its ratio to ``home`` is what a batch of that shape costs two live versions, the ``o``
  of the bound in bench/RESULTS.md (session 15, point 3).

Every way but ``shipped`` runs with the auto backend's stacking and split turned off, so that each mixed batch takes
the fused pass; all ways run on one backend object (two objects doing the same work read a few percent apart here).

Both versions load ONE adapter under two names (as ``two_versions_bench.py --same-adapter``): the delta between them
is zero up to rounding, so every way decodes the same tokens (checked: ``same_answers`` per shape) and the figures
compare cost alone; the pieces' costs do not depend on the factors' values. Each batch runs each way 5 times in random
order, the minimum kept; the report gives per shape the ratio of the summed minima to ``home``. Every shape needs rows
of both versions.

Run:  ``.venv/bin/python bench/delta_cost.py --shapes 7+1,28+3,6+2``
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mixed_batches  # noqa: E402  (bench/ is not a package)
import shapes  # noqa: E402
import two_versions_bench as tvb  # noqa: E402

WAYS = ("home", "hooks", "first", "fused", "dense", "shared", "cat", "shipped")
DENSE_MAX_WEIGHTS = 65_536
#: Linears of one parent that read the same input tensor in Llama-shaped models. A member handed another input than
#: the group's last (another architecture) projects it anew for the group: slower, never wrong.
SIBLINGS = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}


def variants(backend) -> dict:
    """Stand-ins for ``serving.fused_lora._delta_forward``, one per measured way (module docstring)."""
    import torch
    import torch.nn.functional as F  # noqa: N812 (torch's own convention)

    import serving.fused_lora as fused_lora

    names = {id(linear): name for name, linear in backend._fused.linears.items()}
    copy = backend._merged[tvb.CHALLENGER]

    def hooks(linear, a, b, rows, mask):
        weight, bias = linear.weight, linear.bias
        return lambda x: F.linear(x, weight, bias)

    def first(linear, a, b, rows, mask):
        weight, bias, at, lo_row, hi_row = linear.weight, linear.bias, a.t().contiguous(), rows.start, rows.stop

        def block(x):
            y = F.linear(x, weight, bias)
            n = x.numel() // (x.shape[0] * x.shape[-1])
            torch.mm(x.reshape(-1, x.shape[-1])[lo_row * n:hi_row * n], at)
            return y

        return block

    def dense(linear, a, b, rows, mask):
        shipped = fused_lora_delta(linear, a, b, rows, mask)
        if linear.weight.numel() > DENSE_MAX_WEIGHTS or linear.bias is not None:  # (mm's out= would drop a bias)
            return shipped
        weight, bias, out = linear.weight, linear.bias, linear.weight.shape[0]
        theirs, lo_row, hi_row = copy.get_submodule(names[id(linear)]).weight.t(), rows.start, rows.stop

        def block(x):
            if x.numel() // (x.shape[0] * x.shape[-1]) != 1:  # a prompt: the low-rank delta
                return shipped(x)
            y = F.linear(x, weight, bias)
            torch.mm(x.reshape(-1, x.shape[-1])[lo_row:hi_row], theirs, out=y.view(-1, out)[lo_row:hi_row])
            return y

        return block

    # shared: the plan's A factors of each group of siblings side by side, and each member's columns in them.
    plan = backend._fused._plan((tvb.CHALLENGER,))
    groups: dict[tuple[str, str], list[str]] = {}
    for m in plan:
        parent, _, leaf = m.rpartition(".")
        groups.setdefault((parent, SIBLINGS.get(leaf, leaf)), []).append(m)
    side_by_side, columns, memos = {}, {}, {}
    for key, members in groups.items():
        side_by_side[key] = torch.cat([plan[m][0].t() for m in members], dim=1).contiguous()
        start = 0
        for m in members:
            columns[m] = (key, start, start + plan[m][0].shape[0])
            start += plan[m][0].shape[0]
        memos[key] = [None, None]  # the input last projected, and its projection

    def shared(linear, a, b, rows, mask):
        weight, bias, out, bt = linear.weight, linear.bias, linear.weight.shape[0], b.t().contiguous()
        key, first_column, end_column = columns[names[id(linear)]]
        at, memo, lo_row, hi_row = side_by_side[key], memos[key], rows.start, rows.stop

        def block(x):
            y = F.linear(x, weight, bias)
            n = x.numel() // (x.shape[0] * x.shape[-1])
            if x is not memo[0]:  # the group's first member: project for all of them
                memo[0], memo[1] = x, torch.mm(x.reshape(-1, x.shape[-1])[lo_row * n:hi_row * n], at)
            y.view(-1, out)[lo_row * n:hi_row * n].addmm_(memo[1][:, first_column:end_column], bt)
            return y

        return block

    def cat(linear, a, b, rows, mask):
        shipped = fused_lora_delta(linear, a, b, rows, mask)
        if not isinstance(rows, slice) or mask is not None:
            return shipped
        out, r = linear.weight.shape[0], a.shape[0]
        both = torch.cat([linear.weight, a]).contiguous()
        both_bias = None if linear.bias is None else torch.cat([linear.bias, linear.bias.new_zeros(r)])
        bt, lo_row, hi_row, f_linear = b.t().contiguous(), rows.start, rows.stop, F.linear

        def block(x):
            if x.numel() // (x.shape[0] * x.shape[-1]) != 1:  # a prompt: the shipped delta
                return shipped(x)
            wide = f_linear(x, both, both_bias).view(-1, out + r)
            wide[lo_row:hi_row, :out].addmm_(wide[lo_row:hi_row, out:], bt)
            return wide[:, :out].view(*x.shape[:-1], out)

        return block

    fused_lora_delta = fused_lora._delta_forward
    return {"home": fused_lora_delta, "hooks": hooks, "first": first, "fused": fused_lora_delta, "dense": dense,
            "shared": shared, "cat": cat, "shipped": fused_lora_delta}


def choose(backend, ways: dict, way: str, names: list[str]) -> list[str]:
    """Set the way's delta (``ways``: from ``variants``), and the auto backend's own choices (stacking, split) for
    ``shipped`` only; returns the versions to send the batch's rows to (``names``, or all to the home for ``home``)."""
    import serving.fused_lora as fused_lora
    from serving.backend import SPLIT_MIN_ROWS

    fused_lora._delta_forward = ways[way]
    shipped = way == "shipped"
    backend._stack = backend._stack_decode = shipped  # the demo model is under both size bounds (module docstring)
    backend.split_min_rows = SPLIT_MIN_ROWS if shipped else None
    return [tvb.CHAMPION] * len(names) if way == "home" else names


def run(shape_names: list[str], batches: int, adapter_steps: int, seed: int) -> dict:
    import torch

    import serving.fused_lora as fused_lora
    from lifecycle.prompting import INTENT_V1
    from serving.backend import InProcessBackend

    torch.set_num_threads(1)
    _, evals = shapes.task_pairs(eval_rows=300)
    original = fused_lora._delta_forward
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base_dir, origin = shapes.build_base("demo", root / "base")
        folder = tvb.train_adapter(base_dir, root / "adapter", adapter_steps, 0, "cpu", 1)
        # The fused pass on every mixed batch but the shipped way's: no stacking, no split (``choose``).
        backend = InProcessBackend(base_dir, INTENT_V1, device="cpu", stack_max_params=None, split_min_rows=None)
        for name in (tvb.CHAMPION, tvb.CHALLENGER):
            backend.load_adapter(name, folder)
        backend._fused.rehome(tvb.CHAMPION)
        backend._fused.traffic = {tvb.CHAMPION: 1e9}
        ways = variants(backend)
        encoded = backend.tokenizer([INTENT_V1.render(p.prompt) for p in evals], add_special_tokens=False)["input_ids"]
        rng = random.Random(seed)
        report = {"benchmark": "the fused delta taken apart, CPU per batch", "base": origin,
                  "parameters": shapes.parameters(base_dir), "batches_per_shape": batches,
                  "machine": shapes.machine("cpu"), "shapes": {}}
        try:
            for text in shape_names:
                home, other = mixed_batches.parse_shape(text)
                if not (home and other):
                    raise SystemExit(f"shape {text!r}: a mixed batch needs rows of both versions (the delta is applied "
                                     "to a block of the other version's rows after the home's)")
                total = dict.fromkeys(WAYS, 0.0)
                same = True
                for _ in range(batches):
                    rows, batch, names = mixed_batches.random_batch(rng, encoded, home, other)
                    best = dict.fromkeys(WAYS, float("inf"))
                    for _ in range(5):
                        for way in rng.sample(WAYS, len(WAYS)):
                            sent = choose(backend, ways, way, names)
                            best[way] = min(best[way], mixed_batches.batch_cpu(backend, batch, sent))
                    for way in WAYS:
                        total[way] += best[way]
                    # Every way decodes the same tokens (module docstring): checked, as the figures assume it.
                    answers = {tuple(g.text for g in backend.generate([evals[i].prompt for i in rows],
                                                                     choose(backend, ways, way, names)))
                               for way in WAYS}
                    same = same and len(answers) == 1
                report["shapes"][text] = {"ms_per_batch": {w: round(t / batches * 1000, 2) for w, t in total.items()},
                                          "over_home": {w: round(t / total["home"], 3) for w, t in total.items()},
                                          "same_answers": same}
                ratios = ", ".join(f"{w} {r}" for w, r in report["shapes"][text]["over_home"].items())
                print(f"{text}: over home {ratios}, same answers {same}", file=sys.stderr, flush=True)
        finally:
            fused_lora._delta_forward = original
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="7+1,28+3,6+2", help="comma-separated HOME+OTHER row counts")
    parser.add_argument("--batches", type=int, default=8, help="random batches per shape")
    parser.add_argument("--adapter-steps", type=int, default=60, help="LoRA steps that make the adapter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    shapes.emit(run(args.shapes.split(","), args.batches, args.adapter_steps, args.seed), args.json_out)


if __name__ == "__main__":
    main()
