"""Access: the admin API refuses a missing or wrong token and changes nothing; secrets never leak.

The gateway runs on loopback with distinctive secrets in the environment the project reads them from
(``SLM_ADMIN_TOKEN``, ``SLM_API_KEYS``, ``HF_TOKEN``). After requests good and bad and a registry operation,
no secret — nor a wrong token a client tried — may appear in the logs, the process output, any file under
SLM_HOME (the registry database, artifacts, reports), the prediction log, the audit events or /metrics.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from pathlib import Path

import httpx
import pytest

from tests.env import environment
from tests.reliability.helpers import MODEL, start_gateway

ADMIN_TOKEN = f"adm-{uuid.uuid4().hex}"
API_KEY = f"key-{uuid.uuid4().hex}"
HF_TOKEN = f"hf_{uuid.uuid4().hex}"
GUESS = f"guess-{uuid.uuid4().hex}"  # a wrong token a client sends: not ours to keep either
SECRETS = {"admin token": ADMIN_TOKEN, "API key": API_KEY, "HF token": HF_TOKEN, "guessed token": GUESS}

ADMIN_CALLS = [
    ("GET", "/admin/split", None),
    ("PUT", "/admin/split", {"challenger": 2, "challenger_percent": 50, "reason": "take over"}),
    ("GET", "/admin/aggregates", None),
    ("POST", "/admin/versions/2/load", None),
    ("POST", "/admin/versions/1/unload", None),
]
BAD_AUTH = {
    "missing": None,
    "wrong": f"Bearer {GUESS}",
    "empty": "Bearer",
    "truncated": f"Bearer {ADMIN_TOKEN[:-1]}",
    "extended": f"Bearer {ADMIN_TOKEN}x",
    "basic_scheme": "Basic " + base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()).decode(),
    "bare_token": ADMIN_TOKEN,  # no scheme: not a credential, even when it is the right token
    "other_scheme": f"Token {ADMIN_TOKEN}",
    "api_key_is_not_admin": f"Bearer {API_KEY}",
}


@pytest.fixture(scope="module")
def gateway(tiny_registry):
    with environment(SLM_ADMIN_TOKEN=ADMIN_TOKEN, SLM_API_KEYS=f"other-key,{API_KEY}", HF_TOKEN=HF_TOKEN), \
            start_gateway(split_poll_s=0.1, max_wait_ms=1.0) as running:
        yield running


def observable(gw) -> dict[str, object]:
    """What an admin call could change: the split (here and in the registry), what is loaded, the audit log."""
    from registry.traffic import get_split

    store = gw.state.registry.store
    return {"split": gw.state.live.split.model_dump(), "stored": get_split(store, MODEL).model_dump(),
            "loaded": sorted(gw.state.live.live()), "audit": len(store.audit_events())}


def call(gw, method: str, path: str, body: dict | None, authorization: str | None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return httpx.request(method, gw.url + path, json=body, headers=headers, timeout=30)


@pytest.mark.parametrize("auth", list(BAD_AUTH), ids=list(BAD_AUTH))
@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS, ids=[f"{m} {p}" for m, p, _ in ADMIN_CALLS])
def test_admin_refuses_a_missing_or_wrong_token_and_changes_nothing(gateway, method, path, body, auth):
    before = observable(gateway)
    response = call(gateway, method, path, body, BAD_AUTH[auth])
    assert response.status_code in (401, 403), response.text
    assert response.json()["error"]["code"] == "unauthorized"
    assert observable(gateway) == before


def test_without_a_configured_token_the_admin_api_is_closed(gateway):
    before = observable(gateway)
    gateway.state.admin_token = None
    try:
        for method, path, body in ADMIN_CALLS:
            for authorization in (f"Bearer {ADMIN_TOKEN}", "Bearer", "Bearer None"):
                assert call(gateway, method, path, body, authorization).status_code == 401
    finally:
        gateway.state.admin_token = ADMIN_TOKEN
    assert observable(gateway) == before


def test_the_right_token_does_change_the_split(gateway):
    """The control: the same call with the token works, so the refusals above are the token's doing."""
    before = observable(gateway)
    changed = call(gateway, "PUT", "/admin/split", {"challenger": 2, "challenger_percent": 50, "reason": "ok"},
                   f"Bearer {ADMIN_TOKEN}")
    assert changed.status_code == 200, changed.text
    after = observable(gateway)
    assert after["split"]["challenger"] == 2 and after["audit"] > before["audit"]
    restored = call(gateway, "PUT", "/admin/split", {"reason": "back"}, f"bearer {ADMIN_TOKEN}")  # scheme: any case
    assert restored.status_code == 200 and restored.json()["challenger"] is None


