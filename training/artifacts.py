"""The content hash that names a model's weights (BaseModelRef.revision of a Hub-style folder)."""

from __future__ import annotations

import hashlib


def weights_digest(files: dict[str, str]) -> str:
    """One sha256 for the weights: the file's own hash if there is one file, else a hash of the list."""
    weights = {name: sha for name, sha in files.items() if name.endswith(".safetensors")}
    if not weights:
        raise ValueError(f"no .safetensors file among {sorted(files)}")
    if len(weights) == 1:
        return next(iter(weights.values()))
    listing = "".join(f"{name} {sha}\n" for name, sha in sorted(weights.items()))
    return hashlib.sha256(listing.encode()).hexdigest()
