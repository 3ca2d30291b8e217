"""Stored benchmark answers: what a version answered on a golden set, reused while nothing they depend on changed.

Every retrain benchmarks the champion and the challenger on the same golden items. The champion's answers do not
change between retrains as long as the inputs of greedy decoding do not: the same weights (base revision and
adapter file hashes), the same items (the golden set's content hash), the same decoding settings (prompt format
with its stop string and token budget, greedy) and the same libraries and device doing the arithmetic (CPU and
CUDA kernels round differently, and a rounding flip can change an argmax: answers from one are never reused on
the other, where only a spot-check sample of them would be compared). A row's answer does
not depend on its batch-mates (serving.backend tests check it), so the answers of a previous run are the answers
of this one. The key is the content, not the version number: the challenger's answers of one retrain are the
champion's of the next once it is promoted, and a different golden set, a changed champion, another prompt
format, another torch/transformers build or another device is a different key — re-answered, never reused (a key
that changes shape, as when the device joined it, turns every stored file into a miss: answered afresh once).

Stored under ``SLM_HOME/benchmarks/answers/<key digest>.json``: the key itself (checked on read, so a corrupt or
colliding file is a miss) and the full :class:`lifecycle.records.EvalReport`, items included. The decommission
flow drops a retired version's files (``AnswerStore.drop``): ~275 KB a version on the demo's golden sets.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

from pydantic import ValidationError

from lifecycle.files import write_bytes_atomic
from lifecycle.records import EvalReport, Frozen


class AnswerKey(Frozen):
    """Everything a greedy answer depends on."""

    base: str  # base model id@revision
    adapter: str  # sha256 of the adapter's weights, "none" for the bare base
    benchmark: str
    benchmark_sha256: str
    n_items: int
    decoding: dict[str, str | int | bool]  # prompt format identity, stop, max_new_tokens, greedy, library versions,
    # device (and the serving path, where the caller names it): decoding_settings

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:32]


def decoding_settings(prompt_format_identity: str, stop: str, max_new_tokens: int, *, device: str | None = None,
                      path: str | None = None) -> dict[str, str | int | bool]:
    """The decoding the in-process backend does (greedy, the format's stop and budget), and the library builds and
    device that carry it out: a torch or transformers upgrade, or CPU against CUDA kernels, may change an argmax
    tie, so it re-answers.

    ``device``: the device type the answers are computed on ("cpu", "cuda"; a "cuda:0" is its type); by default
    the one the in-process backend picks when not told (``serving.backend.InProcessBackend``: CUDA when torch sees
    a GPU), which is how the benchmark opens it. ``path``: the backend's serving path (its resolved adapter mode,
    "fused", "merged" or "unmerged"), when the caller knows it: merged weights and a low-rank delta round
    differently; not part of the key when None.
    """
    settings: dict[str, str | int | bool] = {
        "prompt_format": prompt_format_identity, "stop": stop, "max_new_tokens": max_new_tokens, "do_sample": False,
        "torch": _version("torch"), "transformers": _version("transformers"), "peft": _version("peft"),
        "device": (device or default_device()).split(":")[0]}
    if path is not None:
        settings["path"] = path
    return settings


def default_device() -> str:
    """The device type the in-process backend runs on when not told: "cuda" when torch sees a GPU, else "cpu"."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


class AnswerStore:
    """A folder of stored answers; a miss is ``None``, never an error (the benchmark then answers afresh)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: AnswerKey) -> Path:
        return self.folder / f"{key.digest()}.json"

    def get(self, key: AnswerKey, ref: str) -> EvalReport | None:
        """The stored report for ``key``, relabelled as ``ref``; None when absent, unreadable or not this key."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            stored_key, report = AnswerKey.model_validate(raw["key"]), EvalReport.model_validate(raw["report"])
        except (OSError, ValueError, KeyError, TypeError, ValidationError):
            return None
        if stored_key != key or report.benchmark_sha256 != key.benchmark_sha256 or len(report.items) != key.n_items:
            return None
        return report.model_copy(update={"version": ref})

    def drop(self, base: str, adapter: str) -> list[Path]:
        """Delete every stored answer of the weights ``base`` + ``adapter`` (a retired version's: nothing benchmarks
        it again); the deleted files. Another golden set or decoding of the same weights goes too; a file that
        cannot be read is left (it is a miss on read anyway, and not provably these weights')."""
        dropped = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                stored = AnswerKey.model_validate(json.loads(path.read_text())["key"])
            except (OSError, ValueError, KeyError, TypeError, ValidationError):
                continue
            if stored.base == base and stored.adapter == adapter:
                path.unlink(missing_ok=True)
                dropped.append(path)
        return dropped

    def put(self, key: AnswerKey, report: EvalReport) -> Path:
        if report.benchmark_sha256 != key.benchmark_sha256 or len(report.items) != key.n_items:
            raise ValueError(f"report for {report.benchmark} ({report.benchmark_sha256[:12]}, {len(report.items)} "
                             f"items) does not match its key ({key.benchmark_sha256[:12]}, {key.n_items} items)")
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, json.dumps({"key": key.model_dump(mode="json"),
                                             "report": report.model_dump(mode="json")}).encode())
        return path
