"""The Hub client's retry policy and uri/settings plumbing, without any server."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError

from registry.hub_client import HubClient, git_blob_sha1, git_blob_sha1_of, transient


def http_error(status: int) -> HfHubHTTPError:
    response = httpx2.Response(status, request=httpx2.Request("POST", "http://hub.test/api/x"))
    return HfHubHTTPError(f"{status}", response=response)


def client(waits: list[float], retries: int = 4) -> HubClient:
    return HubClient("http://hub.test", lambda: "hf_secret", Path("/nonexistent"), retries=retries,
                     retry_wait_s=0.5, sleep=waits.append)


def failing(errors: list[BaseException], result: str = "ok"):
    calls = []

    def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


@pytest.mark.parametrize(("error", "retried"), [
    (http_error(500), True), (http_error(503), True), (http_error(429), True), (http_error(408), True),
    (httpx2.ConnectError("refused"), True), (httpx2.ReadTimeout("slow"), True),
    (http_error(400), False), (http_error(401), False), (http_error(404), False), (http_error(409), False),
    (ValueError("bad"), False),
])
def test_what_counts_as_transient(error, retried):
    assert transient(error) is retried


def test_transient_errors_back_off_exponentially_then_give_up():
    waits: list[float] = []
    call, calls = failing([http_error(503)] * 3)
    assert client(waits).retry("x", call) == "ok" and waits == [0.5, 1.0, 2.0] and len(calls) == 4
    waits.clear()
    call, calls = failing([http_error(502)] * 5)
    with pytest.raises(HfHubHTTPError):
        client(waits, retries=4).retry("x", call)
    assert len(calls) == 5 and waits == [0.5, 1.0, 2.0, 4.0]


def test_a_permanent_error_is_not_retried():
    waits: list[float] = []
    call, calls = failing([http_error(403)])
    with pytest.raises(HfHubHTTPError):
        client(waits).retry("x", call)
    assert len(calls) == 1 and waits == []


def test_a_call_that_landed_despite_its_error_is_not_repeated():
    waits: list[float] = []
    call, calls = failing([http_error(500)])
    assert client(waits).retry("commit", call, landed=lambda: "abc123") == "abc123" and len(calls) == 1


def test_the_token_stays_out_of_repr():
    assert "hf_secret" not in repr(client([]))


def test_git_blob_ids_match_git(tmp_path):
    (tmp_path / "f").write_bytes(b"hello\n")
    # `printf 'hello\n' | git hash-object --stdin`
    assert git_blob_sha1(tmp_path / "f") == git_blob_sha1_of(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
