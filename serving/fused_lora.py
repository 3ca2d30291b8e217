"""The "fused" serving mode's machinery (serving.backend): one base with the *home* version merged in, every
other version a per-row low-rank delta inside each targeted Linear, all in one forward pass.

For a version v and home h, W_v - W_h = B_v·s_v·A_v - B_h·s_h·A_h is itself a LoRA of rank r_v + r_h
(A = [A_v; A_h], B = [B_v·s_v, -B_h·s_h]): only the rows of v take two small matmuls per layer, added back in
place (a view of them when they form one block of the batch, as the backend arranges, else gathered).

The "stacked" pass (``FusedLora.stacked``) is the other way to serve several versions in one pass, for small
models whose versions all have full weights at hand (the home in the base, the others as merged copies): every
Linear whose weights differ between them becomes ONE batched matmul over the versions' weights, the batch being
equal groups of rows, one per version. One call where the delta takes five; but every version's weights are read,
so it pays only where calls, not weight reads, are the cost (serving.backend, "auto").
torch and peft are imported inside the functions, as in serving.backend.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

_PEFT_DEPRECATION = "`is_gradient_checkpointing` is deprecated"


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """peft 0.21 calls transformers 5's deprecated ``is_gradient_checkpointing`` whenever it wraps a model: a
    FutureWarning in every worker log that loads an adapter, about code that is not ours. Silenced by one filter
    for that message alone, kept for the process (adding it again moves it to the front, it never doubles):
    ``warnings.catch_warnings`` around each call saved and restored the process-wide filter list from the
    gateway's loader threads at once, and a restore could undo a filter another thread added meanwhile (the list
    is process-wide on the Pythons this project supports)."""
    warnings.filterwarnings("ignore", message=_PEFT_DEPRECATION, category=FutureWarning)
    yield


def lora_factors(model, adapter_dir: Path, device) -> dict[str, tuple[object, object, float]]:
    """An adapter's Linear LoRA factors by module name: (A, B, scaling), as peft reads them.

    peft attaches the adapter to ``model`` for the moment of reading (so rank and alpha patterns, rsLoRA and
    target-module rules are peft's own) and is unloaded again: ``model`` comes back with its own modules.
    """
    import torch
    from peft import PeftModel
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.tuners_utils import BaseTunerLayer

    with quiet_peft():
        wrapped = PeftModel.from_pretrained(model, adapter_dir, adapter_name="read", torch_device=str(device))
    try:
        config = wrapped.peft_config["read"]
        if getattr(config, "modules_to_save", None) or getattr(config, "trainable_token_indices", None):
            raise ValueError(f"{adapter_dir}: modules_to_save / trainable tokens are not LoRA deltas; load it "
                             "with adapter_mode='unmerged'")
        factors = {}
        for name, module in wrapped.base_model.model.named_modules():
            if not isinstance(module, BaseTunerLayer):
                continue
            plain = (isinstance(module, LoraLinear) and isinstance(module.get_base_layer(), torch.nn.Linear)
                     and not module.fan_in_fan_out and "read" not in module.lora_variant
                     and not module.lora_bias.get("read", False))
            if not plain:
                raise ValueError(f"{adapter_dir}: layer {name} is not a plain Linear LoRA (DoRA, LoRA bias, "
                                 "embedding or conv); load it with adapter_mode='unmerged'")
            factors[name] = (module.lora_A["read"].weight.detach().clone(),
                             module.lora_B["read"].weight.detach().clone(), float(module.scaling["read"]))
    finally:
        wrapped.unload()  # the modules go back in place; ``model`` is the same object, its weights untouched
    return factors


def _delta_forward(linear, a, b, rows, mask):
    """``linear``'s forward plus a low-rank delta on some rows: y = x·Wᵀ + bias; y[rows] += ((x[rows]·Aᵀ)*mask)·Bᵀ.

    ``rows``: None, every row; a ``slice``, a contiguous block of rows (a view: nothing is copied); else an index
    tensor (gathered, added back). ``mask`` None: every column of A belongs to every row in ``rows``.
    As few torch calls as possible: on a small model each call's overhead, not its arithmetic, is the cost.
    Keeping the delta to its own rows keeps the arithmetic down (it has rank r_v + r_h: on the demo model
    that is ~30 % of a layer's FLOPs, paid only by the other version's rows). The block beats the gather on
    the demo model (CPU, 1 thread): a forward of one token for 4 rows, 2 of them another version, costs 944 µs against
    1,057 µs gathered and 765 µs with no delta; of 16 rows, 2 another version, 1,183 against 1,281 and 994 µs.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812 (torch's own convention)

    weight, bias = linear.weight, linear.bias
    if rows is None and mask is None:
        return lambda x: F.linear(x, weight, bias).add_(F.linear(F.linear(x, a), b))
    if rows is None:
        return lambda x: F.linear(x, weight, bias).add_(F.linear(F.linear(x, a) * mask, b))
    if isinstance(rows, slice) and mask is None:
        # One version's block: on 2-D views (row r's positions are rows r·n .. r·n + n - 1), one mm and one in-place
        # addmm_ instead of two linears, two 3-D slices and an add_ (1.6 µs less per Linear on the demo model).
        # Everything the call can know beforehand is bound here (it runs ~30 times a decode step, and on this model
        # its Python is a good part of its cost): the factors as the mm wants them (the plan keeps them so: no
        # copy), the block's rows, the functions themselves.
        at, bt, out = a.t().contiguous(), b.t().contiguous(), weight.shape[0]
        first, last, f_linear, mm = rows.start, rows.stop, F.linear, torch.mm

        def block(x):
            y = f_linear(x, weight, bias)
            shape = x.shape
            n = x.numel() // (shape[0] * shape[-1])  # positions per row (ints only: x[0] would be a torch call)
            lo, hi = first * n, last * n
            y.view(-1, out)[lo:hi].addmm_(mm(x.reshape(-1, shape[-1])[lo:hi], at), bt)
            return y

        return block
    if isinstance(rows, slice):
        def masked_block(x):
            y = F.linear(x, weight, bias)
            y[rows].add_(F.linear(F.linear(x[rows], a) * mask, b))
            return y

        return masked_block
    if mask is None:
        return lambda x: F.linear(x, weight, bias).index_add_(
            0, rows, F.linear(F.linear(x.index_select(0, rows), a), b))
    return lambda x: F.linear(x, weight, bias).index_add_(
        0, rows, F.linear(F.linear(x.index_select(0, rows), a) * mask, b))


def _stacked_forward(weights, bias, groups: int):
    """A Linear's forward over ``groups`` equal groups of rows (batch-major), group g through ``weights[g]``.

    ``weights``: (groups, in, out), each version's weight transposed; ``bias``: (groups, 1, out) or None. The input
    (B, ..., in) is viewed as (groups, rows of a group x the rest, in): one ``bmm``, viewed back.
    """
    import torch

    out = weights.shape[-1]
    if bias is None:
        return lambda x: torch.bmm(x.reshape(groups, -1, x.shape[-1]), weights).view(*x.shape[:-1], out)
    return lambda x: torch.baddbmm(bias, x.reshape(groups, -1, x.shape[-1]), weights).view(*x.shape[:-1], out)


def add_delta(weight, a, b, scaling: float) -> None:
    """``weight += (B @ A) * scaling`` in place, bit for bit as peft's merge (``merge_and_unload``, merged mode: the
    baseline) does it: the delta in the factors' dtype (fp32), rounded once into the weight's. Cast to a bf16
    weight's dtype first, it was rounded twice, and a bf16 base's fused home answered otherwise than its merged
    copy on near ties."""
    weight += (b @ a) * scaling


class FusedLora:
    """Fused mode's state (module docstring): the home version merged into the base, the others as deltas.

    Called under the backend's lock only. A delta is hooked in by setting a Linear's ``forward`` for one
    batch and deleting it after (``_hooked``): the modules outside a mixed batch carry no hook, no wrapper, no check.
    """

    # Each row served decays the counts by this factor: the home follows the majority of the last ~500 rows.
    DECAY = 0.998
    # Move the home only when another version served twice the home's recent rows (and at least MIN_ROWS):
    # a 50/50 split never flaps, a promotion moves it after a few hundred requests.
    MARGIN, MIN_ROWS = 2.0, 32

    def __init__(self, model, base_dir: Path) -> None:
        import torch
        from safetensors import safe_open

        self.model, self.device = model, model.device
        self.linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        self.factors: dict[str, dict[str, tuple[object, object, float]]] = {}
        self.home: str | None = None
        self.traffic: dict[str | None, float] = {}
        self._plans: dict[tuple, dict] = {}
        self._stacks: dict[tuple, dict] = {}  # stacked passes' weights by version tuple, as _plans
        # Where each base weight lives on disk: a home's layers are reread from there when it leaves.
        self._files: dict[str, Path] = {}
        for file in sorted(Path(base_dir).glob("*.safetensors")):
            with safe_open(file, "pt") as f:
                self._files.update(dict.fromkeys(f.keys(), file))
        head, embed = model.get_output_embeddings(), model.get_input_embeddings()
        tied = head is not None and embed is not None and head.weight is embed.weight
        self._tied = next((n for n, m in self.linears.items() if m is head), None) if tied else None
        self._embed = embed

    def add(self, name: str, factors: dict) -> None:
        self.factors[name] = factors
        self._forget_plans()

    def remove(self, name: str) -> None:
        if self.home == name:
            self.rehome(None)
        del self.factors[name]
        self.traffic.pop(name, None)
        self._forget_plans()

    def _forget_plans(self) -> None:
        """The cached deltas and stacks hold the home's and the versions' weights: rebuilt after any change."""
        self._plans.clear()
        self._stacks.clear()

    def _homeable(self, name: str | None) -> bool:
        """Its layers can be restored exactly later: the weight is in the base checkpoint, or is the tied head."""
        return name is None or all(f"{m}.weight" in self._files or m == self._tied for m in self.factors[name])

    def rehome(self, name: str | None) -> None:
        """Merge ``name`` into the base weights instead of the current home (None: the bare base)."""
        import torch
        from safetensors import safe_open

        if name == self.home:
            return
        if self.home is not None:
            for m in self.factors[self.home]:
                linear = self.linears[m]
                if m == self._tied:
                    linear.weight = self._embed.weight  # tie the head again: the embedding was never changed
                    continue
                with safe_open(self._files[f"{m}.weight"], "pt") as f:
                    linear.weight.data.copy_(f.get_tensor(f"{m}.weight"))
        if name is not None:
            for m, (a, b, scaling) in self.factors[name].items():
                linear = self.linears[m]
                if m == self._tied:  # untie: the home's head delta must not leak into the input embedding
                    linear.weight = torch.nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
                add_delta(linear.weight.data, a, b, scaling)
        self.home = name
        self._forget_plans()

    def observe(self, adapters: Sequence[str | None]) -> None:
        """Count the rows served; move the home when another version clearly carries the traffic."""
        decay = self.DECAY ** len(adapters)
        for key in self.traffic:
            self.traffic[key] *= decay
        for a in adapters:
            self.traffic[a] = self.traffic.get(a, 0.0) + 1.0
        best = max(self.traffic, key=self.traffic.__getitem__)
        if (best != self.home and self.traffic[best] >= max(self.MIN_ROWS, self.MARGIN * self.traffic.get(self.home, 0))
                and self._homeable(best)):
            self.rehome(best)

    def _plan(self, versions: tuple[str | None, ...]) -> dict[str, tuple[object, object, tuple[int, ...]]]:
        """Per targeted module: A (R, in) and B (out, R) stacking each version's delta to the home, and which
        version (index into ``versions``) owns each of the R columns. Cached until the home or the set changes."""
        import torch

        plan = self._plans.get(versions)
        if plan is not None:
            return plan
        home = self.factors[self.home] if self.home is not None else {}
        plan = {}
        for m in sorted(set(home).union(*(self.factors[v] for v in versions if v is not None))):
            a_parts, b_parts, owners = [], [], []
            for i, v in enumerate(versions):
                own = self.factors[v].get(m) if v is not None else None
                signed = ([(*own, 1.0)] if own else []) + ([(*home[m], -1.0)] if m in home else [])
                for a, b, scaling, sign in signed:
                    a_parts.append(a)
                    b_parts.append(b * (sign * scaling))
                    owners += [i] * a.shape[0]
            dtype = self.linears[m].weight.dtype
            # Held as transposed views of contiguous (in, R) and (R, out) tensors: the block path multiplies by
            # those as they are (its .t().contiguous() copies nothing; it copied both factors of every Linear on
            # every batch, 0.65 ms a batch of the demo model), and F.linear takes the views without a copy.
            a, b = torch.cat(a_parts).to(dtype), torch.cat(b_parts, dim=1).to(dtype)
            plan[m] = (a.t().contiguous().t(), b.t().contiguous().t(), tuple(owners))
        self._plans[versions] = plan
        return plan

    @contextlib.contextmanager
    def applied(self, adapters: Sequence[str | None]) -> Iterator[None]:
        """The other versions' deltas hooked into their rows for one batch; nothing when all rows are home."""
        import torch

        versions = tuple(sorted({a for a in adapters if a != self.home}, key=str))
        if not versions:
            yield
            return
        plan = self._plan(versions)
        # Only the other versions' rows take the delta: all rows, a contiguous block of them (the backend puts the
        # home rows first), or gathered; the mask sorts their columns out when several other versions share it.
        owner = [versions.index(a) for a in adapters if a != self.home]
        others = [i for i, a in enumerate(adapters) if a != self.home]
        if len(others) == len(adapters):
            rows = None
        elif others[-1] - others[0] + 1 == len(others):
            rows = slice(others[0], others[-1] + 1)
        else:
            rows = torch.tensor(others, device=self.device)
        masks: dict[tuple[int, ...], object] = {}

        def forwards():
            for m, (a, b, owners) in plan.items():
                mask = None
                if len(versions) > 1:
                    if owners not in masks:
                        hit = torch.tensor(owner)[:, None] == torch.tensor(owners)[None, :]
                        masks[owners] = hit.to(device=a.device, dtype=a.dtype).unsqueeze(1)
                    mask = masks[owners]
                yield m, _delta_forward(self.linears[m], a, b, rows, mask)

        with self._hooked(plan, forwards()):
            yield

    @contextlib.contextmanager
    def _hooked(self, names, forwards) -> Iterator[None]:
        """``forwards`` ((module name, forward) pairs, made lazily) set as those Linears' forwards for one batch;
        every one of ``names`` loses its hook after, also when making one failed half-way (a mask's memory, say).

        Set and deleted in the instance's ``__dict__`` directly: a function is neither a parameter, a buffer nor a
        module, so ``nn.Module.__setattr__``'s checks (several µs each, ~30 Linears twice a batch) would only end
        there too."""
        try:
            for m, forward in forwards:
                vars(self.linears[m])["forward"] = forward
            yield
        finally:
            for m in names:
                vars(self.linears[m]).pop("forward", None)

    def stackable(self, version: str | None, copies: dict) -> bool:
        """A stacked pass can take ``version``'s rows: its full weights are at hand (the home's are the base's)."""
        return version == self.home or version in copies

    def _differ(self, versions: Sequence[str | None]) -> set[str]:
        """The Linears whose weights differ between ``versions`` (and the home): some version's adapter touches them."""
        return set().union(*(self.factors[v] for v in (*versions, self.home) if v is not None))

    def stack_bytes(self, versions: Sequence[str | None] | None = None) -> int:
        """Bytes the stacks hold now (``versions`` None), or the bytes a stack for ``versions`` would add: 0 when
        it is built already. The backend counts them in its memory budget with the merged copies."""
        if versions is None:
            return sum(t.numel() * t.element_size() for stack in self._stacks.values()
                       for pair in stack.values() for t in pair if t is not None)
        if tuple(versions) in self._stacks:
            return 0
        total = 0
        for m in self._differ(versions):
            linear = self.linears[m]
            total += sum(t.numel() * t.element_size() for t in (linear.weight, linear.bias) if t is not None)
        return total * len(versions)

    def _stack(self, versions: tuple[str | None, ...], copies: dict) -> dict[str, tuple[object, object]]:
        """Per Linear whose weights differ between ``versions``: (weights, bias) stacked in ``versions``' order.

        The Linears touched by no version's adapter, the home's included (merged in the base, absent from the
        copies), hold the same weights in the base and in every copy: they run plain on the whole batch.
        """
        import torch

        stack = self._stacks.get(versions)
        if stack is not None:
            return stack
        stack = {}
        for m in sorted(self._differ(versions)):
            sources = [self.linears[m] if v == self.home else copies[v].get_submodule(m) for v in versions]
            weights = torch.stack([s.weight.detach().t() for s in sources]).contiguous()
            bias = (None if sources[0].bias is None
                    else torch.stack([s.bias.detach() for s in sources]).unsqueeze(1).contiguous())
            stack[m] = (weights, bias)
        self._stacks[versions] = stack
        return stack

    @contextlib.contextmanager
    def stacked(self, versions: Sequence[str | None], copies: dict) -> Iterator[None]:
        """For one batch of ``len(versions)`` equal groups of rows, in this order: group g runs on ``versions[g]``'s
        full weights (the home's: the base as it is; another's: its merged copy in ``copies``), all in one pass."""
        versions = tuple(versions)
        for v in versions:
            if not self.stackable(v, copies):
                raise ValueError(f"version {v!r} has no full weights to stack (not the home, no merged copy)")
        stack = self._stack(versions, copies)
        with self._hooked(stack, ((m, _stacked_forward(w, bias, len(versions))) for m, (w, bias) in stack.items())):
            yield
