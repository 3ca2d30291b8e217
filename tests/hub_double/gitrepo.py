"""A bare git repository driven through the ``git`` CLI: the storage of the Hub test double.

Every Hub repository of the double is one of these, so a test can check history, tags and branches with
plain ``git`` (``git --git-dir <repo.path> log``) exactly as it would on a clone of a real Hub repository.
Commits are built without a working tree: blobs are written with ``hash-object``, the tree in a private
index file, and the branch moved with a compare-and-swap ``update-ref``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .lfs import MAX_POINTER_BYTES, LfsPointer

_ENV = {"GIT_AUTHOR_NAME": "hub-double", "GIT_AUTHOR_EMAIL": "hub-double@localhost",
        "GIT_COMMITTER_NAME": "hub-double", "GIT_COMMITTER_EMAIL": "hub-double@localhost",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


class GitError(RuntimeError):
    pass


@dataclass(frozen=True)
class Entry:
    path: str
    oid: str  # git blob sha1: what the Hub calls a file's oid and ETag (an LFS file's: its pointer's)
    size: int  # of the blob git holds: an LFS file's pointer, not its content
    lfs: LfsPointer | None = None  # the object an LFS pointer names


@dataclass(frozen=True)
class Commit:
    oid: str
    title: str
    message: str
    timestamp: int
    parents: tuple[str, ...]


class GitRepo:
    def __init__(self, path: Path) -> None:
        self.path = path

    def git(self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
        done = subprocess.run(["git", "--git-dir", str(self.path), *args], input=stdin, capture_output=True,
                              env={**os.environ, **_ENV, **(env or {})}, check=False)
        if done.returncode != 0:
            raise GitError(f"git {' '.join(args)}: {done.stderr.decode().strip()}")
        return done.stdout

    @classmethod
    def init(cls, path: Path) -> GitRepo:
        """A new bare repository whose ``main`` holds one commit with a ``.gitattributes``, as on the Hub."""
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "--bare", "--quiet", "--initial-branch=main", str(path)], check=True,
                       env={**os.environ, **_ENV})
        repo = cls(path)
        repo.commit("main", {".gitattributes": GITATTRIBUTES}, [], "initial commit")
        return repo

    # -- refs -----------------------------------------------------------------------------------------

    def resolve(self, revision: str) -> str | None:
        """Branch, tag or full commit sha -> commit sha; None when there is no such revision."""
        for ref in (f"refs/heads/{revision}", f"refs/tags/{revision}"):
            out = subprocess.run(["git", "--git-dir", str(self.path), "rev-parse", "--verify", "--quiet",
                                  f"{ref}^{{commit}}"], capture_output=True, env={**os.environ, **_ENV})
            if out.returncode == 0:
                return out.stdout.decode().strip()
        if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
            out = subprocess.run(["git", "--git-dir", str(self.path), "cat-file", "-t", revision],
                                 capture_output=True, env={**os.environ, **_ENV})
            if out.returncode == 0 and out.stdout.strip() == b"commit":
                return revision
        return None

    def refs(self, kind: str) -> dict[str, str]:
        """``heads`` or ``tags`` -> {name: commit sha}."""
        out = self.git("for-each-ref", "--format=%(refname:lstrip=2) %(objectname) %(*objectname)", f"refs/{kind}")
        refs = {}
        for line in out.decode().splitlines():
            name, oid, peeled = (line.split(" ") + [""])[:3]
            refs[name] = peeled or oid  # an annotated tag points at a tag object; its commit is the peeled oid
        return refs

    def set_ref(self, ref: str, oid: str | None, expected: str | None = None) -> None:
        """Point ``ref`` at ``oid`` (None deletes it); ``expected`` makes it a compare-and-swap."""
        if oid is None:
            self.git("update-ref", "-d", ref, *([expected] if expected else []))
        else:
            self.git("update-ref", ref, oid, *([expected] if expected else []))

    # -- content --------------------------------------------------------------------------------------

    def tree(self, revision: str) -> list[Entry]:
        """Every file of ``revision``; blobs small enough to be LFS pointers are read (in one git call) and
        parsed."""
        out = self.git("ls-tree", "-r", "-l", "-z", revision)
        listed = []
        for record in out.decode().split("\0"):
            if record:
                meta, path = record.split("\t", 1)
                _mode, _type, oid, size = meta.split()
                listed.append((path, oid, int(size)))
        small = sorted({oid for _, oid, size in listed if size <= MAX_POINTER_BYTES})
        pointers = {oid: LfsPointer.parse(blob) for oid, blob in zip(small, self.blobs(small), strict=True)}
        return [Entry(path=path, oid=oid, size=size, lfs=pointers.get(oid)) for path, oid, size in listed]

    def blob(self, oid: str) -> bytes:
        return self.git("cat-file", "blob", oid)

    def blobs(self, oids: list[str]) -> list[bytes]:
        """Several blobs in one ``git cat-file --batch``."""
        if not oids:
            return []
        out, at, found = self.git("cat-file", "--batch", stdin="".join(f"{o}\n" for o in oids).encode()), 0, []
        for _ in oids:
            header_end = out.index(b"\n", at)
            size = int(out[at:header_end].split()[2])
            found.append(out[header_end + 1:header_end + 1 + size])
            at = header_end + 1 + size + 1  # the content, then a newline
        return found

    def log(self, revision: str) -> list[Commit]:
        out = self.git("log", "--format=%H%x00%P%x00%ct%x00%s%x00%B%x01", revision)
        commits = []
        for record in out.decode().split("\x01"):
            record = record.strip("\n")
            if record:
                oid, parents, ts, title, body = record.split("\0", 4)
                commits.append(Commit(oid=oid, title=title, message=body.strip(), timestamp=int(ts),
                                      parents=tuple(parents.split())))
        return commits

    def commit(self, branch: str, additions: dict[str, bytes], deletions: list[str], message: str,
               parent: str | None = None) -> str:
        """One commit on ``branch``: add/replace ``additions``, remove ``deletions`` (files or folders).

        ``parent`` is the head the caller saw; if the branch moved since, the ref update fails (GitError).
        """
        head = parent or self.resolve(branch)
        with tempfile.TemporaryDirectory() as tmp:
            # An empty work tree: index commands refuse a bare repository without one; none touches it.
            (Path(tmp) / "work").mkdir()
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": str(Path(tmp) / "work")}
            if head:
                self.git("read-tree", head, env=env)
            for path in deletions:
                gone = self.git("ls-files", "-z", "--", path, env=env).decode().split("\0")
                for name in filter(None, gone):
                    self.git("update-index", "--force-remove", "--", name, env=env)
            for path, content in additions.items():
                oid = self.git("hash-object", "-w", "--stdin", stdin=content).decode().strip()
                self.git("update-index", "--add", "--cacheinfo", f"100644,{oid},{path}", env=env)
            tree = self.git("write-tree", env=env).decode().strip()
        oid = self.git("commit-tree", tree, *(["-p", head] if head else []), stdin=message.encode()).decode().strip()
        self.set_ref(f"refs/heads/{branch}", oid, head)
        return oid
