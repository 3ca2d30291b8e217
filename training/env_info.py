"""Where a model was trained: library versions, hardware and code commit, for its lineage record."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

_LIBRARIES = ("torch", "transformers", "peft", "tokenizers")


def library_versions() -> dict[str, str]:
    """Installed versions, read from package metadata (nothing heavy is imported)."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hardware(threads: int | None = None) -> str:
    """The GPU's name when torch sees one, else the CPU model, the cores this process may use and the torch threads
    the work ran with (``threads``: lineage is written after training, when its thread count is restored; default
    the process's count now)."""
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"{count} x {torch.cuda.get_device_name(0)}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{_cpu_model()}, {cores} cores, {threads or torch.get_num_threads()} torch threads"


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def git_commit(root: Path) -> tuple[str | None, bool]:
    """(HEAD commit, whether the working tree has changes); (None, False) outside a git repository.

    A repository without commits yet gives (None, True) when it has files staged or untracked.
    """
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        # --no-optional-locks: status must not rewrite the index while other processes use the repo.
        return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True,
                              text=True, timeout=30, check=False)

    try:
        inside = git("rev-parse", "--is-inside-work-tree")
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None, False
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return None, False
    head = git("rev-parse", "--verify", "--quiet", "HEAD")
    commit = head.stdout.strip() if head.returncode == 0 and head.stdout.strip() else None
    status = git("status", "--porcelain", "--untracked-files=normal")
    return commit, bool(status.stdout.strip())


def provenance(root: Path, threads: int | None = None) -> dict[str, object]:
    """The environment half of a version's lineage: code commit (and whether the tree was dirty),
    library versions, hardware (``threads``: the torch threads the training ran with) — the ``Lineage`` fields
    every training run fills the same way."""
    commit, dirty = git_commit(root)
    return {"code_commit": commit, "code_dirty": dirty, "libraries": library_versions(),
            "hardware": hardware(threads)}
