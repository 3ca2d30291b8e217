"""The Hub calls the Hub artifact store makes, through ``huggingface_hub.HfApi``, with explicit retries.

Every call goes to the endpoint and with the token given here, never to module-level defaults, so the store
works however early ``huggingface_hub`` was imported (it reads ``HF_ENDPOINT`` once, at import). The token
comes from a callable read on first use; it is passed to the client and to nothing else: it is not logged,
not kept in any error message written here, and not part of ``repr``.

Retries: 408/429/5xx answers and connection/timeout errors are retried with exponential backoff
(``wait · 2^attempt``, capped at 30 s). A commit is not idempotent — its response can be lost after the Hub
applied it — so before each retry of a commit the branch head is read, and a commit carrying this attempt's
``publish-id`` counts as done instead of being made twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lifecycle.files import sha256_file
from registry.artifacts import ArtifactIntegrityError

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
KEEP = frozenset({".gitattributes"})  # the Hub's own file in every repo: a version's tree never removes it


def transient(exc: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        return exc.response is not None and exc.response.status_code in TRANSIENT_STATUS
    return isinstance(exc, httpx2.TransportError)


def hub_failures() -> tuple[type[BaseException], ...]:
    """What a Hub call raises when the Hub failed (an HTTP error status, a transport error), for callers that
    report it rather than crash: huggingface_hub's errors are httpx errors, and file errors are OSErrors."""
    import httpx2

    return (httpx2.HTTPError, OSError)


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file's content: what the Hub reports as a regular file's ``blob_id``."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def same_content(entry: Any, path: Path) -> bool:
    """Is ``path`` the file the Hub lists as ``entry`` (a RepoFile)? LFS files by sha256, regular ones by git sha1."""
    if not path.is_file():
        return False
    if entry.lfs is not None:
        return sha256_file(path) == entry.lfs.sha256
    return git_blob_sha1(path) == entry.blob_id


