"""The Hub test double refuses what the Hub refuses on the Git LFS path, so a client bug cannot pass against it:
bytes that are not the object they claim to be, a commit naming an object never uploaded, a storage URL without
its signature. Raw HTTP here; the real client's LFS path runs in test_hub_store."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest

from tests.hub_double import HubDouble, LfsPointer

TOKEN = "hf_lfs_double_token"


@pytest.fixture
def hub(tmp_path):
    with HubDouble(tmp_path / "hub", token=TOKEN) as running:
        yield running


def _client(hub: HubDouble) -> httpx.Client:
    return httpx.Client(base_url=hub.url, headers={"authorization": f"Bearer {TOKEN}"})


def _upload_href(http: httpx.Client, pointer: LfsPointer) -> dict:
    answer = http.post("/acme/m.git/info/lfs/objects/batch", json={
        "operation": "upload", "transfers": ["basic", "multipart"], "hash_algo": "sha256",
        "objects": [{"oid": pointer.oid, "size": pointer.size}]})
    assert answer.status_code == 200 and answer.json()["transfer"] == "basic"
    return answer.json()["objects"][0]


def _commit_lfs(http: httpx.Client, pointer: LfsPointer) -> httpx.Response:
    lines = [{"key": "header", "value": {"summary": "weights", "description": ""}},
             {"key": "lfsFile", "value": {"path": "model.safetensors", "algo": "sha256", "oid": pointer.oid,
                                          "size": pointer.size}}]
    return http.post("/api/models/acme/m/commit/main", content="\n".join(map(json.dumps, lines)),
                     headers={"content-type": "application/x-ndjson"})


def test_preupload_sends_weights_and_binaries_to_lfs_and_the_rest_inline(hub):
    with _client(hub) as http:
        http.post("/api/repos/create", json={"name": "m", "organization": "acme"}).raise_for_status()
        files = [("model.safetensors", b"{}"), ("sub/pytorch_model.bin", b"x"), ("notes.txt", b"a\0b"),
                 ("config.json", b"{}"), ("big.json", b"{" * 10), ("empty.json", b"")]
        sizes = {"big.json": 10_000_000}
        answer = http.post("/api/models/acme/m/preupload/main", json={"files": [
            {"path": p, "sample": base64.b64encode(c).decode(), "size": sizes.get(p, len(c))} for p, c in files]})
    modes = {f["path"]: f["uploadMode"] for f in answer.json()["files"]}
    assert modes == {"model.safetensors": "lfs", "sub/pytorch_model.bin": "lfs", "notes.txt": "lfs",
                     "config.json": "regular", "big.json": "lfs", "empty.json": "regular"}


def test_lying_bytes_an_unuploaded_object_and_unsigned_urls_are_refused(hub):
    content = b"weights" * 100
    pointer = LfsPointer(hashlib.sha256(content).hexdigest(), len(content))
    with _client(hub) as http:
        http.post("/api/repos/create", json={"name": "m", "organization": "acme"}).raise_for_status()
        head = hub.repo("acme/m").resolve("main")
        href = _upload_href(http, pointer)["actions"]["upload"]["href"]
        assert not href.startswith(hub.url)  # another host than the Hub's: the client sends no token there

        lie = httpx.put(href, content=b"W" * len(content))  # the right size, other bytes
        assert lie.status_code == 400 and "not object" in lie.headers["x-error-message"]
        assert not hub.lfs_object(pointer.oid).exists()
        refused = _commit_lfs(http, pointer)
        assert refused.status_code == 422 and "was not uploaded" in refused.headers["x-error-message"]
        assert hub.repo("acme/m").resolve("main") == head  # nothing committed

        assert httpx.put(href.split("&sig=")[0] + "&sig=" + "0" * 64, content=content).status_code == 403
        assert httpx.get(href).status_code == 403  # an upload URL does not download
        assert httpx.put(href, content=content).status_code == 200
        assert "actions" not in _upload_href(http, pointer)  # stored: nothing more to upload
        assert _commit_lfs(http, pointer).status_code == 200
        listed = http.get("/api/models/acme/m/tree/main").json()
        assert {"oid": pointer.oid, "size": pointer.size, "pointerSize": len(pointer.encode())} in [
            e.get("lfs") for e in listed]
        resolved = http.head("/acme/m/resolve/main/model.safetensors")
        assert resolved.status_code == 302 and resolved.headers["x-linked-etag"] == f'"{pointer.oid}"'
        assert httpx.get(resolved.headers["location"]).content == content
        xet = http.get("/api/models/acme/m/xet-write-token/main")
        assert xet.status_code == 501 and "HF_HUB_DISABLE_XET" in xet.headers["x-error-message"]
