"""Git LFS for the Hub test double: which files the Hub stores as LFS, the pointer files git keeps for them, and
the content-addressed store behind the "CDN" and "S3" URLs the double hands out.

What the Hub does, as far as the client can tell:

- ``preupload`` answers ``uploadMode: "lfs"`` for a file that matches an ``filter=lfs`` pattern of the revision's
  ``.gitattributes`` (``*.safetensors``, ``*.bin`` on a new repo), is 10 MB or larger, or whose first 512 bytes hold
  a NUL byte (binary); else ``"regular"`` (:func:`upload_mode`).
- The client then asks the LFS batch API (``{repo}.git/info/lfs/objects/batch``) where to put each object, PUTs
  the bytes to a pre-signed URL (no Hub token: it is not the Hub's host), and POSTs ``verify``. The commit names
  the object (``lfsFile``: path, sha256, size), and git holds a pointer file in its place.
- A download of an LFS file answers 302 to a signed URL on another host, carrying ``X-Linked-Etag`` (the sha256)
  and ``X-Linked-Size`` itself; the client does not send its token there.

Xet, the Hub's newer storage the client prefers when ``hf_xet`` is installed, is not spoken: while the double
runs it sets ``HF_HUB_DISABLE_XET`` (a setting of the real client), so the client takes the LFS path.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

POINTER_VERSION = "https://git-lfs.github.com/spec/v1"
LARGE_FILE_BYTES = 10 * 1000 * 1000  # the Hub's limit for a regular (base64-in-the-commit) file
_POINTER = re.compile(rb"version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize (\d+)\n\Z")
MAX_POINTER_BYTES = 200


@dataclass(frozen=True)
class LfsPointer:
    oid: str  # sha256 of the content
    size: int

    def encode(self) -> bytes:
        return f"version {POINTER_VERSION}\noid sha256:{self.oid}\nsize {self.size}\n".encode()

    @classmethod
    def parse(cls, blob: bytes) -> LfsPointer | None:
        found = _POINTER.match(blob) if len(blob) <= MAX_POINTER_BYTES else None
        return cls(found.group(1).decode(), int(found.group(2))) if found else None


def lfs_patterns(gitattributes: bytes) -> list[str]:
    """The patterns of a ``.gitattributes`` that carry ``filter=lfs``."""
    patterns = []
    for line in gitattributes.decode(errors="replace").splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            patterns.append(fields[0])
    return patterns


def _matches(path: str, pattern: str) -> bool:
    """gitattributes matching, as far as the Hub's default file uses it: a pattern without a slash matches the
    file's name in any folder; with one, the whole path."""
    if "/" in pattern.strip("/"):
        return fnmatch.fnmatchcase(path, pattern.lstrip("/"))
    return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)


def upload_mode(path: str, size: int, sample: bytes, patterns: list[str]) -> str:
    if size >= LARGE_FILE_BYTES or b"\0" in sample or any(_matches(path, p) for p in patterns):
        return "lfs"
    return "regular"


class LfsStore:
    """Objects by sha256 under ``root``; ``put`` checks the bytes against the name and writes atomically, so a
    failed or lying upload leaves nothing behind. Signed URLs: an HMAC of (action, oid, size) with a key of the
    store's own, so the pre-signed endpoints need no Hub token and cannot be used for another object."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._key = os.urandom(32)

    def path(self, oid: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", oid):
            raise ValueError(f"not a sha256: {oid!r}")
        return self.root / oid[:2] / oid

    def has(self, pointer: LfsPointer) -> bool:
        path = self.path(pointer.oid)
        return path.is_file() and path.stat().st_size == pointer.size

    def put(self, pointer: LfsPointer, data: bytes) -> None:
        if len(data) != pointer.size or hashlib.sha256(data).hexdigest() != pointer.oid:
            raise ValueError(f"the uploaded bytes are not object {pointer.oid[:12]}... of {pointer.size} bytes "
                             f"(got {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}...)")
        path = self.path(pointer.oid)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)

    def read(self, oid: str) -> bytes:
        return self.path(oid).read_bytes()

    def signature(self, action: str, pointer: LfsPointer) -> str:
        return hmac.new(self._key, f"{action}:{pointer.oid}:{pointer.size}".encode(), hashlib.sha256).hexdigest()

    def signed(self, action: str, pointer: LfsPointer, signature: str) -> bool:
        return hmac.compare_digest(self.signature(action, pointer), signature)
