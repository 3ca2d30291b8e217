"""Where a retired version's record and weights go, in the local artifact store. Every step is idempotent.

Layout under the artifact root (beside ``models/``)::

    tombstones/<model>/v<N>/   README.md (the model card), lineage.json, eval.json — copies of the version's
                               own files — and tombstone.json: the version record, its status history, the
                               alias moves that named it, its audit events, and how it was retired. Kept forever.
    archive/models/<model>/v<N>/   the whole version folder, moved here when the policy archives (restore it
                               by moving it back); absent when the policy deletes.

Files are written to a temporary sibling and renamed, folders moved with one ``os.replace``: a crash leaves
the old state or the new one, and the next run picks up from there. With the Hub artifact store the weights
step deletes (or, to archive, renames) the version's tag instead; the commit stays in the repository's
history, and the tombstone stays local under the store's root (registry/retire.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from registry.artifacts import LocalArtifactStore

log = logging.getLogger(__name__)

#: the version's own files a tombstone keeps a copy of (the weights are not among them).
RECORD_FILES = ("README.md", "lineage.json", "eval.json")
State = Literal["retiring", "decommissioned"]


def local_root(artifacts: object) -> Path:
    if not isinstance(artifacts, LocalArtifactStore):
        raise NotImplementedError("retiring versions is implemented for the local artifact store only "
                                  "(SLM_ARTIFACT_STORE=local)")
    return artifacts.root


def version_folder(root: Path, model: str, number: int) -> Path:
    return root / "models" / model / f"v{number}"


def tombstone_folder(root: Path, model: str, number: int) -> Path:
    return root / "tombstones" / model / f"v{number}"


def archive_folder(root: Path, model: str, number: int) -> Path:
    return root / "archive" / "models" / model / f"v{number}"


def tombstone_uri(model: str, number: int) -> str:
    return f"local://tombstones/{model}/v{number}"


def archive_uri(model: str, number: int) -> str:
    return f"local://archive/models/{model}/v{number}"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tombstone(root: Path, model: str, number: int, record: dict[str, object], *,
                    fallback: dict[str, str]) -> Path:
    """Copy the version's card, lineage and evals (from its folder, or its archived copy) into the tombstone,
    then (re)write ``tombstone.json``. A copy already in the tombstone is never replaced: once the weights
    are gone, the tombstone is the only place those files live. ``fallback`` gives the text of a record
    file that no folder holds any more (lineage and evals rebuilt from the registry)."""
    target = tombstone_folder(root, model, number)
    sources = [version_folder(root, model, number), archive_folder(root, model, number)]
    for name in RECORD_FILES:
        if (target / name).is_file():
            continue
        source = next((s / name for s in sources if (s / name).is_file()), None)
        if source is not None:
            _write_atomically(target / name, source.read_text())
        elif name in fallback:
            _write_atomically(target / name, fallback[name])
    _write_atomically(target / "tombstone.json", json.dumps(record, indent=2, sort_keys=True, default=str))
    return target


def read_tombstone(root: Path, model: str, number: int) -> dict[str, object] | None:
    path = tombstone_folder(root, model, number) / "tombstone.json"
    return json.loads(path.read_text()) if path.is_file() else None


def archive_weights(root: Path, model: str, number: int) -> bool:
    """Move the version folder into the archive area. Returns False when there was nothing left to move."""
    source, target = version_folder(root, model, number), archive_folder(root, model, number)
    if not source.exists():
        return False
    if target.exists():
        # Both exist only when an archived copy was restored by copying instead of moving; the live folder
        # is the one whose hashes the registry holds, so it wins.
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    return True


def delete_weights(root: Path, model: str, number: int) -> bool:
    """Remove the version folder and any archived copy. Returns False when nothing was left to remove.

    Each folder is first renamed to a ``.deleting`` sibling, so a crash in the middle of the removal
    leaves a folder that is plainly trash (and removed by the next run), never a half-deleted version.
    """
    removed = False
    for folder in (version_folder(root, model, number), archive_folder(root, model, number)):
        trash = folder.with_name(f".{folder.name}.deleting")
        if folder.exists():
            os.replace(folder, trash)
            removed = True
        if trash.exists():
            shutil.rmtree(trash)
            removed = True
    return removed
