"""The in-process backend on a tiny real model: batched greedy generation, adapters, stops, errors."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lifecycle.prompting import INTENT_V1
from serving.backend import InProcessBackend

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module", params=["fused", "merged", "unmerged", "auto"])
def backend(request, tiny_base_model, adapters) -> InProcessBackend:
    """Every adapter mode answers every test alike (test_backend_merged.py and test_backend_fused.py compare
    them row by row). "auto" is fused with merged copies: its mixed batches here run stacked or split."""
    b = InProcessBackend(tiny_base_model[0], INTENT_V1, threads=1, device="cpu", adapter_mode=request.param)
    assert b.mode == ("fused" if request.param == "auto" else request.param)
    for name, folder in adapters.items():
        b.load_adapter(name, folder)
    return b


def accuracy(gens, pairs) -> float:
    return sum(g.completion == p.completion for g, p in zip(gens, pairs, strict=True)) / len(pairs)


def test_importing_the_backend_does_not_import_torch():
    code = "import sys, serving.backend; assert not {'torch', 'transformers', 'peft'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_base_answers_in_input_order_and_stops_at_the_stop_string(backend, tiny_before_pairs):
    pairs = tiny_before_pairs[:48]
    gens = backend.generate([p.prompt for p in pairs], [None] * len(pairs), max_batch=16)
    assert accuracy(gens, pairs) > 0.8
    for g, p in zip(gens, pairs, strict=True):
        assert g.text.endswith(INTENT_V1.stop) and g.text.count(INTENT_V1.stop) == 1
        assert g.completion == INTENT_V1.parse(g.text) and g.adapter is None
        assert 0 < g.completion_tokens <= INTENT_V1.max_new_tokens and g.latency_ms > 0
        assert g.finish_reason == "stop"
        assert g.prompt_tokens == len(backend.tokenizer.encode(INTENT_V1.render(p.prompt), add_special_tokens=False))
    one_batch = backend.generate([p.prompt for p in pairs], [None] * len(pairs), max_batch=64)
    assert [g.text for g in one_batch] == [g.text for g in gens]


def test_a_multi_token_stop_string_and_the_token_budget_end_rows(backend, tiny_base_model, tiny_before_pairs):
    prompts = [p.prompt for p in tiny_before_pairs[:16]]
    full = [g.text for g in backend.generate(prompts, [None] * len(prompts))]
    cut = InProcessBackend(tiny_base_model[0], INTENT_V1.model_copy(update={"stop": "_arrival"}), device="cpu")
    for g, text in zip(cut.generate(prompts, [None] * len(prompts)), full, strict=True):
        if text == " card_arrival\n":
            assert g.text == " card_arrival" and g.completion == "card" and g.finish_reason == "stop"
        else:  # "\n" no longer ends a row: it runs on until "_arrival" or the token budget
            assert g.text.startswith(text) and (g.text.endswith("_arrival") or g.completion_tokens == 16)
            assert g.finish_reason == ("stop" if g.text.endswith("_arrival") else "length")
    assert " card_arrival\n" in full
    short = InProcessBackend(tiny_base_model[0], INTENT_V1.model_copy(update={"max_new_tokens": 2}), device="cpu")
    for g, text in zip(short.generate(prompts, [None] * len(prompts)), full, strict=True):
        assert g.completion_tokens == 2 and text.startswith(g.text) and g.text != text
        assert g.finish_reason == "length"  # the budget, not a stop, ended it (OpenAI's finish_reason "length")


def test_a_row_limit_clips_what_the_client_is_sent_not_the_answer(backend, tiny_before_pairs):
    prompts = [p.prompt for p in tiny_before_pairs[:6]]
    limits = [1, None, 2, 100, 1, None]
    whole = backend.generate(prompts, [None] * len(prompts))
    limited = backend.generate(prompts, [None] * len(prompts), max_tokens=limits)
    assert [g.text for g in limited] == [g.text for g in whole]  # judged and logged whole
    for g, w, limit in zip(limited, whole, limits, strict=True):
        if limit is not None and limit < w.completion_tokens:
            assert g.clipped is not None and g.clipped != w.completion
            assert INTENT_V1.parse(w.text).startswith(g.clipped)
        else:
            assert g.clipped is None
    assert sum(g.clipped is not None for g in limited) == 3
    with pytest.raises(ValueError, match="max_tokens"):
        backend.generate(prompts[:1], [None], max_tokens=[0])


def test_an_adapter_answers_the_new_intents_the_base_never_saw(backend, tiny_drifted_pairs):
    pairs = tiny_drifted_pairs[:32]
    base = backend.generate([p.prompt for p in pairs], [None] * len(pairs))
    tuned = backend.generate([p.prompt for p in pairs], ["drift"] * len(pairs))
    assert accuracy(base, pairs) == 0.0
    assert accuracy(tuned, pairs) > 0.6
    assert {g.adapter for g in tuned} == {"drift"}


def test_a_mixed_batch_answers_each_row_as_its_own_adapter_would(backend, tiny_before_pairs, tiny_drifted_pairs):
    prompts = [p.prompt for p in tiny_before_pairs[:24] + tiny_drifted_pairs[:24]]
    names = [("drift", "mixed", None)[i % 3] for i in range(len(prompts))]
    mixed = backend.generate(prompts, names)
    single = {name: backend.generate(prompts, [name] * len(prompts)) for name in ("drift", "mixed", None)}
    assert [g.text for g in mixed] == [single[n][i].text for i, n in enumerate(names)]
    assert [g.adapter for g in mixed] == names
    assert [g.text for g in single["drift"]] != [g.text for g in single["mixed"]]


@pytest.mark.parametrize("mode", ["fused", "merged", "unmerged"])
def test_unload_and_reload_give_the_same_generations(tiny_base_model, adapters, tiny_before_pairs,
                                                     tiny_drifted_pairs, mode):
    prompts = [p.prompt for p in tiny_before_pairs[:16] + tiny_drifted_pairs[:16]]
    b = InProcessBackend(tiny_base_model[0], INTENT_V1, device="cpu", adapter_mode=mode)
    bare = [g.text for g in b.generate(prompts, [None] * len(prompts))]
    b.load_adapter("drift", adapters["drift"])
    b.load_adapter("mixed", adapters["mixed"])
    first = [g.text for g in b.generate(prompts, ["drift"] * len(prompts))]
    b.unload_adapter("drift")
    assert b.loaded() == ["mixed"]
    b.load_adapter("drift", adapters["drift"])
    assert [g.text for g in b.generate(prompts, ["drift"] * len(prompts))] == first
    b.unload_adapter("drift")
    b.unload_adapter("mixed")
    assert b.loaded() == []
    assert [g.text for g in b.generate(prompts, [None] * len(prompts))] == bare


def test_concurrent_callers_get_what_sequential_callers_get(backend, tiny_before_pairs, tiny_drifted_pairs):
    prompts = [p.prompt for p in tiny_before_pairs[:12] + tiny_drifted_pairs[:12]]
    jobs = [(prompts, [n] * len(prompts)) for n in ("drift", "mixed", None, "drift")]
    expected = [[g.text for g in backend.generate(*job)] for job in jobs]
    got: dict[int, list[str]] = {}

    def run(i):
        got[i] = [g.text for g in backend.generate(*jobs[i])]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(jobs))] == expected


def test_errors_say_what_is_wrong(backend, tiny_base_model, adapters, tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        InProcessBackend(tmp_path / "missing", INTENT_V1, device="cpu")
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        backend.load_adapter("x", tmp_path)
    with pytest.raises(KeyError, match="not loaded"):
        backend.generate(["hello"], ["nope"])
    with pytest.raises(ValueError, match="already loaded"):
        backend.load_adapter("drift", adapters["drift"])
    with pytest.raises(ValueError, match="reserved"):
        backend.load_adapter("__base__", adapters["drift"])
    with pytest.raises(ValueError, match="one per prompt"):
        backend.generate(["a", "b"], [None])
    with pytest.raises(KeyError, match="not loaded"):
        backend.unload_adapter("nope")
    assert backend.generate([], []) == []
    assert backend.loaded() == ["drift", "mixed"]


def test_a_base_folders_generation_config_does_not_change_the_answers(tiny_base_model, tiny_before_pairs, tmp_path):
    """A Hub instruct model ships a generation_config.json (Qwen2.5's repetition_penalty 1.05): model.generate would
    apply it, the stacked decode and training do not. Serving is greedy and nothing else on every path."""
    import json
    import shutil

    folder = shutil.copytree(tiny_base_model[0], tmp_path / "base")
    config = json.loads((folder / "generation_config.json").read_text()) if (
        folder / "generation_config.json").is_file() else {}
    (folder / "generation_config.json").write_text(json.dumps({**config, "repetition_penalty": 50.0,
                                                               "no_repeat_ngram_size": 1}))
    prompts = [p.prompt for p in tiny_before_pairs[:16]]
    plain = InProcessBackend(tiny_base_model[0], INTENT_V1, threads=1, device="cpu", adapter_mode="unmerged")
    shipped = InProcessBackend(folder, INTENT_V1, threads=1, device="cpu", adapter_mode="unmerged")
    expected = [g.text for g in plain.generate(prompts, [None] * len(prompts), max_batch=16)]
    assert [g.text for g in shipped.generate(prompts, [None] * len(prompts), max_batch=16)] == expected
