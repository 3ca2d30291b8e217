"""Upstream Hub repositories, pinned by commit: a Hub base model (``hf://OWNER/NAME``) and a task's Hub dataset.

Not the project's own Hub *artifact store* (registry.hub, which publishes versions to SLM_HUB_NAMESPACE): these
are repositories somebody else publishes, read-only here, downloaded with ``huggingface_hub.snapshot_download``
into the client's own cache, so a model already cached by any other tool is reused.

The environment is read at call time, as the client would read it: HF_ENDPOINT (default https://huggingface.co),
HF_TOKEN (else the client's saved login), HF_HUB_OFFLINE (cache only, no network), HF_HUB_CACHE / HF_HOME (where
the cache is: :func:`lifecycle.hub_refs.hub_cache_dir`). The token goes to the client and nowhere else.

Only a full commit sha is ever fetched (:func:`lifecycle.hub_refs.parse_pinned`): a snapshot at a commit never
changes, so once downloaded it serves offline for good. Each load checks the cached files against their blob
names (the Hub names a cached blob by its content hash), so an edited or truncated cache is refused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lifecycle.files import sha256_file
from lifecycle.hub_refs import COMMIT, HF_SCHEME, PinnedRepo, hub_cache_dir, hub_offline, parse_pinned
from registry.artifacts import ArtifactIntegrityError

# What a causal LM needs from a model repo: config, tokenizer files, safetensors weights (sharded or not). Not
# .bin/.pth/.onnx/.gguf copies of the same weights, nor training logs: a 135M repo is ~270 MB this way, not ~1.5 GB.
BASE_MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
DATASET_FILES = ["*.csv", "*.json", "README.md"]


class HubSourceError(RuntimeError):
    """A pinned Hub repository could not be had: not found, revision unknown, not cached while offline."""


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def fetch_snapshot(ref: PinnedRepo, allow_patterns: list[str] | None = None) -> Path:
    """The repository's files at ``ref.revision``, downloaded into the Hub cache unless already there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if not COMMIT.match(ref.revision):  # PinnedRepo is built by parse_pinned, but a record can be hand-made
        raise ValueError(f"{ref.repo_id}@{ref.revision}: only a full commit sha can be fetched")
    kind = "dataset" if ref.repo_type == "dataset" else "model"
    offline = hub_offline()
    try:
        folder = snapshot_download(ref.repo_id, revision=ref.revision, repo_type=ref.repo_type,
                                   allow_patterns=allow_patterns, cache_dir=hub_cache_dir(), endpoint=endpoint(),
                                   token=os.environ.get("HF_TOKEN") or None, local_files_only=offline)
    except GatedRepoError:
        raise HubSourceError(f"Hub {kind} {ref.repo_id} is gated: accept its terms on the Hub and set HF_TOKEN to a "
                             "token of that account") from None
    except RepositoryNotFoundError:
        raise HubSourceError(f"Hub {kind} {ref.repo_id} was not found at {endpoint()} (or it is private and HF_TOKEN "
                             "is unset or lacks access)") from None
    except RevisionNotFoundError:
        raise HubSourceError(f"Hub {kind} {ref.repo_id} has no commit {ref.revision}; check the sha in the repo's "
                             "commit history") from None
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if offline else f"{endpoint()} could not be reached"
        state = "incomplete in the cache" if isinstance(exc, IncompleteSnapshotError) else "not in the cache"
        raise HubSourceError(f"Hub {kind} {ref} is {state} {hub_cache_dir()} and {why}: download it once online "
                             "(`slm bootstrap`, or `hf download`) with the same HF_HUB_CACHE") from None
    return Path(folder)


def verify_cached_snapshot(folder: Path) -> None:
    """Every file of a cache snapshot still holds the content its blob is named after (sha256 for LFS files,
    git sha1 for regular ones). Files that are not cache symlinks (a copied folder) are left alone."""
    problems = []
    for path in sorted(folder.rglob("*")):
        if not path.is_symlink():
            continue
        if not path.exists():
            problems.append(f"{path.relative_to(folder)} points at a missing blob")
            continue
        name = path.resolve().name
        actual = sha256_file(path) if len(name) == 64 else _git_sha1(path) if len(name) == 40 else name
        if actual != name:
            problems.append(f"{path.relative_to(folder)} no longer matches its blob hash {name[:12]}…")
    if problems:
        raise ArtifactIntegrityError(f"Hub snapshot {folder} failed its integrity check: " + "; ".join(problems)
                                     + ". Delete that snapshot folder and download it again")


def _git_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    digest.update(path.read_bytes())
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, str, str], Path] = {}


def is_hub_base(uri: str) -> bool:
    return uri.startswith(HF_SCHEME) and not uri.startswith(f"{HF_SCHEME}datasets/")


def base_model_dir(uri: str, revision: str | None) -> Path:
    """An upstream Hub base (``hf://OWNER/NAME`` at a commit): its snapshot folder, fetched if needed and checked
    once per process (a commit's files never change)."""
    if not revision:
        raise ValueError(f"{uri!r} is not a local base artifact, and a Hub base needs its commit sha (revision)")
    ref = parse_pinned(f"{uri}@{revision}")
    key = (str(hub_cache_dir()), ref.repo_id, ref.revision)
    if key not in _VERIFIED or not _VERIFIED[key].is_dir():
        folder = fetch_snapshot(ref, BASE_MODEL_FILES)
        verify_cached_snapshot(folder)
        _VERIFIED[key] = folder
    return _VERIFIED[key]