def git_blob_sha1_of(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


class HubClient:
    def __init__(self, endpoint: str, token: Callable[[], str | None], cache_dir: Path, *, retries: int = 4,
                 retry_wait_s: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.endpoint, self.cache_dir = endpoint.rstrip("/"), cache_dir
        self.retries, self.retry_wait_s, self.sleep = retries, retry_wait_s, sleep
        self._token_source, self._api = token, None

    def __repr__(self) -> str:
        return f"HubClient(endpoint={self.endpoint!r})"  # never the token

    @property
    def api(self):
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(endpoint=self.endpoint, token=self._token_source())
        return self._api

    def retry(self, what: str, call: Callable[[], T], *, landed: Callable[[], T | None] | None = None) -> T:
        """``call()``, retried on transient errors; ``landed()`` (if given) says whether a failed try took effect."""
        attempt = 0
        while True:
            try:
                return call()
            except Exception as exc:
                if not transient(exc) or attempt == self.retries:
                    raise
                wait = min(self.retry_wait_s * 2**attempt, 30.0)
                log.warning("hub: %s failed (%s %s); retry %d of %d in %.2f s", what, type(exc).__name__,
                            status_of(exc) or "", attempt + 1, self.retries, wait)
            self.sleep(wait)
            attempt += 1
            if landed is not None and (done := self._quietly(landed)) is not None:
                return done

    @staticmethod
    def _quietly(check: Callable[[], T | None]) -> T | None:
        """A landed-check that itself hits a transient error knows nothing: the call is tried again."""
        try:
            return check()
        except Exception as exc:
            if not transient(exc):
                raise
            return None

    # -- repositories and refs ---------------------------------------------------------------------------

    def ensure_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = True) -> str:
        self.retry(f"create {repo_type} repo {repo_id}", lambda: self.api.create_repo(
            repo_id, repo_type=repo_type, private=private, exist_ok=True))
        return repo_id

    def refs(self, repo_id: str, repo_type: str = "model") -> tuple[dict[str, str], dict[str, str]]:
        """({branch: commit}, {tag: commit}) of the repository."""
        refs = self.retry(f"list refs of {repo_id}", lambda: self.api.list_repo_refs(repo_id, repo_type=repo_type))
        return {b.name: b.target_commit for b in refs.branches}, {t.name: t.target_commit for t in refs.tags}

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        info = self.retry(f"read {repo_id}@{revision}", lambda: self.api.repo_info(
            repo_id, revision=revision, repo_type=repo_type))
        return info.sha

    def files(self, repo_id: str, revision: str, repo_type: str = "model") -> dict[str, Any]:
        """path -> RepoFile of every file at ``revision``."""
        from huggingface_hub.hf_api import RepoFile

        listed = self.retry(f"list files of {repo_id}@{revision}", lambda: list(self.api.list_repo_tree(
            repo_id, recursive=True, revision=revision, repo_type=repo_type)))
        return {e.path: e for e in listed if isinstance(e, RepoFile)}

    def create_tag(self, repo_id: str, tag: str, commit: str) -> None:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            self.retry(f"tag {repo_id}@{commit[:12]} as {tag}", lambda: self.api.create_tag(
                repo_id, tag=tag, revision=commit))
        except HfHubHTTPError as exc:  # 409: a retried call whose first try landed, or a stale tag
            if status_of(exc) != 409 or self.refs(repo_id)[1].get(tag) != commit:
                raise

    def delete_ref(self, repo_id: str, *, tag: str | None = None, branch: str | None = None) -> None:
        """Delete a tag or a branch; one already gone is fine (a replayed step)."""
        from huggingface_hub.errors import HfHubHTTPError

        call = (lambda: self.api.delete_tag(repo_id, tag=tag)) if tag else (
            lambda: self.api.delete_branch(repo_id, branch=branch))
        try:
            self.retry(f"delete {tag or branch} of {repo_id}", call)
        except HfHubHTTPError as exc:
            if status_of(exc) != 404:
                raise

    def create_branch(self, repo_id: str, branch: str, commit: str) -> None:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            self.retry(f"branch {branch} of {repo_id} at {commit[:12]}", lambda: self.api.create_branch(
                repo_id, branch=branch, revision=commit, exist_ok=False))
        except HfHubHTTPError as exc:  # 409: a retried call whose first try landed, or someone else's branch
            if status_of(exc) != 409 or self.refs(repo_id)[0].get(branch) != commit:
                raise

    # -- commits -------------------------------------------------------------------------------------------

    def commit(self, repo_id: str, files: dict[str, Path | bytes], title: str, *, repo_type: str = "model",
               replace: bool = True, parent: str | None = None) -> str:
        """One commit on ``main`` writing ``files`` (and, with ``replace``, removing every other file but the
        Hub's own ``.gitattributes``), so the commit's tree is exactly ``files``. Returns its sha. ``parent``: the
        head it must follow; if main has moved since, the Hub refuses the commit (412)."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        marker = f"publish-id: {uuid.uuid4().hex}"
        stale = sorted(set(self.files(repo_id, parent or "main", repo_type)) - set(files) - KEEP) if replace else []

        def call() -> str:
            ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=src) for p, src in sorted(files.items())]
            ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
            return self.api.create_commit(repo_id, ops, commit_message=title, commit_description=marker,
                                          repo_type=repo_type, parent_commit=parent).oid

        def landed() -> str | None:
            last = self.api.list_repo_commits(repo_id, repo_type=repo_type)[0]
            return last.commit_id if marker in last.message else None

        return self.retry(f"commit {title!r} to {repo_id}", call, landed=landed)

    def parent_of(self, repo_id: str, commit: str) -> str | None:
        history = self.retry(f"read history of {repo_id}", lambda: self.api.list_repo_commits(
            repo_id, revision=commit))
        return history[1].commit_id if len(history) > 1 else None

    # -- downloads -----------------------------------------------------------------------------------------

    def snapshot(self, repo_id: str, revision: str, repo_type: str = "model", cache_dir: Path | None = None) -> Path:
        from huggingface_hub import snapshot_download

        return Path(self.retry(f"download {repo_id}@{revision}", lambda: snapshot_download(
            repo_id, revision=revision, repo_type=repo_type, cache_dir=cache_dir or self.cache_dir,
            endpoint=self.endpoint, token=self.api.token)))

    def download(self, repo_id: str, filename: str, revision: str, repo_type: str = "model") -> Path:
        from huggingface_hub import hf_hub_download

        return Path(self.retry(f"download {repo_id}@{revision}/{filename}", lambda: hf_hub_download(
            repo_id, filename, revision=revision, repo_type=repo_type, cache_dir=self.cache_dir,
            endpoint=self.endpoint, token=self.api.token)))

    def verify_against_tree(self, repo_id: str, commit: str, folder: Path) -> None:
        """Every file of ``commit`` is in ``folder`` with the content the Hub holds (git sha1 of a regular
        file, sha256 of an LFS one): a corrupted or edited cache is refused, naming the files."""
        problems = [f"{path} is missing" if not (folder / path).is_file() else f"{path} differs from the Hub's"
                    for path, entry in self.files(repo_id, commit).items() if not same_content(entry, folder / path)]
        if problems:
            raise ArtifactIntegrityError(f"{repo_id}@{commit[:12]} in {folder} failed its integrity check: "
                                         + "; ".join(problems))
