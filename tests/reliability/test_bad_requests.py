"""Bad requests: over a thousand generated from the gateway's own OpenAPI schema, none answered with a 5xx.

Schemathesis reads ``/openapi.json`` of the real app (tiny champion, admin token set) and generates, for
every operation, requests that fit the schema (positive) and requests that break it (negative: wrong types,
missing fields, out-of-range numbers). They pass the same middleware as any client's (body limit, API keys).
Every answer must be below 500 and, when it is an error, in the OpenAI error format. Hypothesis runs
derandomized, so CI sees the same cases on every run. The requests go to a real loopback server: Starlette's
in-process client runs the app's lifespan around each call, and its shutdown closes the gateway.

Oversized bodies and prompts are checked separately: 413 (or 400 for a prompt just over the limit), never a
5xx, and nothing logged.
"""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from tests.env import environment
from tests.reliability.helpers import MODEL, start_gateway

TOKEN = "bad-requests-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = {"positive": 75, "negative": 75}  # per operation and mode: ~1,050 cases (inputless operations give 1)
MIN_CASES = 1000


@pytest.fixture(scope="module")
def gateway(tiny_registry):
    with environment(SLM_ADMIN_TOKEN=TOKEN, SLM_API_KEYS=None), start_gateway(split_poll_s=0.1) as running:
        yield running


def fuzz(base_url: str, operation, mode: str, examples: int, statuses: Counter[int], failures: list[str]) -> None:
    """Send ``examples`` generated requests of one operation and mode; note each status and each failure.
    An operation without inputs has no negative cases: Hypothesis says so (Unsatisfiable), and that is fine."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
    def run(case):
        response = case.call(base_url=base_url, headers=ADMIN, timeout=30)
        statuses[response.status_code] += 1
        where = f"{operation.label} [{mode}] -> {response.status_code}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.text[:200]} for {case.as_curl_command()}")
        elif response.status_code >= 400:
            error = response.json().get("error") if response.text.startswith("{") else None
            if not isinstance(error, dict) or "message" not in error:
                failures.append(f"{where} not in the OpenAI error format: {response.text[:200]}")

    try:
        run()
    except Unsatisfiable:
        if mode == "positive":
            raise


def test_generated_requests_never_get_a_server_error(gateway):
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    started = time.perf_counter()
    for operation in operations:
        for mode, examples in EXAMPLES.items():
            fuzz(gateway.url, operation, mode, examples, statuses, failures)
    elapsed = time.perf_counter() - started
    total = sum(statuses.values())
    print(f"schemathesis: {total} cases on {len(operations)} operations in {elapsed:.1f} s; statuses {dict(statuses)}")
    assert not failures, failures[:5]
    assert total >= MIN_CASES, statuses
    assert statuses[200] and sum(n for s, n in statuses.items() if 400 <= s < 500)  # both paths were exercised


def post(gw, path: str, **kwargs) -> httpx.Response:
    method = "PUT" if path == "/admin/split" else "POST"
    return httpx.request(method, gw.url + path, headers={"content-type": "application/json", **ADMIN}, timeout=30,
                         **kwargs)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/v1/feedback", "/admin/split"])
def test_oversized_bodies_are_413(gateway, path):
    limit = gateway.state.config.max_body_bytes
    declared = post(gateway, path, content=b"{" + b" " * limit + b"}")
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the bytes themselves are counted
        for _ in range(limit // 4096 + 2):
            yield b" " * 4096

    streamed = post(gateway, path, content=chunks())
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(("factor", "status"), [(1.01, 400), (5, 413)])
@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_long_prompts_are_refused(gateway, factor, status, chat):
    limit = gateway.state.config.max_prompt_chars
    prompt = "x" * int(limit * factor)
    body = ({"model": MODEL, "messages": [{"role": "user", "content": prompt}]} if chat
            else {"model": MODEL, "prompt": prompt})
    before = logged(gateway)
    response = post(gateway, "/v1/chat/completions" if chat else "/v1/completions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == "prompt_too_long"
    assert logged(gateway) == before  # refused before routing: nothing generated, nothing logged


def logged(gw) -> int:
    from datetime import UTC, datetime

    gw.state.writer.flush(timeout=10)
    since, until = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    return len(gw.state.predictions.window(MODEL, since, until, limit=None))


def test_a_prompt_at_the_limit_is_answered(gateway):
    """The control: exactly at the limit is served, so the refusals above are the length's doing."""
    limit = gateway.state.config.max_prompt_chars
    before = logged(gateway)
    response = post(gateway, "/v1/completions", json={"model": MODEL, "prompt": "card " * (limit // 5)})
    assert response.status_code == 200, response.text
    assert logged(gateway) == before + 1
