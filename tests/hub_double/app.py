"""TEST DOUBLE of the Hugging Face Hub's HTTP protocol — not the Hub, not a mirror, tests only.

It answers the endpoints the real ``huggingface_hub`` client (2.4) calls for what this project does —
create a repo, validate a card's YAML, preupload + commit (NDJSON; weights and binary files through Git LFS, as
on the Hub: :mod:`.lfs`), tags, branches, refs, commits, repo info, tree, paths-info, and ``resolve`` downloads
with ``X-Repo-Commit``/``ETag`` (an LFS file's: a redirect to a signed URL with ``X-Linked-Etag``) — so the
project's Hub store and ``PeftModel.from_pretrained`` run end to end on a loopback port. Each repository is a bare
git repository (:mod:`.gitrepo`) that a test may inspect with git; LFS objects live beside them by sha256.
Not spoken: Xet (the client is told to use LFS while the double runs), multipart LFS uploads, pull requests,
commit copies of LFS files (the client names them without a size: refused with a 400).

Knobs for tests: ``token`` (every request to the Hub must carry it, so a client that forgets it fails; the
pre-signed storage URLs need a valid signature instead), and :class:`Faults` to make the next calls of an
endpoint answer an HTTP error, before or after applying them.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from .gitrepo import Entry, GitError, GitRepo
from .lfs import LfsPointer, LfsStore, lfs_patterns, upload_mode

KINDS = {"model": "models", "dataset": "datasets", None: "models"}
PREFIX = {"models": "", "datasets": "datasets/"}
STORAGE = "/lfs-storage/"  # the "S3/CDN" side: pre-signed URLs, no Hub token


def _hub_error(status: int, code: str | None, message: str) -> HTTPException:
    headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
    return HTTPException(status, detail=message, headers=headers)


@dataclass
class Faults:
    """``fail("commit", times=2)``: the next two commits answer 500 without committing; ``after=True`` commits
    first and then answers the error (a response lost on the way back)."""

    pending: list[tuple[str, int, bool]] = field(default_factory=list)
    calls: Counter = field(default_factory=Counter)

    def fail(self, endpoint: str, *, times: int = 1, status: int = 500, after: bool = False) -> None:
        self.pending.extend([(endpoint, status, after)] * times)

    def check(self, endpoint: str, *, after: bool) -> None:
        if not after:
            self.calls[endpoint] += 1
        for i, (name, status, when) in enumerate(self.pending):
            if name == endpoint and when == after:
                del self.pending[i]
                raise _hub_error(status, None, f"injected {status} on {endpoint}")


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the one format the client parses


def _validate_card(content: str) -> list[str]:
    """The checks of the Hub's validate-yaml this project relies on: YAML front matter, a well-formed model-index."""
    if not content.startswith("---\n"):
        return []
    try:
        meta = yaml.safe_load(content.split("---\n", 2)[1]) or {}
    except yaml.YAMLError as exc:
        return [f"invalid YAML: {exc}"]
    errors = []
    for entry in meta.get("model-index") or []:
        if not entry.get("name"):
            errors.append("model-index entry without a name")
        for result in entry.get("results") or []:
            if not (result.get("task") or {}).get("type") or not (result.get("dataset") or {}).get("type"):
                errors.append("model-index result needs task.type and dataset.type")
            if not all("type" in m and "value" in m for m in result.get("metrics") or [{}]):
                errors.append("model-index metric needs type and value")
    return errors


