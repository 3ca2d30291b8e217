"""The gateway's API-key check (serving.gateway.ApiKeys), as plain ASGI: which paths it guards."""

import asyncio
import json

import pytest

from serving.gateway import ApiKeys


class _State:
    model = "intent-router"

    def __init__(self) -> None:
        self.rejected: list[str] = []
        self.metrics = self

    def reject(self, code: str, model: str) -> None:
        self.rejected.append(code)

    @staticmethod
    def api_key_ok(authorization: str | None) -> bool:
        return authorization == "Bearer good-key"


def _call(path: str, root_path: str = "", authorization: str | None = None) -> tuple[int, dict | None, _State]:
    """One request through ApiKeys in front of an app that answers 200: (status, error body or None, state)."""
    state, sent = _State(), []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    headers = [(b"authorization", authorization.encode())] if authorization else []
    scope = {"type": "http", "method": "POST", "path": path, "root_path": root_path, "headers": headers,
             "query_string": b""}
    asyncio.run(ApiKeys(app, state)(scope, receive, send))
    status = sent[0]["status"]
    return status, (json.loads(sent[1]["body"]) if status != 200 else None), state


def test_v1_needs_a_key_and_other_paths_do_not():
    status, body, state = _call("/v1/completions")
    assert status == 401 and body["error"]["code"] == "invalid_api_key" and state.rejected == ["auth"]
    assert _call("/v1/completions", authorization="Bearer good-key")[0] == 200
    assert _call("/healthz")[0] == 200
    assert _call("/metrics")[0] == 200


@pytest.mark.parametrize("authorization", [None, "Bearer wrong"])
def test_a_gateway_mounted_under_a_root_path_still_checks_keys(authorization):
    """Behind a proxy (``uvicorn --root-path /api``) the path holds the prefix; the router strips it, and so must
    the key check, or /api/v1/... would be served without a key."""
    status, body, _ = _call("/api/v1/chat/completions", root_path="/api", authorization=authorization)
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert _call("/api/v1/chat/completions", root_path="/api", authorization="Bearer good-key")[0] == 200
    assert _call("/api/healthz", root_path="/api")[0] == 200
