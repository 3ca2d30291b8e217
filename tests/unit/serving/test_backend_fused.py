"""Fused mode: one base with the home version merged in, the other versions as per-row deltas in one pass.

The reference is merged mode (a plain merged model per version, each group its own ``generate``): every row
of a fused batch, mixed or not, must answer what its version answers there, whichever version is home.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from lifecycle.prompting import INTENT_V1
from serving.backend import SPLIT_MIN_ROWS, STACK_MAX_DECODE_ROWS, STACK_MAX_ROWS, InProcessBackend


def open_with(base, adapters, mode: str) -> InProcessBackend:
    b = InProcessBackend(base, INTENT_V1, device="cpu", adapter_mode=mode)
    for name, folder in adapters.items():
        b.load_adapter(name, folder)
    return b


@pytest.fixture(scope="module")
def more_adapters(tiny_base_model, tiny_drifted_pairs, adapters, tmp_path_factory) -> dict:
    """The session's two adapters plus one without the output head (attention and MLP layers only)."""
    from training.lora import LoraRecipe, train_lora

    out = tmp_path_factory.mktemp("headless") / "headless"
    recipe = LoraRecipe(r=8, alpha=16, max_steps=60, batch_size=16, log_every=10, lr=2e-2, seed=2,
                        include_output_head=False)
    train_lora(tiny_base_model[0], tiny_drifted_pairs, recipe, out, device="cpu")
    return {**adapters, "headless": out}


@pytest.fixture(scope="module")
def merged(tiny_base_model, more_adapters) -> InProcessBackend:
    return open_with(tiny_base_model[0], more_adapters, "merged")


@pytest.fixture(scope="module")
def fused(tiny_base_model, more_adapters) -> InProcessBackend:
    return open_with(tiny_base_model[0], more_adapters, "fused")


@pytest.fixture(scope="module")
def prompts(tiny_before_pairs, tiny_drifted_pairs) -> list[str]:
    """Every prompt of both worlds the fixtures hold (200), unseen ones included."""
    return [p.prompt for p in tiny_before_pairs + tiny_drifted_pairs]


NAMES = ("drift", "mixed", "headless", None)


def texts(backend, prompts, names) -> list[str]:
    return [g.text for g in backend.generate(prompts, names, max_batch=32)]


def pin(backend: InProcessBackend, home: str | None) -> None:
    """Make ``home`` the merged version and let no traffic count move it during the test."""
    backend._fused.rehome(home)
    backend._fused.traffic = {home: 1e9}


@pytest.fixture(scope="module")
def alone(merged, prompts) -> dict[str | None, list[str]]:
    """Each version's answers, served alone by the reference (merged mode)."""
    return {n: texts(merged, prompts, [n] * len(prompts)) for n in NAMES}


def test_auto_is_fused_and_the_factors_are_read_as_peft_has_them(fused, more_adapters, tiny_base_model):
    assert fused.mode == "fused" and InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu").mode == "fused"
    assert fused.loaded() == ["drift", "headless", "mixed"] and fused._peft is None
    assert not any("lora" in n for n, _ in fused._model.named_parameters())  # peft was unloaded after reading
    assert "lm_head" in fused._fused.factors["drift"] and "lm_head" not in fused._fused.factors["headless"]
    assert len(fused._fused.factors["headless"]) == len(fused._fused.factors["drift"]) - 1


@pytest.mark.parametrize("home", [None, "drift", "headless"])
def test_every_row_answers_as_its_version_alone_whichever_version_is_home(fused, alone, prompts, home):
    pin(fused, home)
    names = [NAMES[i % len(NAMES)] for i in range(len(prompts))]
    got = fused.generate(prompts, names, max_batch=32)
    assert [g.text for g in got] == [alone[n][i] for i, n in enumerate(names)]
    assert [g.adapter for g in got] == names
    for n in NAMES:  # one-version batches: the home's plain, the others' delta on every row
        assert texts(fused, prompts, [n] * len(prompts)) == alone[n], n
    for i, n in enumerate(NAMES):  # 1-row batches, as a lone caller sends them
        assert texts(fused, prompts[i:i + 1], [n]) == [alone[n][i]]
    assert fused.home == home
    assert len({tuple(v) for v in alone.values()}) == len(NAMES)  # the versions really answer differently


