"""Merged mode: each version a plain model with its adapter merged in, answering as the unmerged adapter does."""

from __future__ import annotations

import pytest

from lifecycle.prompting import INTENT_V1
from serving.backend import InProcessBackend


def open_with(tiny_base_model, adapters, mode: str) -> InProcessBackend:
    b = InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", adapter_mode=mode)
    for name, folder in adapters.items():
        b.load_adapter(name, folder)
    return b


@pytest.fixture(scope="module")
def merged(tiny_base_model, adapters) -> InProcessBackend:
    return open_with(tiny_base_model, adapters, "merged")


@pytest.fixture(scope="module")
def unmerged(tiny_base_model, adapters) -> InProcessBackend:
    return open_with(tiny_base_model, adapters, "unmerged")


@pytest.fixture(scope="module")
def prompts(tiny_before_pairs, tiny_drifted_pairs) -> list[str]:
    return [p.prompt for p in tiny_before_pairs[:20] + tiny_drifted_pairs[:20]]


def texts(backend, prompts, names) -> list[str]:
    return [g.text for g in backend.generate(prompts, names, max_batch=16)]


def test_the_mode_is_resolved_and_merged_keeps_the_base_bare(merged, unmerged):
    assert (merged.mode, unmerged.mode) == ("merged", "unmerged")
    assert merged.loaded() == unmerged.loaded() == ["drift", "mixed"]
    assert merged._peft is None and not any("lora" in n for n, _ in merged._model.named_parameters())
    for model in merged._merged.values():
        assert not any("lora" in n for n, _ in model.named_parameters())
        assert model is not merged._model


@pytest.mark.parametrize("name", [None, "drift", "mixed"])
def test_single_version_batches_answer_as_the_unmerged_adapter_does(merged, unmerged, prompts, name):
    # Merged weights differ from base + B·A by float rounding only: greedy answers are identical here.
    assert texts(merged, prompts, [name] * len(prompts)) == texts(unmerged, prompts, [name] * len(prompts))


def test_mixed_batches_answer_as_the_unmerged_adapters_do(merged, unmerged, prompts):
    names = [("drift", "mixed", None)[i % 3] for i in range(len(prompts))]
    got = merged.generate(prompts, names, max_batch=16)
    assert [g.text for g in got] == texts(unmerged, prompts, names)
    assert [g.adapter for g in got] == names
    # Every row of one call waited for the whole call.
    assert len({g.latency_ms for g in got}) == 1 and got[0].latency_ms > 0
    single = {n: texts(merged, prompts, [n] * len(prompts)) for n in ("drift", "mixed", None)}
    assert [g.text for g in got] == [single[n][i] for i, n in enumerate(names)]
    assert single["drift"] != single["mixed"] != single[None]


def test_load_and_unload_in_merged_mode(tiny_base_model, adapters, prompts):
    b = InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", adapter_mode="merged")
    bare = texts(b, prompts, [None] * len(prompts))
    b.load_adapter("drift", adapters["drift"])
    first = texts(b, prompts, ["drift"] * len(prompts))
    assert first != bare
    b.load_adapter("mixed", adapters["mixed"])
    b.unload_adapter("drift")
    assert b.loaded() == ["mixed"] and list(b._merged) == ["mixed"]
    with pytest.raises(KeyError, match="not loaded"):
        b.generate(prompts[:1], ["drift"])
    b.load_adapter("drift", adapters["drift"])
    assert texts(b, prompts, ["drift"] * len(prompts)) == first
    b.unload_adapter("drift")
    b.unload_adapter("mixed")
    assert b.loaded() == [] and b._merged == {} and b.mode == "merged"
    assert texts(b, prompts, [None] * len(prompts)) == bare


def test_errors_are_the_same_in_merged_mode(merged, tiny_base_model, adapters, tmp_path):
    with pytest.raises(ValueError, match="adapter_mode"):
        InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", adapter_mode="fastest")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        InProcessBackend(tmp_path / "missing", INTENT_V1, device="cpu", adapter_mode="merged")
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        merged.load_adapter("x", tmp_path)
    with pytest.raises(KeyError, match="not loaded"):
        merged.generate(["hello"], ["nope"])
    with pytest.raises(ValueError, match="already loaded"):
        merged.load_adapter("drift", adapters["drift"])
    with pytest.raises(ValueError, match="reserved"):
        merged.load_adapter("__base__", adapters["drift"])
    with pytest.raises(ValueError, match="one per prompt"):
        merged.generate(["a", "b"], [None])
    with pytest.raises(ValueError, match="at least 1"):
        merged.generate(["a"], [None], max_batch=0)
    with pytest.raises(KeyError, match="not loaded"):
        merged.unload_adapter("nope")
    assert merged.generate([], []) == []
    assert merged.loaded() == ["drift", "mixed"] and sorted(merged._merged) == ["drift", "mixed"]


@pytest.mark.parametrize("mode", ["merged", "unmerged", "fused"])
def test_loading_an_adapter_does_not_warn_about_peft_internals(tiny_base_model, adapters, mode):
    """peft 0.21 warns on every wrap that transformers 5 deprecated a method peft itself calls: noise in every
    worker log that loads an adapter (the benchmark task's, the gateway's), silenced where serving wraps."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_with(tiny_base_model, adapters, mode)
    assert [str(w.message) for w in caught if "is_gradient_checkpointing" in str(w.message)] == []


def test_silencing_peft_keeps_filters_other_threads_add_meanwhile():
    """A loader thread's quiet_peft must not restore the process-wide filter list when it ends: a filter another
    thread added in the meantime (a second adapter load, a library's import) stays, and the silencing filter is
    there once however many loads ran."""
    import warnings

    from serving.fused_lora import quiet_peft

    with warnings.catch_warnings():  # this test's own changes go when it ends
        with quiet_peft():
            warnings.filterwarnings("ignore", message="added by another thread", category=UserWarning)
        with quiet_peft():
            pass
        messages = [f[1].pattern for f in warnings.filters if f[1] is not None]
        assert "added by another thread" in messages
        assert messages.count("`is_gradient_checkpointing` is deprecated") == 1