def test_the_api_refuses_requests_without_a_key(gateway):
    body = {"model": MODEL, "prompt": "where is my card"}
    for authorization in (None, f"Bearer {GUESS}", f"Bearer {ADMIN_TOKEN}"):
        assert call(gateway, "POST", "/v1/completions", body, authorization).status_code == 401
    assert call(gateway, "POST", "/v1/completions", body, f"Bearer {API_KEY}").status_code == 200


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_secrets_never_reach_logs_artifacts_the_prediction_log_or_the_audit(gateway, tiny_registry, caplog, capfd):
    from datetime import UTC, datetime

    from registry.service import open_registry
    from tests.reliability.helpers import register_base_version

    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    key = f"Bearer {API_KEY}"
    for prompt in ("where is my card", "my top up failed", "exchange rate?"):
        answer = call(gateway, "POST", "/v1/completions", {"model": MODEL, "prompt": prompt, "user": "u1"}, key)
        assert answer.status_code == 200
        seen += [answer.text, json.dumps(dict(answer.headers))]
        feedback = call(gateway, "POST", "/v1/feedback",
                        {"request_id": answer.headers["x-request-id"], "outcome": "success"}, key)
        seen.append(feedback.text)
    chat = call(gateway, "POST", "/v1/chat/completions",
                {"model": MODEL, "messages": [{"role": "user", "content": "card lost"}], "stream": True}, key)
    seen.append(chat.text)
    for authorization in BAD_AUTH.values():
        seen.append(call(gateway, "GET", "/admin/split", None, authorization).text)
        seen.append(call(gateway, "POST", "/v1/completions", {"model": MODEL, "prompt": "hi"}, authorization).text)
    admin = f"Bearer {ADMIN_TOKEN}"
    seen.append(call(gateway, "PUT", "/admin/split", {"shadow": 2, "reason": "shadow"}, admin).text)
    seen.append(call(gateway, "POST", "/v1/completions", {"model": MODEL, "prompt": "card lost"}, key).text)
    seen.append(call(gateway, "PUT", "/admin/split", {"reason": "no shadow"}, admin).text)
    seen.append(call(gateway, "GET", "/admin/aggregates", None, admin).text)
    seen.append(httpx.get(gateway.url + "/metrics").text)
    with open_registry() as reg:  # a registry operation with HF_TOKEN set, as a retrain's registration runs
        lineage = reg.get(f"{MODEL}:v1").lineage
        number = register_base_version(reg, MODEL, lineage.model_copy(update={"parent": f"{MODEL}:v1"}), "secret test")
        reg.store.move_alias(MODEL, "challenger", number, actor="test", reason="secret test")
        reg.store.move_alias(MODEL, "challenger", None, actor="test", reason="secret test done")
    gateway.state.writer.flush(timeout=10)

    state = gateway.state
    logged = state.predictions.window(MODEL, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC),
                                      limit=None)
    assert len(logged) >= 4  # the answers above were logged: the search below looks at real rows
    places = {
        "log records": caplog.text,
        "process output": "".join(capfd.readouterr()),
        "responses": "\n".join(seen),
        "prediction log": json.dumps([p.model_dump(mode="json") for p in logged]),
        "audit events": json.dumps([e.model_dump(mode="json") for e in state.registry.store.audit_events()]),
    }
    places.update({f"file {name}": data.decode("latin-1") for name, data in files_under(tiny_registry).items()})
    assert any(name.startswith("file artifacts/models/") for name in places)
    leaks = [f"{what} in {where}" for where, text in places.items() for what, secret in SECRETS.items()
             if secret in text]
    assert not leaks, leaks