def test_a_batch_of_home_rows_does_no_delta_work(fused, prompts):
    pin(fused, "mixed")
    assert fused._fused._plans == {}
    fused.generate(prompts[:8], ["mixed"] * 8)
    assert fused._fused._plans == {}  # no delta was ever built: the merged base served them as it is
    fused.generate(prompts[:8], ["mixed", "drift"] * 4)
    assert list(fused._fused._plans) == [("drift",)]
    assert not any("forward" in vars(m) for m in fused._fused.linears.values())  # hooks gone after the batch
    for a, b, _ in fused._fused._plans[("drift",)].values():  # kept as the block's mm takes them: nothing to copy
        assert a.t().contiguous().data_ptr() == a.data_ptr() and b.t().contiguous().data_ptr() == b.data_ptr()


def test_a_hook_that_fails_half_way_through_a_batch_leaves_no_hook_behind(fused, prompts, monkeypatch):
    import serving.fused_lora as fl

    pin(fused, "mixed")
    made, real = [], fl._delta_forward

    def failing(*args):
        if len(made) == 5:
            raise RuntimeError("out of memory (simulated)")
        made.append(args[0])
        return real(*args)

    monkeypatch.setattr(fl, "_delta_forward", failing)
    with pytest.raises(RuntimeError, match="simulated"), fused._fused.applied(["mixed", "drift"]):
        pass
    assert len(made) == 5 and not any("forward" in vars(m) for m in fused._fused.linears.values())
    monkeypatch.undo()
    assert texts(fused, prompts[:4], ["mixed"] * 4) == texts(fused, prompts[:4], ["mixed"] * 4)  # still serves


def test_the_home_follows_the_traffic_and_a_50_50_split_does_not_flap(tiny_base_model, adapters, prompts):
    b = open_with(tiny_base_model[0], adapters, "fused")
    assert b.home is None
    b.generate(prompts[:16], ["drift"] * 16)
    assert b.home is None  # too few rows to move the weights for
    b.generate(prompts[:40], ["drift"] * 36 + [None] * 4)
    assert b.home == "drift"
    for _ in range(10):
        b.generate(prompts[:40], ["drift", "mixed"] * 20)
    assert b.home == "drift"
    for _ in range(10):  # a promotion: all traffic to the other version
        b.generate(prompts[:40], ["mixed"] * 40)
    assert b.home == "mixed"


def test_unloading_the_home_restores_the_base_bit_for_bit(tiny_base_model, adapters, prompts):
    import torch
    from transformers import AutoModelForCausalLM

    b = open_with(tiny_base_model[0], adapters, "fused")
    bare = texts(b, prompts[:40], [None] * 40)
    b._fused.rehome("drift")
    first = texts(b, prompts[:40], ["drift"] * 40)
    b.unload_adapter("drift")
    assert b.home is None and b.loaded() == ["mixed"]
    pristine = AutoModelForCausalLM.from_pretrained(tiny_base_model[0], local_files_only=True).state_dict()
    now = b._model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in pristine.items())
    with pytest.raises(KeyError, match="not loaded"):
        b.generate(prompts[:1], ["drift"])
    b.load_adapter("drift", adapters["drift"])
    assert texts(b, prompts[:40], ["drift"] * 40) == first
    b._fused.rehome("mixed")
    b.unload_adapter("drift")
    b.unload_adapter("mixed")
    assert b.loaded() == [] and b.home is None and b._fused.factors == {}
    assert texts(b, prompts[:40], [None] * 40) == bare


