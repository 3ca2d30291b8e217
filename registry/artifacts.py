"""Artifact stores: where a version's files live. Local folder by default, laid out like a Hub repo.

Layout under the root::

    models/<model>/v<N>/        adapter_config.json, adapter_model.safetensors (none for a base version),
                                README.md (model card), lineage.json, eval.json
    base/<name>-<sha12>/        a base model: config, weights, tokenizer (content-addressed)
    datasets/<sha256>.jsonl     data snapshots, content-addressed by their fingerprint

The sha256 of every file is recorded in the registry at publish time and checked on every load: a file
that changed since is refused with an error naming it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from weakref import WeakKeyDictionary

from lifecycle.files import hash_tree, sha256_file, tree_digest, write_bytes_atomic

if TYPE_CHECKING:
    from registry.store import RegistryStore


class ArtifactIntegrityError(RuntimeError):
    """A stored file is missing or its sha256 differs from the one recorded at publish time."""


def verify_tree(folder: Path, files: dict[str, str], *, exact: bool = False) -> None:
    """Raise :class:`ArtifactIntegrityError` naming every file that is missing or changed.

    ``exact``: a file that was not recorded is refused too. The local store publishes a folder exactly as
    recorded, so anything more was planted later — and it matters: an ``adapter_config.json`` planted in a base
    version's folder would make the loader serve the planted weights. (A Hub snapshot may hold files the
    version did not record, so the Hub store checks only what was recorded.)"""
    problems = []
    for rel, expected in files.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif (actual := sha256_file(path)) != expected:
            problems.append(f"{rel} has sha256 {actual[:12]}…, recorded {expected[:12]}…")
    if exact and folder.is_dir():
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        problems += [f"{rel} was not recorded at publish time" for rel in sorted(present - set(files))]
    if problems:
        raise ArtifactIntegrityError(f"artifact {folder} failed its integrity check: " + "; ".join(problems))


def _copy_dir_atomically(src: Path, target: Path) -> None:
    """Copy into a temporary sibling, then rename: readers see the whole folder or nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.exists():
            raise


class ArtifactStore(Protocol):
    def publish_version(self, model: str, number: int, staged: Path) -> tuple[str, dict[str, str]]: ...
    def unpublish_version(self, model: str, number: int) -> None: ...
    def version_dir(self, model: str, number: int, files: dict[str, str]) -> Path: ...
    def put_base(self, name: str, staged: Path) -> tuple[str, str]: ...
    def base_dir(self, uri: str, revision: str | None = None) -> Path: ...
    def put_dataset(self, sha256: str, content: bytes, name: str = "data") -> str: ...
    def dataset_path(self, uri: str) -> Path: ...


class ChampionFollower(Protocol):
    """An artifact store with a ``champion`` pointer of its own (the Hub store's branch) that follows the
    registry's champion alias. Returns what moved (for the audit), or None when it already pointed there."""

    def point_champion(self, model: str, number: int | None) -> dict[str, object] | None: ...


# store -> the artifact store whose champion pointer follows it. Keyed by the RegistryStore because the code that
# moves the alias (a rollout's Promote effect, registry.rollout_exec) holds only the store; weak, so a closed
# registry leaves nothing behind.
_FOLLOWERS: WeakKeyDictionary[RegistryStore, ChampionFollower] = WeakKeyDictionary()


def follow_champion(store: RegistryStore, follower: ChampionFollower) -> None:
    _FOLLOWERS[store] = follower


def sync_champion(store: RegistryStore, model: str, *, actor: str) -> dict[str, object] | None:
    """Point the artifact store's champion at the registry's champion, audited when it moved. Idempotent, so it is
    called after every promote or rollback and again on a replay; a no-op for the local store."""
    follower = _FOLLOWERS.get(store)
    if follower is None:
        return None
    moved = follower.point_champion(model, store.get_alias(model, "champion"))
    if moved is not None:
        store.append_audit(actor=actor, action="artifacts.champion.moved", subject=model, payload=moved)
    return moved


class LocalArtifactStore:
    """Artifacts in a local folder. Publishing is a rename, so a version appears whole or not at all."""

    scheme = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _version_path(self, model: str, number: int) -> Path:
        return self.root / "models" / model / f"v{number}"

    def publish_version(self, model: str, number: int, staged: Path) -> tuple[str, dict[str, str]]:
        target = self._version_path(model, number)
        if target.exists():
            raise FileExistsError(f"{target} already exists: refusing to overwrite a published version")
        files = hash_tree(staged)
        _copy_dir_atomically(staged, target)
        return f"local://models/{model}/v{number}", files

    def unpublish_version(self, model: str, number: int) -> None:
        """Remove the version's folder, and the temporary copy (``.vN.tmp-PID``) a registration killed before
        its rename left: numbers are allocated under the registration lock, so any copy of vN here is an orphan."""
        target = self._version_path(model, number)
        shutil.rmtree(target, ignore_errors=True)
        for orphan in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(orphan, ignore_errors=True)

    def version_dir(self, model: str, number: int, files: dict[str, str]) -> Path:
        folder = self._version_path(model, number)
        verify_tree(folder, files, exact=True)
        return folder

    def put_base(self, name: str, staged: Path) -> tuple[str, str]:
        """Store a base model folder; returns (uri, revision) where revision hashes its whole tree."""
        files = hash_tree(staged)
        revision = tree_digest(files)
        target = self.root / "base" / f"{name}-{revision[:12]}"
        if not target.exists():
            _copy_dir_atomically(staged, target)
        return f"local://base/{target.name}", revision

    def base_dir(self, uri: str, revision: str | None = None) -> Path:
        """The folder; ``Registry.base_dir`` checks it against ``revision`` (its tree digest). An upstream Hub base
        (``hf://OWNER/NAME`` at a commit) comes from the Hub cache: registry.hub_models."""
        if uri.startswith("hf://"):
            from registry.hub_models import base_model_dir

            return base_model_dir(uri, revision)
        return self._local(uri, "base")

    def put_dataset(self, sha256: str, content: bytes, name: str = "data") -> str:
        """Content-addressed, so ``name`` (the data's role) plays no part here."""
        if hashlib.sha256(content).hexdigest() != sha256:
            raise ValueError(f"dataset content does not match its fingerprint {sha256[:12]}…")
        target = self.root / "datasets" / f"{sha256}.jsonl"
        if not target.exists():  # a temporary file of its own: two runs snapshotting the same data do not collide
            write_bytes_atomic(target, content)
        return f"local://datasets/{sha256}.jsonl"

    def dataset_path(self, uri: str) -> Path:
        path = self._local(uri, "datasets")
        if sha256_file(path) != path.stem:
            raise ArtifactIntegrityError(f"dataset snapshot {path} no longer matches its content hash")
        return path

    def _local(self, uri: str, kind: str) -> Path:
        prefix = f"local://{kind}/"
        if not uri.startswith(prefix):
            raise ValueError(f"{uri!r} is not a local {kind} artifact (expected {prefix}...)")
        path = self.root / uri.removeprefix("local://")
        if not path.exists():
            raise ArtifactIntegrityError(f"artifact {uri} is missing from {self.root}")
        return path
