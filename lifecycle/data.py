"""Prompt/completion pairs, the validator's text normalization, and content fingerprints.

Every dataset in the project — training data, replay samples, golden sets — is a list of raw pairs.
Its identity is the sha256 of its canonical JSONL form, so the same rows give the same fingerprint on
any machine and any store.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from lifecycle.audit import canonical_json
from lifecycle.files import write_bytes_atomic
from lifecycle.records import Frozen

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


class Pair(Frozen):
    prompt: str
    completion: str


def normalize_prompt(text: str) -> str:
    """The normalization under which two prompts count as the same (overlap and duplicate checks).

    NFKC, casefold, punctuation and whitespace runs collapsed to one space.

    >>> normalize_prompt("  Where's my CARD?? ")
    'where s my card'
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", folded).strip()


def canonical_jsonl(pairs: Iterable[Pair]) -> bytes:
    return "".join(canonical_json(p.model_dump()) + "\n" for p in pairs).encode("utf-8")


def fingerprint(pairs: Iterable[Pair]) -> str:
    """sha256 of the canonical JSONL (row order matters: it is part of what was trained on)."""
    return hashlib.sha256(canonical_jsonl(pairs)).hexdigest()


def write_jsonl(path: str | Path, pairs: Iterable[Pair]) -> Path:
    """Write canonical JSON lines atomically (the file's sha256 is the rows' fingerprint). Returns the path;
    an identical file is left untouched."""
    return write_bytes_atomic(path, canonical_jsonl(pairs))


def read_pairs(path: str | Path) -> list[Pair]:
    """Read a file this project wrote with :func:`write_jsonl`. Untrusted data goes through
    ``data_checks.readers`` instead, which explains every way a file can be unreadable."""
    with Path(path).open(encoding="utf-8") as handle:
        return [Pair(**json.loads(line)) for line in handle if line.strip()]