def test_a_tied_output_head_is_untied_for_the_home_and_tied_again_after(tiny_base_config, tiny_before_pairs,
                                                                        tiny_drifted_pairs, tmp_path):
    """A base whose head shares the input embedding: merging the home's head delta must leave the embedding
    alone (peft's unmerged adapter, the reference here, changes only the head's output)."""
    import torch

    from training.base_model import build_base_model
    from training.lora import LoraRecipe, train_lora

    base = tmp_path / "tied"
    build_base_model(tiny_before_pairs, base, tiny_base_config.model_copy(update={"tie_embeddings": True}),
                     threads=1, device="cpu")
    recipe = LoraRecipe(r=4, alpha=8, max_steps=40, batch_size=16, log_every=10, lr=2e-2)
    train_lora(base, tiny_drifted_pairs, recipe, tmp_path / "head", device="cpu")
    fused = open_with(base, {"head": tmp_path / "head"}, "fused")
    unmerged = open_with(base, {"head": tmp_path / "head"}, "unmerged")
    embed = fused._model.get_input_embeddings().weight
    assert fused._model.get_output_embeddings().weight is embed and fused._fused._tied == "lm_head"
    before = embed.detach().clone()
    prompts = [p.prompt for p in tiny_before_pairs[:20] + tiny_drifted_pairs[:20]]
    names = ["head", None] * 20
    want = texts(unmerged, prompts, names)
    fused._fused.rehome("head")
    assert fused._model.get_output_embeddings().weight is not embed and torch.equal(embed, before)
    assert texts(fused, prompts, names) == want
    fused.unload_adapter("head")
    assert fused._model.get_output_embeddings().weight is embed and torch.equal(embed, before)
    # Merged copies (merged mode, and auto's copy for a lone version's batches) untie before merging: the head
    # takes the delta, the input embedding stays the base's, and they answer as the unmerged adapter does.
    for mode in ("merged", "auto"):
        other = open_with(base, {"head": tmp_path / "head"}, mode)
        copy = other._merged["head"]
        assert torch.equal(copy.get_input_embeddings().weight, before), mode
        assert not torch.equal(copy.get_output_embeddings().weight, before), mode
        assert texts(other, prompts, names) == want, mode
        assert texts(other, prompts, ["head"] * len(prompts)) == texts(unmerged, prompts, ["head"] * len(prompts))


def test_an_adapter_that_is_not_plain_linear_lora_is_refused_with_the_way_out(tiny_base_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base_model[0], local_files_only=True)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], use_dora=True)).save_pretrained(tmp_path)
    b = InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", adapter_mode="fused")
    with pytest.raises(ValueError, match="adapter_mode='unmerged'"):
        b.load_adapter("dora", tmp_path)
    assert b.loaded() == [] and not any("lora" in n for n, _ in b._model.named_parameters())


def test_auto_runs_a_lone_version_through_its_merged_copy_while_copies_fit(tiny_base_model, more_adapters, alone,
                                                                          prompts):
    b = open_with(tiny_base_model[0], more_adapters, "auto")
    assert b.mode == "fused" and sorted(b._merged) == ["drift", "headless", "mixed"]
    pin(b, "drift")
    assert texts(b, prompts, ["mixed"] * len(prompts)) == alone["mixed"]
    assert b._fused._plans == {}  # the copy served it: no delta was built
    names = [NAMES[i % len(NAMES)] for i in range(len(prompts))]
    assert texts(b, prompts, names) == [alone[n][i] for i, n in enumerate(names)]
    assert b._fused._plans  # the mixed batch took the fused pass
    b.unload_adapter("mixed")
    assert sorted(b._merged) == ["drift", "headless"]
    one_mb = b._param_bytes / 2**20  # room for the base and one copy: the second version is served fused only
    small = InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", merged_memory_limit_mb=2.5 * one_mb)
    small.load_adapter("drift", more_adapters["drift"])
    small.load_adapter("mixed", more_adapters["mixed"])
    assert list(small._merged) == ["drift"]
    assert texts(small, prompts, ["mixed"] * len(prompts)) == alone["mixed"]


@pytest.fixture(scope="module")
def auto(tiny_base_model, more_adapters) -> InProcessBackend:
    return open_with(tiny_base_model[0], more_adapters, "auto")


@contextlib.contextmanager
def passes_of(backend: InProcessBackend, split_min_rows: int | None,
              stack: bool = True) -> Iterator[list[list[str | None]]]:
    """The adapters of every ``generate`` pass the backend makes, with ``split_min_rows`` set and stacked passes
    allowed or not for the moment."""
    passes: list[list[str | None]] = []
    plain, before = backend._generate_ids, (backend.split_min_rows, backend._stack)

    def spy(encoded, adapters):
        passes.append(list(adapters))
        return plain(encoded, adapters)

    backend._generate_ids, backend.split_min_rows, backend._stack = spy, split_min_rows, stack and backend._stack
    try:
        yield passes
    finally:
        del backend._generate_ids
        backend.split_min_rows, backend._stack = before


