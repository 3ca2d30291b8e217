"""The answer store: a hit only for exactly the key it was stored under; anything else is a miss."""

import pytest

from evaluation.answers import AnswerKey, AnswerStore, decoding_settings
from evaluation.benchmark import GoldenSet, run_benchmark
from lifecycle.data import Pair
from tests.unit.evaluation.test_benchmark import ALLOWED, GOLDEN, Scripted


def key(**change) -> AnswerKey:
    fields = {"base": "intent-router-base@abc", "adapter": "none", "benchmark": "g", "benchmark_sha256": GOLDEN.sha256,
              "n_items": len(GOLDEN.items), "decoding": decoding_settings("intent-v1@x", "\n", 16)}
    return AnswerKey(**{**fields, **change})


@pytest.fixture
def report():
    return run_benchmark(Scripted(), {"m:v1": None}, GOLDEN, ALLOWED)["m:v1"]


def key_on(device: str) -> AnswerKey:
    return key(decoding=decoding_settings("intent-v1@x", "\n", 16, device=device))


def test_answers_computed_on_one_device_are_not_reused_on_another(tmp_path, report):
    store = AnswerStore(tmp_path)
    store.put(key_on("cpu"), report)
    assert store.get(key_on("cuda"), "m:v1") is None
    assert store.get(key_on("cuda:0"), "m:v1") is None
    assert store.get(key_on("cpu"), "m:v1") is not None


def test_the_device_defaults_to_the_one_the_backend_picks(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert decoding_settings("intent-v1@x", "\n", 16)["device"] == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert decoding_settings("intent-v1@x", "\n", 16)["device"] == "cpu"
    assert decoding_settings("intent-v1@x", "\n", 16, device="cuda:1")["device"] == "cuda"
    assert "path" not in decoding_settings("intent-v1@x", "\n", 16)


def test_a_file_stored_under_the_key_before_the_device_joined_it_is_a_miss(tmp_path, report):
    """Stores written before the device was part of the key stay readable: their keys simply do not match now,
    so the benchmark answers afresh (and stores the new key's file beside the old one)."""
    store = AnswerStore(tmp_path)
    old = key(decoding={k: v for k, v in decoding_settings("intent-v1@x", "\n", 16).items() if k != "device"})
    store.put(old, report)
    assert store.get(key(), "m:v1") is None and store.get(old, "m:v1") is not None
    assert store.drop("intent-router-base@abc", "none") == [store.path(old)]  # and the retirement still drops it


def test_a_stored_report_comes_back_under_its_key_relabelled(tmp_path, report):
    store = AnswerStore(tmp_path)
    store.put(key(), report)
    got = store.get(key(), "m:v7")
    assert got is not None and got.version == "m:v7"
    assert [i.predicted for i in got.items] == [i.predicted for i in report.items]


@pytest.mark.parametrize("change", [
    {"adapter": "0" * 64},                                          # another champion's weights
    {"base": "intent-router-base@def"},                             # another base revision
    {"benchmark_sha256": "f" * 64},                                 # another golden set
    {"decoding": decoding_settings("intent-v1@x", "\n", 8)},        # another token budget
    {"decoding": decoding_settings("intent-v2@y", "\n", 16)},       # another prompt format
    {"decoding": decoding_settings("intent-v1@x", "\n", 16, device="cuda")},  # answered on CPU, asked on a GPU
    {"decoding": decoding_settings("intent-v1@x", "\n", 16, path="fused")},   # another serving path named
])
def test_any_other_key_is_a_miss(tmp_path, report, change):
    store = AnswerStore(tmp_path)
    store.put(key(), report)
    assert store.get(key(**change), "m:v1") is None


def test_a_corrupt_or_mismatched_file_is_a_miss(tmp_path, report):
    store = AnswerStore(tmp_path)
    store.put(key(), report)
    store.path(key()).write_text("{not json")
    assert store.get(key(), "m:v1") is None


def test_a_report_that_does_not_match_its_key_is_refused(tmp_path, report):
    other = GoldenSet.of("g", [Pair(prompt="item 1", completion="label1")])
    with pytest.raises(ValueError, match="does not match its key"):
        AnswerStore(tmp_path).put(key(benchmark_sha256=other.sha256), report)


def test_decoding_settings_name_the_libraries():
    settings = decoding_settings("intent-v1@x", "\n", 16)
    assert settings["do_sample"] is False and {"torch", "transformers", "peft"} <= settings.keys()


def test_drop_deletes_every_answer_of_those_weights_and_nothing_else(tmp_path, report):
    store = AnswerStore(tmp_path)
    retired = [key(adapter="a" * 64), key(adapter="a" * 64, decoding=decoding_settings("intent-v1@x", "\n", 8))]
    kept = [key(), key(adapter="b" * 64), key(adapter="a" * 64, base="intent-router-base@def")]
    for k in retired + kept:
        store.put(k, report)
    (tmp_path / "unreadable.json").write_text("{not json")
    assert sorted(store.drop("intent-router-base@abc", "a" * 64)) == sorted(store.path(k) for k in retired)
    assert all(store.get(k, "m:v1") is None for k in retired)
    assert all(store.get(k, "m:v1") is not None for k in kept)
    assert (tmp_path / "unreadable.json").exists()
    assert store.drop("intent-router-base@abc", "a" * 64) == []


def test_drop_on_a_store_never_written_is_a_no_op(tmp_path):
    assert AnswerStore(tmp_path / "absent").drop("b@r", "none") == []