def create_hub_app(root: Path, *, token: str | None = None) -> tuple[FastAPI, Faults]:
    app, faults, lock = FastAPI(title="Hugging Face Hub TEST DOUBLE"), Faults(), threading.RLock()
    private: dict[str, bool] = {}
    objects = LfsStore(root / "lfs-objects")

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if request.url.path.startswith(STORAGE):  # pre-signed: the client sends no token there
            return await call_next(request)
        if token is not None and request.headers.get("authorization") != f"Bearer {token}":
            return JSONResponse({"error": "Invalid credentials"}, status_code=401)
        return await call_next(request)

    def storage_url(request: Request, action: str, pointer: LfsPointer) -> str:
        """A pre-signed URL on another host than the Hub's (localhost for 127.0.0.1, and back), so the client
        treats it as the CDN it is on the Hub: it follows the redirect without its token."""
        host = "localhost" if request.url.hostname == "127.0.0.1" else "127.0.0.1"
        return (f"{request.url.scheme}://{host}:{request.url.port}{STORAGE}{pointer.oid}?size={pointer.size}"
                f"&action={action}&sig={objects.signature(action, pointer)}")

    def repo_of(kind: str, ns: str, name: str) -> GitRepo:
        path = root / kind / ns / f"{name}.git"
        if kind not in PREFIX or not path.is_dir():
            raise _hub_error(404, "RepoNotFound", f"Repository {ns}/{name} not found")
        return GitRepo(path)

    def commit_of(repo: GitRepo, revision: str) -> str:
        oid = repo.resolve(revision)
        if oid is None:
            raise _hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return oid

    @app.post("/api/repos/create")
    async def create_repo(request: Request):
        body = await request.json()
        kind = KINDS.get(body.get("type"))
        repo_id = f"{body.get('organization') or 'hub-double'}/{body['name']}"
        path, url = root / kind / f"{repo_id}.git", f"{str(request.base_url).rstrip('/')}/{PREFIX[kind]}{repo_id}"
        with lock:
            if path.exists():  # the Hub's 409 still carries the url: the client reads it with exist_ok=True
                return JSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
            GitRepo.init(path)
            visibility = body.get("visibility") or ("private" if body.get("private") else "public")
            private[f"{kind}/{repo_id}"] = visibility != "public"
        return {"url": url, "name": repo_id, "id": repo_id}

    @app.get("/api/whoami-v2")
    def whoami():
        return {"type": "user", "name": "hub-double", "fullname": "Hub test double", "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}}}

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request):
        errors = _validate_card((await request.json()).get("content", ""))
        return JSONResponse({"errors": [{"message": e} for e in errors], "warnings": []},
                            status_code=400 if errors else 200)

    @app.post("/api/{kind}/{ns}/{name}/preupload/{revision}")
    async def preupload(kind: str, ns: str, name: str, revision: str, request: Request):
        faults.check("preupload", after=False)
        repo = repo_of(kind, ns, name)
        head = repo.resolve(revision)
        known = {e.path: e for e in repo.tree(head)} if head else {}
        patterns = lfs_patterns(repo.blob(known[".gitattributes"].oid)) if ".gitattributes" in known else []
        answers = []
        for f in (await request.json())["files"]:
            mode = upload_mode(f["path"], int(f["size"]), base64.b64decode(f.get("sample") or ""), patterns)
            entry = known.get(f["path"])  # the remote oid the client compares with its own to skip a same file
            remote = None if entry is None else entry.lfs.oid if entry.lfs else entry.oid
            answers.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": remote})
        return {"files": answers}

    async def lfs_batch(kind: str, ns: str, name: str, request: Request):
        """The Git LFS batch API, upload side, "basic" transfer: where to PUT each object the store lacks."""
        faults.check("lfs-batch", after=False)
        repo_of(kind, ns, name)
        body = await request.json()
        if body.get("operation") != "upload" or "basic" not in (body.get("transfers") or ["basic"]) or \
                body.get("hash_algo", "sha256") != "sha256":
            raise _hub_error(400, None, "the test double's LFS batch API does uploads, basic transfer, sha256 only")
        verify = f"{str(request.base_url).rstrip('/')}/{PREFIX[kind]}{ns}/{name}.git/info/lfs/objects/verify"
        answered = []
        for obj in body.get("objects") or []:
            try:
                pointer = LfsPointer(str(obj["oid"]), int(obj["size"]))
                objects.path(pointer.oid)
            except (KeyError, TypeError, ValueError):
                answered.append({"oid": str(obj.get("oid")), "size": 0,
                                 "error": {"code": 422, "message": "an object needs a sha256 oid and a size"}})
                continue
            item: dict[str, Any] = {"oid": pointer.oid, "size": pointer.size}
            if not objects.has(pointer):  # an object already stored needs no upload: no actions
                item["actions"] = {"upload": {"href": storage_url(request, "upload", pointer), "header": {}},
                                   "verify": {"href": verify, "header": {}}}
            answered.append(item)
        return JSONResponse({"transfer": "basic", "objects": answered, "hash_algo": "sha256"},
                            media_type="application/vnd.git-lfs+json")

    async def lfs_verify(request: Request):
        body = await request.json()
        try:
            pointer = LfsPointer(str(body.get("oid")), int(body.get("size", -1)))
            objects.path(pointer.oid)
        except (TypeError, ValueError):
            raise _hub_error(422, None, "verify needs a sha256 oid and a size") from None
        if not objects.has(pointer):
            raise _hub_error(404, None, f"LFS object {pointer.oid} of {pointer.size} bytes was not uploaded")
        return {}

    @app.post("/{ns}/{name}.git/info/lfs/objects/batch")
    async def lfs_batch_model(ns: str, name: str, request: Request):
        return await lfs_batch("models", ns, name, request)

    @app.post("/datasets/{ns}/{name}.git/info/lfs/objects/batch")
    async def lfs_batch_dataset(ns: str, name: str, request: Request):
        return await lfs_batch("datasets", ns, name, request)

    @app.post("/{ns}/{name}.git/info/lfs/objects/verify")
    @app.post("/datasets/{ns}/{name}.git/info/lfs/objects/verify")
    async def lfs_verify_route(ns: str, name: str, request: Request):
        return await lfs_verify(request)

    def signed_pointer(oid: str, request: Request, action: str) -> LfsPointer:
        query = request.query_params
        try:
            pointer = LfsPointer(oid, int(query.get("size", "")))
            objects.path(oid)
        except ValueError:
            raise _hub_error(400, None, "malformed storage URL") from None
        if query.get("action") != action or not objects.signed(action, pointer, query.get("sig", "")):
            raise _hub_error(403, None, "SignatureDoesNotMatch")
        return pointer

    @app.put(STORAGE + "{oid}")
    async def storage_put(oid: str, request: Request):
        faults.check("lfs-upload", after=False)
        pointer = signed_pointer(oid, request, "upload")
        try:
            objects.put(pointer, await request.body())
        except ValueError as exc:
            raise _hub_error(400, "BadDigest", str(exc)) from None
        return Response(status_code=200, headers={"ETag": f'"{pointer.oid}"'})

    @app.api_route(STORAGE + "{oid}", methods=["GET", "HEAD"])
    def storage_get(oid: str, request: Request):
        pointer = signed_pointer(oid, request, "download")
        if not objects.has(pointer):
            raise _hub_error(404, None, "NoSuchKey")
        body = b"" if request.method == "HEAD" else objects.read(oid)
        return Response(content=body, headers={"Content-Length": str(pointer.size), "ETag": f'"{oid}"',
                                               "Content-Type": "application/octet-stream"})

    @app.get("/api/{kind}/{ns}/{name}/xet-{access}-token/{revision:path}")
    def xet_token(kind: str, ns: str, name: str, access: str, revision: str):
        raise _hub_error(501, None, "the Hub test double speaks Git LFS, not Xet: run the client with "
                                    "HF_HUB_DISABLE_XET=1 (HubDouble sets it while it runs)")

    @app.post("/api/{kind}/{ns}/{name}/commit/{revision}")
    async def commit(kind: str, ns: str, name: str, revision: str, request: Request):
        faults.check("commit", after=False)
        repo = repo_of(kind, ns, name)
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        adds, deletes = {}, []
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                adds[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value.get("algo", "sha256") != "sha256" or "size" not in value:
                    raise _hub_error(400, None, "the test double takes lfsFile entries with a sha256 and a size")
                pointer = LfsPointer(str(value["oid"]), int(value["size"]))
                if not objects.has(pointer):  # the Hub refuses a pointer to content it does not hold
                    raise _hub_error(422, None, f"LFS object {pointer.oid} of {value['path']} was not uploaded")
                adds[value["path"]] = pointer.encode()
            elif key in ("deletedFile", "deletedFolder"):
                deletes.append(value["path"])
            elif key != "header":
                raise _hub_error(400, None, f"the test double does not take {key} entries")
        message = header["summary"] + (f"\n\n{header['description']}" if header.get("description") else "")
        with lock:
            head = commit_of(repo, revision)
            if header.get("parentCommit") and header["parentCommit"] != head:
                raise _hub_error(412, None, f"parent commit {header['parentCommit']} is not the head of {revision}")
            oid = repo.commit(revision, adds, deletes, message, parent=head)
        faults.check("commit", after=True)
        url = f"{str(request.base_url).rstrip('/')}/{PREFIX[kind]}{ns}/{name}/commit/{oid}"
        return {"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None}

    @app.get("/api/{kind}/{ns}/{name}/refs")
    def refs(kind: str, ns: str, name: str):
        repo = repo_of(kind, ns, name)

        def listed(refs: dict[str, str], prefix: str) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"refs/{prefix}/{n}", "targetCommit": o} for n, o in sorted(refs.items())]

        return {"branches": listed(repo.refs("heads"), "heads"), "tags": listed(repo.refs("tags"), "tags"),
                "converts": [], "pullRequests": []}

    @app.get("/api/{kind}/{ns}/{name}/commits/{revision}")
    def commits(kind: str, ns: str, name: str, revision: str):
        repo = repo_of(kind, ns, name)
        return [{"id": c.oid, "title": c.title, "message": c.message, "date": _date(c.timestamp),
                 "authors": [{"user": "hub-double", "avatar": ""}]} for c in repo.log(commit_of(repo, revision))]

    @app.post("/api/{kind}/{ns}/{name}/tag/{revision}")
    async def create_tag(kind: str, ns: str, name: str, revision: str, request: Request):
        faults.check("tag", after=False)
        repo, tag = repo_of(kind, ns, name), (await request.json())["tag"]
        with lock:
            target = commit_of(repo, revision)
            if tag in repo.refs("tags"):
                raise _hub_error(409, None, f"Tag {tag} already exists")
            repo.set_ref(f"refs/tags/{tag}", target)
        faults.check("tag", after=True)
        return {}

    @app.delete("/api/{kind}/{ns}/{name}/tag/{tag}")
    def delete_tag(kind: str, ns: str, name: str, tag: str):
        repo = repo_of(kind, ns, name)
        with lock:
            if tag not in repo.refs("tags"):
                raise _hub_error(404, "RevisionNotFound", f"Tag {tag} not found")
            repo.set_ref(f"refs/tags/{tag}", None)
        return {}

    @app.post("/api/{kind}/{ns}/{name}/branch/{branch}")
    async def create_branch(kind: str, ns: str, name: str, branch: str, request: Request):
        faults.check("branch", after=False)
        repo, body = repo_of(kind, ns, name), (await request.json()) or {}
        with lock:
            target = commit_of(repo, body.get("startingPoint") or "main")
            if branch in repo.refs("heads"):
                raise _hub_error(409, None, f"Branch {branch} already exists")
            repo.set_ref(f"refs/heads/{branch}", target)
        return {}

    @app.delete("/api/{kind}/{ns}/{name}/branch/{branch}")
    def delete_branch(kind: str, ns: str, name: str, branch: str):
        repo = repo_of(kind, ns, name)
        if branch == "main":
            raise _hub_error(403, None, "You cannot delete the main branch")
        with lock:
            if branch not in repo.refs("heads"):
                raise _hub_error(404, "RevisionNotFound", f"Branch {branch} not found")
            repo.set_ref(f"refs/heads/{branch}", None)
        return {}

    @app.get("/api/{kind}/{ns}/{name}")
    @app.get("/api/{kind}/{ns}/{name}/revision/{revision}")
    def info(kind: str, ns: str, name: str, revision: str = "main"):
        faults.check("info", after=False)
        repo = repo_of(kind, ns, name)
        oid = commit_of(repo, revision)
        last = repo.log(oid)[0]
        return {"id": f"{ns}/{name}", "author": ns, "sha": oid, "private": private.get(f"{kind}/{ns}/{name}", True),
                "lastModified": _date(last.timestamp), "tags": [], "disabled": False, "gated": False,
                "siblings": [{"rfilename": e.path} for e in repo.tree(oid)]}

    def listed(e: Entry) -> dict[str, Any]:
        if e.lfs is None:
            return {"type": "file", "oid": e.oid, "size": e.size, "path": e.path}
        return {"type": "file", "oid": e.oid, "size": e.lfs.size, "path": e.path,
                "lfs": {"oid": e.lfs.oid, "size": e.lfs.size, "pointerSize": e.size}}

    def entries(repo: GitRepo, oid: str) -> list[dict[str, Any]]:
        return [listed(e) for e in repo.tree(oid)]

    @app.get("/api/{kind}/{ns}/{name}/tree/{revision}")
    @app.get("/api/{kind}/{ns}/{name}/tree/{revision}/{path:path}")
    def tree(kind: str, ns: str, name: str, revision: str, path: str = "", recursive: bool = False):
        repo = repo_of(kind, ns, name)
        prefix, found = (path.strip("/") + "/") if path.strip("/") else "", {}
        for entry in entries(repo, commit_of(repo, revision)):
            if not entry["path"].startswith(prefix):
                continue
            rest = entry["path"][len(prefix):]
            if recursive or "/" not in rest:
                found[entry["path"]] = entry
            else:
                folder = prefix + rest.split("/", 1)[0]
                found[folder] = {"type": "directory", "oid": "0" * 40, "size": 0, "path": folder}
        return list(found.values())

    @app.post("/api/{kind}/{ns}/{name}/paths-info/{revision}")
    async def paths_info(kind: str, ns: str, name: str, revision: str, request: Request):
        repo = repo_of(kind, ns, name)
        wanted = set((await request.form()).getlist("paths"))
        return [e for e in entries(repo, commit_of(repo, revision)) if e["path"] in wanted]

    def resolve(kind: str, ns: str, name: str, revision: str, path: str, request: Request) -> Response:
        faults.check("resolve", after=False)
        repo = repo_of(kind, ns, name)
        oid = commit_of(repo, revision)
        entry = next((e for e in repo.tree(oid) if e.path == path), None)
        if entry is None:
            raise _hub_error(404, "EntryNotFound", f"{path} does not exist at {revision}")
        if entry.lfs is not None:  # as the Hub: a redirect to storage, the metadata on the redirect itself
            return Response(status_code=302, headers={
                "Location": storage_url(request, "download", entry.lfs), "X-Repo-Commit": oid,
                "ETag": f'"{entry.oid}"', "X-Linked-Etag": f'"{entry.lfs.oid}"', "X-Linked-Size": str(entry.lfs.size)})
        headers = {"X-Repo-Commit": oid, "ETag": f'"{entry.oid}"', "Content-Length": str(entry.size),
                   "Content-Type": "application/octet-stream"}
        body = b"" if request.method == "HEAD" else repo.blob(entry.oid)
        return Response(content=body, headers=headers)

    @app.api_route("/datasets/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    def resolve_dataset(ns: str, name: str, revision: str, path: str, request: Request):
        return resolve("datasets", ns, name, revision, path, request)

    @app.api_route("/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    def resolve_model(ns: str, name: str, revision: str, path: str, request: Request):
        return resolve("models", ns, name, revision, path, request)

    @app.exception_handler(GitError)
    async def git_failed(request: Request, exc: GitError):
        return JSONResponse({"error": str(exc)}, status_code=409)

    return app, faults