def r(start: int, stop: int) -> list[int]:
    return list(range(start, stop))


def test_auto_splits_a_mixed_batch_only_when_every_pass_gets_enough_rows(auto, merged):
    pin(auto, "drift")
    n = auto.split_min_rows
    assert n == SPLIT_MIN_ROWS >= 2
    with passes_of(auto, n, stack=False):
        split_decisions(auto, n)
    fused = InProcessBackend(auto.base_dir, INTENT_V1, device="cpu", adapter_mode="fused")  # no copies to split to
    assert fused._merged == {} and fused._passes(["mixed", "drift"] * n) == [r(0, 2 * n)]  # no home: no order
    assert merged._passes(["mixed", "drift"] * n) == [r(0, 2 * n)]  # other modes: the batch as it is
    for bad in (0, -1):
        with pytest.raises(ValueError, match="split_min_rows"):
            InProcessBackend(auto.base_dir, INTENT_V1, device="cpu", split_min_rows=bad)


def split_decisions(auto: InProcessBackend, n: int) -> None:
    assert auto._passes(["mixed", "drift"] * n) == [r(0, 2 * n)[0::2], r(0, 2 * n)[1::2]]
    # No split: one fused pass, the home's rows first (the other version's rows then form one block).
    assert auto._passes(["mixed"] * n + ["drift"] * (n - 1)) == [r(n, 2 * n - 1) + r(0, n)]  # too few home rows
    assert auto._passes(["mixed"] * (n - 1) + ["drift"] * n) == [r(n - 1, 2 * n - 1) + r(0, n - 1)]  # too few others
    assert auto._passes(["mixed"] * (2 * n)) == [r(0, 2 * n)]
    # Several versions: the biggest non-home groups with a merged copy first, each its own pass while n rows stay
    # for the last pass, which takes the rest in one fused pass (here the home and the bare base: no copy).
    names = ["headless"] * n + ["mixed"] * (n + 1) + [None] * 2 + ["drift"] * (n - 2)
    assert auto._passes(names) == [r(n, 2 * n + 1), r(0, n), r(2 * n + 3, len(names)) + [2 * n + 1, 2 * n + 2]]
    auto.split_min_rows = None  # None: never split
    assert auto._passes(["mixed", "drift"] * n) == [r(0, 2 * n)[1::2] + r(0, 2 * n)[0::2]]


def test_the_delta_on_a_block_of_rows_equals_the_gathered_delta_and_the_plain_sum():
    """The three ways a delta reaches its rows (all rows, a contiguous block, a gather) add the same numbers (up to
    rounding: the block adds inside the matmul)."""
    import torch

    from serving.fused_lora import _delta_forward

    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 24)
    a, b = torch.randn(6, 16), torch.randn(24, 6)
    x = torch.randn(5, 3, 16)
    want = linear(x).detach()
    want[2:] += (x[2:] @ a.T) @ b.T
    mask = torch.tensor([[1.0] * 3 + [0.0] * 3, [0.0] * 3 + [1.0] * 3, [1.0] * 6]).unsqueeze(1)
    masked = linear(x).detach()
    masked[2:] += ((x[2:] @ a.T) * mask) @ b.T
    with torch.inference_mode():
        block = _delta_forward(linear, a, b, slice(2, 5), None)(x)
        gathered = _delta_forward(linear, a, b, torch.tensor([2, 3, 4]), None)(x)
        assert torch.allclose(block, want, atol=1e-5) and torch.allclose(block, gathered, atol=1e-5)
        assert torch.equal(block[:2], linear(x)[:2])  # the rows outside the block are untouched
        last = torch.randn(5, 4, 16)[:, -1:, :]  # the output head sees the last position only: not contiguous
        assert torch.allclose(_delta_forward(linear, a, b, slice(2, 5), None)(last),
                              _delta_forward(linear, a, b, torch.tensor([2, 3, 4]), None)(last), atol=1e-5)
        block = _delta_forward(linear, a, b, slice(2, 5), mask)(x)
        assert torch.allclose(block, masked, atol=1e-5)
        assert torch.equal(block, _delta_forward(linear, a, b, torch.tensor([2, 3, 4]), mask)(x))
        every = _delta_forward(linear, a, b, None, None)(x)
        assert torch.allclose(every, linear(x) + (x @ a.T) @ b.T, atol=1e-5)
        at, bt = a.t().contiguous().t(), b.t().contiguous().t()  # the plan's layout: transposed views
        for rows, cols in ((slice(2, 5), None), (torch.tensor([2, 3, 4]), None), (slice(2, 5), mask), (None, None)):
            assert torch.allclose(_delta_forward(linear, at, bt, rows, cols)(x),
                                  _delta_forward(linear, a, b, rows, cols)(x), atol=1e-6)


