"""The Hugging Face Hub artifact store: ``SLM_ARTIFACT_STORE=hub``. Same protocol as the local store.

Layout on the Hub (``<ns>`` is ``SLM_HUB_NAMESPACE``; repositories private unless ``SLM_HUB_PRIVATE=false``)::

    <ns>/<model>          model repo. Each version is ONE commit on main whose tree is exactly the version's
                          files at the root (PEFT adapter, lineage.json, eval.json, README.md model card), tagged
                          ``v<N>``. Branch ``champion`` points at the champion's commit, so
                          ``PeftModel.from_pretrained(base, "<ns>/<model>", revision="champion")`` is the champion.
    <ns>/<name>-base      base model repo: the base's files, pinned in lineage by commit sha. The base lives on
                          the Hub (not only locally) because a model card's ``base_model`` must name a Hub repo
                          and its commit, and whoever loads an adapter from the Hub needs its base from there too.
                          Publishing the same content again reuses the commit.
    <ns>/<dataset repo>   dataset repo: ``<role>.jsonl`` per data role; each snapshot is a commit (a revision),
                          and the card's ``datasets:`` names this repo.

Kept locally under the artifact root: the download cache (``hub-cache/``), tombstones (``tombstones/``), and
bases or data snapshots recorded as ``local://`` before the store was switched (still served from there).

Undo, never rewrite: unpublishing deletes the tag and, when the version's commit is still the head of main,
adds a revert commit restoring the previous tree. Retiring deletes the tag (``delete``) or renames it
``archived-v<N>`` (``archive``); when the version's commit is the head of main (nothing published after it), a
commit on main first shows the champion's tree instead (an empty one without a champion), so a download that names
no revision never gets retired weights. The commits stay in history and the tombstone records their sha.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from lifecycle.files import hash_tree, sha256_file, tree_digest
from lifecycle.records import ModelVersion
from registry.artifacts import ArtifactIntegrityError, LocalArtifactStore, verify_tree
from registry.hub_client import HubClient, git_blob_sha1_of, same_content, status_of

log = logging.getLogger(__name__)
CHAMPION = "champion"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_URI = re.compile(r"^hf://(?:(?P<kind>datasets)/)?(?P<repo>[^@]+)@(?P<rev>[^/#]+)(?:/(?P<path>[^#]+))?"
                  r"(?:#sha256=(?P<sha>[0-9a-f]{64}))?$")


def _not_found(exc: BaseException) -> bool:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    return isinstance(exc, RepositoryNotFoundError | RevisionNotFoundError)


class HubArtifactStore:
    scheme = "hub"

    def __init__(self, root: Path, *, namespace: str, endpoint: str, token: Callable[[], str | None],
                 private: bool = True, dataset_repo: str = "slm-datasets", retries: int = 4,
                 retry_wait_s: float = 1.0) -> None:
        self.root = root.resolve()
        self.local = LocalArtifactStore(self.root)
        self.namespace, self.private, self.dataset_repo = namespace, private, f"{namespace}/{dataset_repo}"
        self.hub = HubClient(endpoint, token, self.root / "hub-cache", retries=retries, retry_wait_s=retry_wait_s)
        self._verified_bases: dict[tuple[str, str], Path] = {}

    def __repr__(self) -> str:
        return f"HubArtifactStore(namespace={self.namespace!r}, endpoint={self.hub.endpoint!r})"

    def repo_id(self, model: str) -> str:
        return f"{self.namespace}/{model}"

    # -- versions -------------------------------------------------------------------------------------------

    def publish_version(self, model: str, number: int, staged: Path) -> tuple[str, dict[str, str]]:
        repo = self.hub.ensure_repo(self.repo_id(model), private=self.private)
        files = hash_tree(staged)
        commit = self.hub.commit(repo, {rel: staged / rel for rel in files}, f"{model}:v{number}")
        try:
            self.hub.create_tag(repo, f"v{number}", commit)
        except BaseException:
            try:
                self._revert(repo, commit, f"{model}:v{number} was not published")
            except Exception:  # the tag failure is the error to report; say what is left behind
                log.exception("hub: could not revert %s@%s; main shows an untagged, unregistered commit (the "
                              "next publish replaces its tree)", repo, commit)
            raise
        log.info("hub: published %s:v%d as %s@%s", model, number, repo, commit)
        return f"hf://{repo}@{commit}", files

    def unpublish_version(self, model: str, number: int) -> None:
        """Undo a publish whose registration did not complete: drop the tag, revert main if still its head."""
        repo = self.repo_id(model)
        try:
            branches, tags = self.hub.refs(repo)
        except Exception as exc:
            if _not_found(exc):
                return  # nothing was ever published there
            raise
        commit = tags.get(f"v{number}")
        if commit is None:
            return
        self.hub.delete_ref(repo, tag=f"v{number}")
        if branches.get("main") == commit:
            self._revert(repo, commit, f"{model}:v{number} was not registered")
        log.warning("hub: unpublished %s:v%d (tag removed; commit %s stays in history)", model, number, commit)

    def _revert(self, repo: str, commit: str, why: str) -> None:
        """A new commit on main with the tree of ``commit``'s parent: history is added to, never rewritten."""
        self._replace_main(repo, commit, self.hub.parent_of(repo, commit), f"revert {commit[:12]}: {why}")

    def _replace_main(self, repo: str, commit: str, source: str | None, title: str) -> bool:
        """While main shows ``commit``'s files (its head, or a later commit with the same tree: main moved to the
        champion's tree once may show a version retired later), a new commit on main with the tree of ``source`` (a
        revision; None: an empty tree). False when main shows something else (something was published after it),
        or came to while this ran: the commit names main's head as its parent, so a publish in between is never
        overwritten (the Hub refuses it, 412)."""
        head = self.hub.head(repo)
        if head != commit and self._tree(repo, head) != self._tree(repo, commit):
            return False
        with tempfile.TemporaryDirectory(prefix="slm-main-") as tmp:
            files = {}
            if source is not None:
                folder = self.hub.snapshot(repo, source, cache_dir=Path(tmp))
                files = {rel: folder / rel for rel in hash_tree(folder)}
            try:
                self.hub.commit(repo, files, title, parent=head)
            except Exception as exc:
                if status_of(exc) != 412:
                    raise
                return False  # main moved on meanwhile: it no longer shows the commit
        return True

    def _tree(self, repo: str, revision: str) -> dict[str, str]:
        """path -> git blob id of every file at ``revision`` (an LFS file's: its pointer's, so its content's)."""
        return {path: entry.blob_id for path, entry in self.hub.files(repo, revision).items()}

    def version_dir(self, model: str, number: int, files: dict[str, str]) -> Path:
        try:
            folder = self.hub.snapshot(self.repo_id(model), f"v{number}")
        except Exception as exc:
            if _not_found(exc):
                raise ArtifactIntegrityError(f"{model}:v{number} is not on the Hub: no tag v{number} in "
                                             f"{self.repo_id(model)}") from None
            raise
        verify_tree(folder, files)
        return folder

    def version_text(self, version: ModelVersion, filename: str) -> str | None:
        """A file of the version's own commit (recorded in its uri), even after its tag was deleted."""
        match = _URI.match(version.artifact_uri)
        if match is None or filename not in version.files:
            return None
        return self.hub.download(match["repo"], filename, match["rev"]).read_text()

    # -- champion branch ------------------------------------------------------------------------------------

    def point_champion(self, model: str, number: int | None) -> dict[str, object] | None:
        """Point branch ``champion`` at ``v<number>``'s commit (None removes it). Returns what moved, or None
        when it already pointed there. Moving is delete + create (the Hub has no ref update): for that instant
        the branch is absent, and a loader retries; it never points at a wrong version."""
        repo = self.repo_id(model)
        branches, tags = self.hub.refs(repo)
        before = branches.get(CHAMPION)
        target = None if number is None else tags.get(f"v{number}")
        if number is not None and target is None:
            raise ArtifactIntegrityError(f"{model}:v{number} has no tag v{number} in {repo}: cannot make it champion")
        if before == target:
            return None
        if before is not None:
            self.hub.delete_ref(repo, branch=CHAMPION)
        if target is not None:
            self.hub.create_branch(repo, CHAMPION, target)
        log.info("hub: %s branch %s moved %s -> %s (v%s)", repo, CHAMPION, before, target, number)
        return {"repo": repo, "branch": CHAMPION, "from_commit": before, "to_commit": target, "version": number}

    # -- retirement -----------------------------------------------------------------------------------------

    def retire_weights(self, model: str, number: int, how: Literal["archive", "delete"],
                       champion: int | None = None) -> bool:
        """Delete tag ``v<N>`` (``archive``: first tag the same commit ``archived-v<N>``). False when done before.

        When main shows the version's files (the last one published: a candidate rolled back and nothing published
        since), main first gets a commit with the tree of ``champion`` (the registry's: the Hub's branch may lag
        behind it after a failed sync), or an empty tree without one: the default download (``from_pretrained(repo)``,
        no revision) would otherwise still serve the retired weights. Likewise branch ``champion`` still on the
        version (a rollback whose Hub step failed, never synced) is moved to ``champion``'s tag first:
        ``revision="champion"`` would serve the retired weights. Before the tag goes, so a run that dies in between
        finds the tag and does the rest."""
        repo = self.repo_id(model)
        branches, tags = self.hub.refs(repo)
        commit = tags.get(f"v{number}")
        if commit is None:
            return False
        if how == "archive":
            self.hub.create_tag(repo, f"archived-v{number}", commit)
        if branches.get(CHAMPION) == commit:
            now = champion if champion not in (None, number) and f"v{champion}" in tags else None
            self.point_champion(model, now)  # no tag for the registry's champion (restore it): no branch meanwhile
            log.info("hub: %s branch %s moved off retired %s:v%d to %s", repo, CHAMPION, model, number,
                     f"v{now}" if now else "nothing")
        source = None if champion in (None, number) else tags.get(f"v{champion}")
        shown = "nothing" if source is None else f"the champion, v{champion}"
        if self._replace_main(repo, commit, source, f"{model}:v{number} retired: main shows {shown}"):
            log.info("hub: %s main moved off retired %s:v%d to %s", repo, model, number, shown)
        self.hub.delete_ref(repo, tag=f"v{number}")
        return True

    def archive_uri(self, model: str, number: int) -> str:
        return f"hf://{self.repo_id(model)}@archived-v{number}"

    def is_archived(self, model: str, number: int) -> bool:
        return f"archived-v{number}" in self.hub.refs(self.repo_id(model))[1]

    # -- base models ----------------------------------------------------------------------------------------

    def put_base(self, name: str, staged: Path) -> tuple[str, str]:
        """Publish a base model folder to ``<ns>/<name>-base``; returns (repo id, commit sha). Content already at
        the head of main is not committed again."""
        repo = self.hub.ensure_repo(f"{self.namespace}/{name}-base", private=self.private)
        local = hash_tree(staged)
        head = self.hub.head(repo)
        remote = {p: e for p, e in self.hub.files(repo, head).items() if p != ".gitattributes"}
        if set(remote) != set(local) or not all(same_content(e, staged / p) for p, e in remote.items()):
            head = self.hub.commit(repo, {rel: staged / rel for rel in local},
                                   f"base {name}: tree sha256 {tree_digest(local)[:12]}")
        return repo, head

    def base_dir(self, uri: str, revision: str | None = None) -> Path:
        """The base at ``revision`` (a commit sha; main if None), each file checked against the Hub's tree."""
        if uri.startswith(("local://", "hf://")):  # hf://: an upstream Hub base, not in this store's namespace
            return self.local.base_dir(uri, revision)
        key = (uri, revision or "main")
        if key in self._verified_bases:
            return self._verified_bases[key]
        folder = self.hub.snapshot(uri, revision or "main")
        self.hub.verify_against_tree(uri, folder.name, folder)  # a snapshot folder is named by its commit
        if revision and _COMMIT.match(revision):  # a commit never changes: check it once per process
            self._verified_bases[key] = folder
        return folder

    # -- data snapshots -------------------------------------------------------------------------------------

    def put_dataset(self, sha256: str, content: bytes, name: str = "data") -> str:
        """One revision of the dataset repo holding ``content`` as ``<name>.jsonl``; the uri pins the commit
        and carries the content hash (``#sha256=``) that :meth:`dataset_path` checks."""
        if hashlib.sha256(content).hexdigest() != sha256:
            raise ValueError(f"dataset content does not match its fingerprint {sha256[:12]}…")
        repo = self.hub.ensure_repo(self.dataset_repo, repo_type="dataset", private=self.private)
        path = re.sub(r"[^A-Za-z0-9._-]+", "-", name) + ".jsonl"
        head = self.hub.head(repo, repo_type="dataset")
        current = self.hub.files(repo, head, repo_type="dataset").get(path)
        if current is None or current.blob_id != git_blob_sha1_of(content):
            head = self.hub.commit(repo, {path: content}, f"{name}: {sha256[:12]}", repo_type="dataset",
                                   replace=False)
        return f"hf://datasets/{repo}@{head}/{path}#sha256={sha256}"

    def dataset_path(self, uri: str) -> Path:
        if uri.startswith("local://"):
            return self.local.dataset_path(uri)
        match = _URI.match(uri)
        if match is None or match["kind"] != "datasets" or not match["path"] or not match["sha"]:
            raise ValueError(f"{uri!r} is not a Hub data snapshot (expected hf://datasets/REPO@COMMIT/FILE#sha256=…)")
        path = self.hub.download(match["repo"], match["path"], match["rev"], repo_type="dataset")
        if sha256_file(path) != match["sha"]:
            raise ArtifactIntegrityError(f"dataset snapshot {uri} no longer matches its content hash")
        return path

