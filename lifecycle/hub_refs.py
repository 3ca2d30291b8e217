"""Hub repositories pinned by commit: ``"HuggingFaceTB/SmolLM2-135M@<40-hex sha>"`` as a typed record.

A base model or a task's data taken from the Hugging Face Hub enters lineage as ``hf://<repo>`` (models) or
``hf://datasets/<repo>`` (datasets) plus a commit sha. Only a full commit sha is accepted: a branch or a tag
moves, so a version built on ``main`` could not be rebuilt from its lineage.

Also here, stdlib only: where the Hub client keeps a snapshot on disk, so that code that must not talk HTTP
(``load_task``, serving's start-up) can find an already downloaded dataset without importing the client.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from lifecycle.records import Frozen

COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
HF_SCHEME = "hf://"


class PinnedRepo(Frozen):
    """A Hub repository at one commit."""

    repo_id: str = Field(description="owner/name")
    revision: str = Field(description="full 40-hex commit sha")
    repo_type: Literal["model", "dataset"] = "model"

    @property
    def uri(self) -> str:
        """``hf://owner/name`` or ``hf://datasets/owner/name``: the ``model_id`` / ``source`` lineage records."""
        return f"{HF_SCHEME}{'datasets/' if self.repo_type == 'dataset' else ''}{self.repo_id}"

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"


def parse_pinned(text: str, repo_type: Literal["model", "dataset"] = "model") -> PinnedRepo:
    """``"owner/name@<40-hex sha>"`` (an ``hf://`` or ``hf://datasets/`` prefix is allowed) -> PinnedRepo.

    >>> parse_pinned("acme/m@" + "a" * 40).uri
    'hf://acme/m'

    Anything but a full lowercase commit sha after ``@`` is refused, naming the problem.
    """
    raw = text.strip()
    for prefix in (f"{HF_SCHEME}datasets/", HF_SCHEME):
        if raw.startswith(prefix):
            raw = raw.removeprefix(prefix)
            break
    repo_id, sep, revision = raw.partition("@")
    what = "dataset" if repo_type == "dataset" else "model"
    if not sep or not revision:
        raise ValueError(f"Hub {what} {text!r} is not pinned: write OWNER/NAME@<40-hex commit sha> (the sha of "
                         "a commit on the Hub, e.g. from `hf repo info` or the repo's commit history)")
    if not _REPO.match(repo_id):
        raise ValueError(f"Hub {what} {text!r}: {repo_id!r} is not a repository id of the form OWNER/NAME")
    if not COMMIT.match(revision):
        kind = "a short sha" if re.fullmatch(r"[0-9a-fA-F]{4,39}", revision) else "a branch or tag name"
        raise ValueError(f"Hub {what} {text!r}: revision {revision!r} looks like {kind}, not a full 40-hex commit "
                         "sha. A branch or tag moves, and lineage must pin exactly what was used: give the commit "
                         "sha it points at now")
    return PinnedRepo(repo_id=repo_id, revision=revision, repo_type=repo_type)


def hub_cache_dir() -> Path:
    """The Hub client's cache folder, by its own rules: HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE (legacy),
    else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.

    Read at call time (the client reads them once, at import): the downloader passes this folder explicitly,
    so both always agree."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def snapshot_folder(ref: PinnedRepo, cache: Path | None = None) -> Path:
    """Where ``snapshot_download(ref.repo_id, revision=ref.revision)`` puts the files (whether or not it has)."""
    kind = "datasets" if ref.repo_type == "dataset" else "models"
    storage = f"{kind}--{ref.repo_id.replace('/', '--')}"
    return (cache or hub_cache_dir()) / storage / "snapshots" / ref.revision


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to 1/on/yes/true: use the cache only, never the network."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