@pytest.mark.parametrize("home", ["drift", "headless", None])
def test_split_batches_answer_as_each_version_alone(auto, alone, prompts, home):
    pin(auto, home)
    names = [NAMES[i % len(NAMES)] for i in range(len(prompts))]
    with passes_of(auto, 4) as passes:
        got = auto.generate(prompts, names, max_batch=32)
    assert [g.text for g in got] == [alone[n][i] for i, n in enumerate(names)]
    assert [g.adapter for g in got] == names
    batches = -(-len(prompts) // 32)
    assert len(passes) > batches and all(len(p) >= 4 for p in passes)  # split, and no pass below the limit
    assert sum(map(len, passes)) == len(prompts)
    assert any(len(set(p)) == 1 and p[0] != home for p in passes)  # a plain pass on a merged copy
    # Two versions with merged copies or home: every pass is plain, no delta is built, and every row of a batch
    # waited for all of its batch's passes.
    other = "mixed" if home is not None else "drift"
    two = [(home or "headless", other)[i % 2] for i in range(64)]
    auto._fused._plans.clear()
    with passes_of(auto, 4) as passes:
        got = auto.generate(prompts[:64], two, max_batch=32)
    assert [g.text for g in got] == [alone[n][i] for i, n in enumerate(two)]
    assert len(passes) == 4 and all(len(set(p)) == 1 for p in passes) and auto._fused._plans == {}
    assert len({g.latency_ms for g in got}) == 2


def test_the_stacked_forward_runs_each_group_of_rows_through_its_own_weights():
    import torch

    from serving.fused_lora import _stacked_forward

    torch.manual_seed(0)
    one, two = torch.nn.Linear(16, 24), torch.nn.Linear(16, 24)
    weights = torch.stack([one.weight.detach().t(), two.weight.detach().t()]).contiguous()
    bias = torch.stack([one.bias.detach(), two.bias.detach()]).unsqueeze(1)
    with torch.inference_mode():
        for x in (torch.randn(6, 3, 16), torch.randn(6, 5, 16)[:, -1:, :]):  # the head sees a non-contiguous slice
            want = torch.cat([one(x[:3]), two(x[3:])])
            assert torch.allclose(_stacked_forward(weights, bias, 2)(x), want, atol=1e-5)
            without = want - torch.cat([one.bias.expand(3, x.shape[1], 24), two.bias.expand(3, x.shape[1], 24)])
            assert torch.allclose(_stacked_forward(weights, None, 2)(x), without, atol=1e-5)


def test_auto_stacks_small_mixed_batches_whose_groups_need_little_padding(auto, tiny_base_model):
    pin(auto, "drift")
    groups = auto._stack_groups
    assert groups(["mixed", "drift", "drift", "mixed"]) == {"drift": [1, 2], "mixed": [0, 3]}  # the home's first
    assert groups(["mixed"] * 4 + ["drift"] * 3) is not None  # one padding row in 8: stacked throughout
    assert auto._stop_ids is not None and auto._forward_takes_cache  # so more padding can go to decode steps only
    assert groups(["mixed"] * 3 + ["drift"]) == {"drift": [3], "mixed": [0, 1, 2]}  # 2 padding rows to 4 rows
    assert groups(["mixed"] * 7 + ["drift"] * 3) is not None  # 4 to 10, 14 in all
    assert groups(["mixed"] * 5 + ["drift"]) is None  # 4 to 6: more than half, the fused pass costs less
    assert STACK_MAX_DECODE_ROWS == 16
    assert groups(["mixed"] * 9 + ["drift"] * 5) is None  # 4 to 14, but 18 rows a step: over STACK_MAX_DECODE_ROWS
    assert groups(["mixed", None]) is None  # the bare base has no weights of its own while "drift" is home
    assert groups(["mixed"] * 4) is None  # one version: a plain pass
    assert auto._passes(["mixed", "drift"] * (STACK_MAX_ROWS // 2)) == [r(0, STACK_MAX_ROWS)]  # one stacked pass
    many = ["mixed", "drift"] * (STACK_MAX_ROWS // 2 + 1)  # more rows: the split goes first (two plain passes)
    assert auto._passes(many) == [r(0, len(many))[0::2], r(0, len(many))[1::2]]
    three = ["mixed", "drift", "headless"] * 6  # equal groups of three versions, 18 rows: one stacked pass
    assert auto._passes(three) == [r(0, 18)] and groups(three) is not None
    auto.stack_max_rows = 10  # a smaller bound holds for both kinds of stacking
    try:
        assert groups(["mixed"] * 5 + ["drift"] * 5) is not None
        assert groups(["mixed"] * 6 + ["drift"] * 5) is None  # one padding row in 12 would do, but 11 rows
        assert groups(["mixed"] * 3 + ["drift"] * 2) is not None  # decode steps only: 6 rows a step
        assert groups(["mixed"] * 6 + ["drift"] * 3) is None  # decode steps only, 12 rows a step: over 10
        assert auto._passes(["mixed", "drift"] * 6) == [r(0, 12)[1::2] + r(0, 12)[0::2]]  # fused, home first
    finally:
        auto.stack_max_rows = STACK_MAX_ROWS
    auto.stack_max_decode_rows = 24  # the decode steps' own bound, a setting (within stack_max_rows)
    try:
        assert groups(["mixed"] * 9 + ["drift"] * 5) is not None  # 18 rows a step now fit
        assert groups(["mixed"] * 12 + ["drift"] * 8) is not None  # 20 + 4 = 24 rows a step: the bound itself
        assert groups(["mixed"] * 13 + ["drift"] * 7) is None  # 20 + 6 = 26 rows a step: over 24
        auto.stack_max_rows = 20  # the smaller of the two bounds holds
        assert groups(["mixed"] * 12 + ["drift"] * 8) is None  # 24 rows a step: over 20
        assert groups(["mixed"] * 9 + ["drift"] * 5) is not None  # 18
    finally:
        auto.stack_max_decode_rows, auto.stack_max_rows = STACK_MAX_DECODE_ROWS, STACK_MAX_ROWS
    for off in ({"stack_max_params": None}, {"stack_max_params": 1000}, {"adapter_mode": "fused"}):
        assert not InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", **off)._stack, off



def test_decode_only_stacking_is_for_the_smallest_models(tiny_base_model, more_adapters):
    b = InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", stack_max_decode_params=1000)  # tiny is bigger
    for name in ("drift", "mixed"):
        b.load_adapter(name, more_adapters[name])
    pin(b, "drift")
    assert b._stack and not b._stack_decode
    assert b._stack_groups(["mixed", "drift"] * 2) is not None  # equal groups still stack
    assert b._stack_groups(["mixed"] * 3 + ["drift"]) is None  # unequal ones take the fused pass


def test_stacks_count_in_the_memory_budget_and_one_past_it_is_not_built(auto, more_adapters, tiny_base_model,
                                                                         alone, prompts):
    pin(auto, "drift")
    names = ["drift", "mixed"] * 3
    need = auto._fused.stack_bytes(["drift", "mixed"])
    adapted = sum(auto._fused.linears[m].weight.numel() * 4 + (auto._fused.linears[m].bias is not None)
                  * auto._fused.linears[m].out_features * 4 for m in auto._fused._differ(["drift", "mixed"]))
    assert need == 2 * adapted > 0  # a copy of the adapted layers for each of the two versions
    assert texts(auto, prompts[:6], names) == [alone[n][i] for i, n in enumerate(names)]
    assert auto._fused.stack_bytes(["drift", "mixed"]) == 0 and auto._fused.stack_bytes() == need  # built, held
    auto._fused._forget_plans()  # the module's backend: the next tests count their own stacks

    one_mb = auto._param_bytes / 2**20  # room for the base and two copies, and less than one stack more
    tight = InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu",
                             merged_memory_limit_mb=3 * one_mb + 0.5 * need / 2**20)
    for name in ("drift", "mixed"):
        tight.load_adapter(name, more_adapters[name])
    pin(tight, "drift")
    assert sorted(tight._merged) == ["drift", "mixed"] and tight._stack_groups(names) is None
    assert texts(tight, prompts[:6], names) == [alone[n][i] for i, n in enumerate(names)]
    assert tight._fused._stacks == {} and tight._fused._plans  # the fused pass served the mixed batch


@pytest.mark.parametrize("home", ["drift", "headless", None])
def test_stacked_batches_answer_as_each_version_alone(auto, alone, prompts, home):
    pin(auto, home)
    assert auto._fused._stacks == {}  # a new home: stacks built for the old one are gone
    first, second = [n for n in ("drift", "mixed", "headless") if n != home][:2]
    shapes = ([home, first] * 6, [first, second] * 5 + [first], [first, second, home] * 4)  # 6+6, 6+5, 4+4+4
    auto._fused._plans.clear()
    for k, start in enumerate(range(0, len(prompts) - 12, 12)):
        names = shapes[k % len(shapes)][: len(prompts) - start]
        with passes_of(auto, SPLIT_MIN_ROWS) as passes:
            got = auto.generate(prompts[start:start + len(names)], names)
        assert [g.text for g in got] == [alone[n][start + i] for i, n in enumerate(names)], names
        assert len(passes) == 1 and auto._stack_groups(passes[0]) is not None
    assert auto._fused._plans == {}  # no delta was built: every batch ran stacked
    assert len(auto._fused._stacks) == 3  # one stack per set of versions, kept for the next batch
    assert not any("forward" in vars(m) for m in auto._fused.linears.values())  # hooks gone after the batch


def test_a_whole_gateway_batch_of_two_near_equal_groups_runs_stacked_and_answers_as_each_version_alone(
        auto, alone, prompts):
    pin(auto, "drift")
    names = ["drift", "mixed"] * 15 + ["mixed"]  # 15 + 16 rows: one padding row, over the old 16-row bound
    for start in (0, 31, 62):
        with passes_of(auto, SPLIT_MIN_ROWS) as passes:
            got = auto.generate(prompts[start:start + 31], names)
        assert [g.text for g in got] == [alone[n][start + i] for i, n in enumerate(names)]
        assert len(passes) == 1 and auto._stack_groups(passes[0]) is not None  # not split into two plain passes


@pytest.mark.parametrize("home", ["drift", None])
def test_batches_stacked_in_their_decode_steps_only_answer_as_each_version_alone(auto, alone, prompts, home):
    """Groups too unequal to pad their prompts (3+1, 5+3, 1+2, 3+1+1 rows) read them in one fused pass and run only
    the decode steps stacked: every answer is the version's own, rows stopping at different steps included."""
    pin(auto, home)
    first, second = [n for n in ("drift", "mixed", "headless") if n != home][:2]
    shapes = ([home] * 3 + [first], [first] * 5 + [home] * 3, [second, home, second],
              [first, home, second, home, home, first, second, home])  # 3+1, 5+3, 1+2, 4+2+2
    decoded, plain = [], auto._decode_stacked

    def spy(encoded, adapters, groups, layout):
        decoded.append(len(layout) - len(encoded))  # the padding rows of the decode steps
        return plain(encoded, adapters, groups, layout)

    auto._decode_stacked, lengths = spy, set()
    try:
        for k, start in enumerate(range(0, len(prompts) - 8, 8)):
            names = shapes[k % len(shapes)]
            got = auto.generate(prompts[start:start + len(names)], names)
            assert [g.text for g in got] == [alone[n][start + i] for i, n in enumerate(names)], names
            assert len(decoded) == k + 1  # every batch took the path
            lengths.add(tuple(sorted(g.completion_tokens for g in got)))
    finally:
        del auto._decode_stacked
    assert set(decoded) == {1, 2, 4}  # padding rows: 2 to 3+1 and to 5+3, 1 to 1+2, 4 to 4+2+2
    assert any(len(set(batch)) > 1 for batch in lengths)  # rows of one batch stopped at different steps
    assert not any("forward" in vars(m) for m in auto._fused.linears.values())  # hooks gone after the batch


def test_without_one_token_stops_unequal_groups_take_the_fused_pass(auto, alone, prompts, monkeypatch):
    pin(auto, "drift")
    monkeypatch.setattr(auto, "_stop_ids", None)  # a multi-token stop string: generate's own criteria must end rows
    names = ["drift"] * 3 + ["mixed"]
    assert auto._stack_groups(names) is None and auto._stack_groups(["drift", "mixed"] * 2) is not None
    got = auto.generate(prompts[:4], names)
    assert [g.text for g in got] == [alone[n][i] for i, n in enumerate(names)]


@pytest.mark.parametrize("bad", [0, -8])
def test_a_split_threshold_below_one_row_is_refused_with_its_meaning(tiny_base_model, bad):
    with pytest.raises(ValueError, match=f"split_min_rows must be at least 1 .*got {bad}"):
        InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", split_min_rows=bad)


@pytest.mark.parametrize("setting", ["stack_max_rows", "stack_max_decode_rows"])
@pytest.mark.parametrize("bad", [1, 0, -4, None, 2.5, True])
def test_a_stacking_bound_below_two_rows_is_refused_with_its_meaning(tiny_base_model, bad, setting):
    with pytest.raises(ValueError, match=f"{setting} must be a whole number of rows, at least 2 .*got {bad}"):
        InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", **{setting: bad})


def test_the_stacking_bounds_are_settings(tiny_base_model):
    backend = InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", stack_max_rows=20, stack_max_decode_rows=24)
    assert (backend.stack_max_rows, backend.stack_max_decode_rows) == (20, 24)
    default = InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu")
    assert (default.stack_max_rows, default.stack_max_decode_rows) == (STACK_MAX_ROWS, STACK_MAX_DECODE_ROWS)


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_a_negative_decode_padding_share_is_refused_with_its_meaning(tiny_base_model, bad):
    with pytest.raises(ValueError, match=f"stack_max_decode_padding must be a share of a batch's rows, 0 or more .*"
                                         f"got {bad}"):
        InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", stack_max_decode_padding=bad)


def test_decode_stacked_rows_that_do_not_stop_end_at_the_token_budget(tiny_base_model, more_adapters, prompts):
    short = INTENT_V1.model_copy(update={"max_new_tokens": 3})  # no intent name fits: every row runs to the budget
    auto, reference = (InProcessBackend(tiny_base_model[0], short, device="cpu", adapter_mode=mode)
                       for mode in ("auto", "merged"))
    for b in (auto, reference):
        for name in ("drift", "mixed"):
            b.load_adapter(name, more_adapters[name])
    pin(auto, "drift")
    names = ["drift"] * 3 + ["mixed"]
    assert auto._stack_groups(names) is not None and auto._padding(auto._stack_groups(names)) == 2
    got, want = auto.generate(prompts[:4], names), reference.generate(prompts[:4], names)
    assert [g.completion_tokens for g in got] == [3] * 4
    assert [g.text for g in got] == [g.text for g in want]


def test_the_home_delta_is_added_as_peft_merges_it_on_a_bf16_base_too():
    """peft's merge adds the fp32 delta into the bf16 weight, rounding once; the fused home must equal the merged
    copy bit for bit (rounded to bf16 first, then added, 1-2 % of the elements differed)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from serving.fused_lora import add_delta

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(256, 256, bias=False)).to(torch.bfloat16)
    original = base[0].weight.detach().clone()
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["0"], init_lora_weights=False))
    layer = model.base_model.model[0]
    a, b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
    assert a.dtype == torch.float32  # peft keeps the adapter in fp32 on a bf16 base
    ours = original.clone()
    add_delta(ours, a, b, layer.scaling["default"])
    merged = model.merge_and_unload()[0].weight.detach()
    assert torch.equal(ours, merged)
