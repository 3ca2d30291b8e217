"""The gateway on loopback, driven by the real `openai` client and plain HTTP."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import httpx
import openai
import pytest

ADMIN = {"Authorization": "Bearer admin-secret-for-tests"}
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)
pytestmark = pytest.mark.slow


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)


def set_split(gw, **body):
    response = httpx.put(f"{gw.url}/admin/split", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def test_openai_client_completions_chat_and_streaming(gateway):
    api = client(gateway)
    done = api.completions.create(model="intent-router", prompt="I still have not received my new card")
    assert done.model == "intent-router:v1" and isinstance(done.choices[0].text, str)
    assert done.usage.completion_tokens > 0
    chat = api.chat.completions.create(model="intent-router",
                                       messages=[{"role": "user", "content": "my top up failed"}])
    assert chat.model.startswith("intent-router:v") and chat.choices[0].message.role == "assistant"
    chunks = list(api.completions.create(model="intent-router", prompt="card lost", stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    streamed = list(api.chat.completions.create(model="intent-router", stream=True,
                                                messages=[{"role": "user", "content": "exchange rate?"}]))
    assert "".join(c.choices[0].delta.content or "" for c in streamed)
    models = [m.id for m in api.models.list()]
    assert "intent-router" in models and "intent-router:v1" in models
    listed = {m.created for m in api.models.list()}
    time.sleep(1.1)  # "created" is when the gateway began serving them, not the time of the call
    assert listed == {api.models.retrieve("intent-router").created}


def test_what_openai_clients_ask_beyond_the_basics(gateway):
    api = client(gateway)
    asked = [{"role": "user", "content": "I lost my card"}]
    for create, kwargs in ((api.completions.create, {"prompt": "I lost my card"}),
                           (api.chat.completions.create, {"messages": asked})):
        chunks = list(create(model="intent-router", stream=True, stream_options={"include_usage": True}, **kwargs))
        assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > chunks[-1].usage.prompt_tokens > 0
        assert all(c.usage is None for c in chunks[:-1]) and chunks[-2].choices[0].finish_reason == "stop"
        assert all(c.usage is None for c in create(model="intent-router", stream=True, **kwargs))  # not asked
    chat = api.chat.completions.create(model="intent-router", messages=[
        {"role": "system", "content": [{"type": "text", "text": "You route banking questions."}]},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "nothing"},
        {"role": "user", "content": [{"type": "text", "text": "what is the "},
                                     {"type": "text", "text": "exchange rate"}]}])
    plain = api.chat.completions.create(model="intent-router",
                                        messages=[{"role": "user", "content": "what is the exchange rate"}])
    assert chat.choices[0].message.content == plain.choices[0].message.content  # the text parts, joined
    assert chat.id.startswith("chatcmpl-") and api.completions.create(model="intent-router", prompt="hi").id.startswith(
        "cmpl-")
    full = api.completions.create(model="intent-router", prompt="I lost my card").choices[0]
    assert "_" in full.text  # every label of the task has one
    cut = api.completions.create(model="intent-router", prompt="I lost my card", stop=["_", "zz"]).choices[0]
    assert cut.text == full.text.split("_")[0] and cut.finish_reason == "stop"
    assert api.models.retrieve("intent-router:v1").id == "intent-router:v1"
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("intent-router:v9")
    at_budget = api.chat.completions.create(model="intent-router", messages=[{"role": "user", "content": "hi"}],
                                            max_completion_tokens=16, max_tokens=8)  # the newer field wins
    assert at_budget.usage.completion_tokens <= 16
    # LangChain's OpenAI LLM sends max_tokens=256 by default: above the answer's budget, so it changes nothing.
    roomy = api.completions.create(model="intent-router", prompt="I lost my card", max_tokens=256).choices[0]
    assert roomy.text == api.completions.create(model="intent-router", prompt="I lost my card").choices[0].text
    full = api.completions.create(model="intent-router:v1", prompt="I lost my card")
    raw = api.completions.with_raw_response.create(model="intent-router:v1", prompt="I lost my card", max_tokens=1)
    clipped = raw.parse()
    assert clipped.choices[0].finish_reason == "length" and clipped.usage.completion_tokens == 1
    assert full.choices[0].text.startswith(clipped.choices[0].text) and clipped.choices[0].text != full.choices[0].text
    gateway.state.writer.flush(timeout=30)
    [row] = [p for p in gateway.state.predictions.window("intent-router", EPOCH, FAR, limit=None)
             if p.request_id == raw.headers["x-request-id"]]
    assert row.completion == full.choices[0].text  # the log keeps the whole answer: it is what is judged
    nulls = httpx.post(f"{gateway.url}/v1/completions", json={"model": "intent-router", "prompt": "hi", "stream": None,
                                                              "n": None, "stream_options": None, "logprobs": None})
    assert nulls.status_code == 200 and nulls.json()["object"] == "text_completion"


@pytest.mark.parametrize(("extra", "param", "code"), [
    ({"n": 2}, "n", "unsupported_parameter"),
    ({"logprobs": 2}, "logprobs", "unsupported_parameter"),
    ({"logprobs": 0}, "logprobs", "unsupported_parameter"),
    ({"echo": True}, "echo", "unsupported_parameter"),
    ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_parameter"),
    ({"tool_choice": "required"}, "tool_choice", "unsupported_parameter"),
    ({"function_call": {"name": "lookup"}}, "function_call", "unsupported_parameter"),
    ({"tool_choice": 5}, "tool_choice", "invalid_request"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "unsupported_parameter"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "unsupported_parameter"),
    ({"max_completion_tokens": 5000}, "max_completion_tokens", "max_tokens_too_large"),
    ({"top_p": 7}, "top_p", "invalid_request"),
])
def test_options_the_gateway_cannot_honour_are_refused_naming_them(gateway, extra, param, code):
    response = httpx.post(f"{gateway.url}/v1/completions", json={"model": "intent-router", "prompt": "hi", **extra})
    assert response.status_code == 400, response.text
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == (param, code)
    assert param in response.json()["error"]["message"] or code == "invalid_request"


def test_token_ids_and_non_text_parts_are_refused_saying_why(gateway):
    ids = httpx.post(f"{gateway.url}/v1/completions", json={"model": "intent-router", "prompt": [1, 2, 3]})
    assert ids.status_code == 400 and "token-id prompts" in ids.json()["error"]["message"]
    assert ids.json()["error"]["param"] == "prompt"  # the field, not pydantic's validator names
    image = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "intent-router", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]})
    assert image.status_code == 400 and "image_url" in image.json()["error"]["message"]
    bad = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "intent-router", "messages": [
        {"role": "user", "content": 5}]})
    assert bad.status_code == 400 and bad.json()["error"]["param"].startswith("messages.0.content")


def test_pinned_version_and_unknown_model(gateway):
    api = client(gateway)
    with pytest.raises(openai.NotFoundError) as err:
        api.completions.create(model="intent-router:v9", prompt="hello")
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        api.completions.create(model="gpt-4", prompt="hello")


@pytest.mark.parametrize(("payload", "status", "code"), [
    ("{not json", 400, "invalid_request"),
    ({"model": "intent-router", "prompt": 42}, 400, "invalid_request"),
    ({"model": "intent-router"}, 400, "invalid_request"),
    ({"model": "intent-router", "prompt": "x" * 2500}, 400, "prompt_too_long"),
    ({"model": "intent-router", "prompt": "x" * 9000}, 413, "prompt_too_long"),
    ({"model": "intent-router", "prompt": "hi", "max_tokens": 5000}, 400, "max_tokens_too_large"),
    ({"model": "intent-router", "prompt": ["a", "b"]}, 400, "invalid_request"),
])
def test_bad_input_gets_an_openai_error_never_a_500(gateway, payload, status, code):
    if isinstance(payload, str):
        response = httpx.post(f"{gateway.url}/v1/completions", content=payload,
                              headers={"content-type": "application/json"})
    else:
        response = httpx.post(f"{gateway.url}/v1/completions", json=payload)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    if payload == "{not json":
        assert response.json()["error"]["param"] is None  # not the character offset of the syntax error
    assert response.headers["x-request-id"].startswith("req-")  # a refusal has an id to report, as OpenAI's do


def test_request_ids_are_checked(gateway):
    response = httpx.post(f"{gateway.url}/v1/completions", json={"model": "intent-router", "prompt": "hi"},
                          headers={"x-request-id": "x" * 200})
    assert response.status_code == 400 and response.json()["error"]["param"] == "x-request-id"


def test_client_request_ids_are_echoed_but_never_the_log_key(gateway):
    body = {"model": "intent-router", "prompt": "where is my card"}
    first = httpx.post(f"{gateway.url}/v1/completions", json=body, headers={"x-request-id": "client-42"})
    again = httpx.post(f"{gateway.url}/v1/completions", json=body, headers={"x-request-id": "client-42"})
    assert first.headers["x-client-request-id"] == again.headers["x-client-request-id"] == "client-42"
    assert first.headers["x-request-id"] != again.headers["x-request-id"]  # two requests, two log rows
    gateway.state.writer.flush(timeout=10)
    logged = {p.request_id for p in gateway.state.predictions.window("intent-router", EPOCH, FAR, limit=None)}
    assert {first.headers["x-request-id"], again.headers["x-request-id"]} <= logged


def test_text_that_is_not_unicode_is_a_400_and_odd_auth_is_a_401(gateway):
    raw = '{"model": "intent-router", "prompt": "\\ud800 broken"}'
    response = httpx.post(f"{gateway.url}/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "Unicode" in response.json()["error"]["message"]
    odd = httpx.get(f"{gateway.url}/admin/split", headers={"Authorization": b"Bearer caf\xc3\xa9"})
    assert odd.status_code == 401


def test_only_the_champion_and_challenger_can_be_pinned(gateway):
    set_split(gateway, shadow=2)
    with pytest.raises(openai.NotFoundError) as err:
        client(gateway).completions.create(model="intent-router:v2", prompt="hello")
    assert "not routable" in err.value.body["message"]
    assert "intent-router:v2" not in [m.id for m in client(gateway).models.list()]
    set_split(gateway)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_oversized_body_is_413(gateway):
    errors = _Errors()  # the server's own error log: a refused body is not a server error
    logging.getLogger("uvicorn.error").addHandler(errors)
    try:
        _oversized_bodies_are_refused(gateway)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(errors)
    assert [r.getMessage() for r in errors.records] == []  # was "Exception in ASGI application" on the chunked one


def _oversized_bodies_are_refused(gateway):
    response = httpx.post(f"{gateway.url}/v1/completions", content=b"x" * 70_000,
                          headers={"content-type": "application/json"})
    assert response.status_code == 413

    def chunks():  # no Content-Length: the limit must count the bytes themselves
        for _ in range(20):
            yield b" " * 5_000

    chunked = httpx.post(f"{gateway.url}/v1/completions", content=chunks(),
                         headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"
    assert client(gateway).completions.create(model="intent-router", prompt="still serving").choices


def test_admin_needs_the_token_and_nothing_changes_without_it(gateway):
    before = httpx.get(f"{gateway.url}/admin/split", headers=ADMIN).json()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.put(f"{gateway.url}/admin/split", json={"challenger": 2, "challenger_percent": 50},
                             headers=headers)
        assert response.status_code == 401
    assert httpx.get(f"{gateway.url}/admin/split", headers=ADMIN).json() == before
    bad = httpx.put(f"{gateway.url}/admin/split", json={"challenger_percent": 50}, headers=ADMIN)
    assert bad.status_code == 400 and "no challenger" in bad.json()["error"]["message"]
    both = httpx.put(f"{gateway.url}/admin/split", json={"challenger": 2, "challenger_percent": 5, "shadow": 2},
                     headers=ADMIN)
    assert both.status_code == 400 and "v2 is the challenger" in both.json()["error"]["message"]
    missing = httpx.put(f"{gateway.url}/admin/split", json={"challenger": 99, "challenger_percent": 5}, headers=ADMIN)
    assert missing.status_code == 404


def test_split_is_weighted_sticky_and_every_request_is_logged(gateway):
    split = set_split(gateway, challenger=2, challenger_percent=10, reason="test canary")
    assert split["challenger"] == 2 and split["revision"] >= 2
    api = client(gateway)
    seen: dict[str, set] = {}
    counts = Counter()
    ids = []
    for i in range(1000):
        user = f"user-{i}"
        raw = api.completions.with_raw_response.create(model="intent-router", prompt=f"card {i % 7}",
                                                       extra_headers={"x-user-id": user})
        version = raw.headers["x-slm-version"]
        counts[version] += 1
        seen.setdefault(user, set()).add(version)
        ids.append(raw.headers["x-request-id"])
    for i in range(0, 1000, 50):  # again: the same users must land where they did
        user = f"user-{i}"
        raw = api.completions.with_raw_response.create(model="intent-router", prompt="again",
                                                       extra_headers={"x-user-id": user})
        seen[user].add(raw.headers["x-slm-version"])
    assert all(len(v) == 1 for v in seen.values())
    assert abs(counts["intent-router:v2"] - 100) < 4 * 9.5  # Binomial(1000, 0.1): sd 9.5
    gateway.state.writer.flush(timeout=30)
    logged = gateway.state.predictions.window("intent-router", EPOCH, FAR, limit=None)
    by_id = Counter(p.request_id for p in logged if p.served)
    assert all(by_id[i] == 1 for i in ids)


def test_aggregates_per_version(gateway):
    api = client(gateway)
    for i in range(5):
        api.completions.create(model="intent-router:v1", prompt=f"aggregate me {i}")
    rows = httpx.get(f"{gateway.url}/admin/aggregates", params={"minutes": 5}, headers=ADMIN).json()
    champion = next(r for r in rows if r["version"] == 1 and r["role"] == "champion")
    assert champion["requests"] >= 5 and champion["latency_p50_ms"] > 0
    usage = champion["usage_since_start"]
    assert usage["rows"] >= 5 and usage["compute_s"] > 0
    # 3.6 per hour = 0.001 per second: cost per 1k requests = compute seconds per request
    assert usage["cost_per_1k_requests"] == pytest.approx(usage["compute_s"] / usage["rows"])
    assert httpx.get(f"{gateway.url}/admin/aggregates", headers={}).status_code == 401
    assert httpx.get(f"{gateway.url}/admin/aggregates", params={"minutes": -1}, headers=ADMIN).status_code == 400


def test_feedback_joins_a_logged_request(gateway, monkeypatch):
    raw = client(gateway).completions.with_raw_response.create(model="intent-router", prompt="lost my card")
    request_id = raw.headers["x-request-id"]
    ok = httpx.post(f"{gateway.url}/v1/feedback", json={"request_id": request_id, "outcome": "success"})
    assert ok.status_code == 200
    # Feedback on a request already stored does not make the writer flush (which breaks up its batches under a
    # feedback-heavy load): only feedback the database does not know yet waits for the queued rows.
    flushes = []
    monkeypatch.setattr(gateway.state.writer, "flush", lambda timeout=None: flushes.append(timeout) or True)
    again = httpx.post(f"{gateway.url}/v1/feedback", json={"request_id": request_id, "outcome": "failure"})
    assert again.status_code == 200 and flushes == []
    unknown = httpx.post(f"{gateway.url}/v1/feedback", json={"request_id": "nope", "outcome": "failure"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_request"


def test_feedback_while_the_log_is_behind_or_down_is_a_503_to_retry_never_unknown(gateway, monkeypatch):
    """A request answered a moment ago whose row is still queued (the writer more than the wait behind, the
    database slow): "unknown request" would tell the client to give up on a real request."""
    from sqlalchemy.exc import OperationalError

    state = gateway.state
    monkeypatch.setattr(state.writer, "flush", lambda timeout=None: False)  # rows still queued after the wait
    behind = httpx.post(f"{gateway.url}/v1/feedback", json={"request_id": "queued-1", "outcome": "success"})
    assert behind.status_code == 503 and behind.json()["error"]["code"] == "log_behind"
    assert behind.headers["retry-after"] == "5"
    monkeypatch.setattr(state.writer, "flush", lambda timeout=None: True)

    def refuse(feedback):
        raise OperationalError("INSERT INTO feedback ...", {}, Exception("database is locked"))

    monkeypatch.setattr(state.predictions, "record_feedback", refuse)
    down = httpx.post(f"{gateway.url}/v1/feedback", json={"request_id": "any", "outcome": "success"})
    assert down.status_code == 503 and down.json()["error"]["code"] == "log_unavailable"
    assert "database is locked" not in down.text  # the database's words stay in the gateway's log


def test_guardrails_that_fail_give_a_logged_infra_error_not_a_bare_500(gateway, monkeypatch):
    def broken(text):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(gateway.state.guardrails, "check", broken)
    response = httpx.post(f"{gateway.url}/v1/completions", json={"model": "intent-router", "prompt": "lost card"})
    assert response.status_code == 502 and "guardrails could not check" in response.json()["error"]["message"]
    request_id = response.headers["x-request-id"]
    gateway.state.writer.flush(timeout=10)
    [row] = [p for p in gateway.state.predictions.window("intent-router", EPOCH, FAR, limit=None)
             if p.request_id == request_id]
    assert (row.outcome, row.served) == ("infra_error", True)


def test_an_unexpected_error_is_an_openai_shaped_500_with_no_traceback(gateway, monkeypatch):
    def broken(user, pinned):
        raise RuntimeError("split cache corrupted: secret detail")

    monkeypatch.setattr(gateway.state.live, "assign", broken)
    response = httpx.post(f"{gateway.url}/v1/completions", json={"model": "intent-router", "prompt": "lost card"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "internal_error") and "RuntimeError" in error["message"]
    assert "secret detail" not in response.text and "Traceback" not in response.text
    assert 'category="internal"' in httpx.get(f"{gateway.url}/metrics").text


def test_a_classifier_guardrail_runs_off_the_event_loop(gateway, monkeypatch):
    """A guardrail that runs a model (``Guardrails.blocking``) is checked on a worker thread: while one answer's
    check is running, the gateway still answers its health probe (inline, the probe waited for the check, and so
    did every other request)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from serving.guardrails import GuardrailResult

    started, release = threading.Event(), threading.Event()

    def classify(text: str) -> GuardrailResult:
        started.set()
        release.wait(timeout=20)  # held until the probe below got its answer
        return GuardrailResult(text=text)

    guardrails = gateway.state.guardrails
    monkeypatch.setattr(guardrails, "_executor", ThreadPoolExecutor(1))  # as a classifier_path gives it
    monkeypatch.setattr(type(guardrails), "blocking", property(lambda self: True))
    monkeypatch.setattr(guardrails, "check", classify)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(httpx.post, f"{gateway.url}/v1/completions", timeout=30,
                             json={"model": "intent-router", "prompt": "lost card"})
        assert started.wait(timeout=20)
        try:
            probe = httpx.get(f"{gateway.url}/healthz", timeout=10)
        finally:
            release.set()
        assert probe.status_code == 200
        assert answer.result().status_code == 200


def _sample(text: str, name: str) -> float:
    """A sample's value in Prometheus text (0 when the series has not appeared yet)."""
    return next((float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0)


def test_metrics_health_and_readiness(gateway):
    client(gateway).completions.create(model="intent-router", prompt="hello")
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'slm_requests_total{model="intent-router"' in text
    assert "slm_request_latency_seconds_bucket" in text
    assert 'slm_compute_seconds_total{model="intent-router",version="v1"}' in text
    assert 'slm_cost_per_1k_requests{model="intent-router",version="v1"}' in text
    assert "slm_process_peak_memory_mb" in text
    assert _sample(text, "slm_batch_rows_count") >= 1
    # The batcher's own counts become counters at each scrape (deltas: a count seen once is not added twice).
    before = _sample(text, 'slm_batch_rejoin_waits_total{outcome="fruitless"}')
    gateway.state.batcher.rejoin_counts["fruitless"] += 2  # as if two waits had brought nobody
    assert _sample(httpx.get(f"{gateway.url}/metrics").text,
                   'slm_batch_rejoin_waits_total{outcome="fruitless"}') == before + 2
    assert _sample(httpx.get(f"{gateway.url}/metrics").text,
                   'slm_batch_rejoin_waits_total{outcome="fruitless"}') == before + 2  # not added twice
    httpx.post(f"{gateway.url}/v1/completions", json={"model": "intent-router"})
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'category="input",model="intent-router"' in text and 'slm_rejected_requests_total{reason="invalid"}' in text
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_split_changes_and_unloads_under_load_fail_no_request(gateway):
    failures: list[str] = []
    sent: list[int] = []
    stop = threading.Event()

    def hammer(n: int) -> None:
        api = client(gateway)
        i = 0
        while not stop.is_set():
            try:
                api.completions.create(model="intent-router", prompt=f"where is my card {i}",
                                       extra_headers={"x-user-id": f"load-{n}-{i}"})
            except Exception as exc:  # any failure is the test's finding
                failures.append(f"{type(exc).__name__}: {exc}")
            i += 1
        sent.append(i)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    try:
        for percent in (5, 25, 50, 0):
            set_split(gateway, challenger=2, challenger_percent=percent)
        set_split(gateway)  # champion only
        assert httpx.post(f"{gateway.url}/admin/versions/2/unload", headers=ADMIN).status_code == 200
        assert httpx.post(f"{gateway.url}/admin/versions/2/load", headers=ADMIN).status_code == 200
        set_split(gateway, challenger=2, challenger_percent=50, shadow=None)
        busy = httpx.post(f"{gateway.url}/admin/versions/2/unload", headers=ADMIN)
        assert busy.status_code == 409
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert sum(sent) > 100  # the changes really happened under load


def test_shadow_answers_are_logged_never_returned(gateway):
    set_split(gateway, shadow=2, reason="shadow test")
    api = client(gateway)
    ids = []
    for i in range(20):
        # Every fifth caller names the champion: answered the same, logged as pinned (a rollout leaves it out).
        model = "intent-router:v1" if i % 5 == 0 else "intent-router"
        raw = api.completions.with_raw_response.create(model=model, prompt=f"lost card {i}")
        assert raw.headers["x-slm-version"] == "intent-router:v1"
        ids.append(raw.headers["x-request-id"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        gateway.state.writer.flush(timeout=10)
        rows = gateway.state.predictions.window("intent-router", EPOCH, FAR, limit=None)
        shadows = {p.request_id for p in rows if p.role == "shadow" and p.version == 2 and not p.served}
        if set(ids) <= shadows:
            break
        time.sleep(0.1)
    assert set(ids) <= shadows
    # Both answers of each request carry the revision of the split that routed it (a rollout counts by it).
    revision = gateway.state.live.split.revision
    assert {(p.role, p.split_revision) for p in rows if p.request_id in ids} == {("champion", revision),
                                                                                 ("shadow", revision)}
    pinned = {p.request_id for p in rows if p.request_id in ids and p.pinned}
    assert pinned == set(ids[::5]) and all(p.pinned == (p.request_id in pinned) for p in rows if p.request_id in ids)
    set_split(gateway)


def test_the_traffic_gauge_shows_the_split_as_it_is_not_every_share_ever_set(gateway):
    set_split(gateway, challenger=2, challenger_percent=25, reason="gauge test")
    httpx.get(f"{gateway.url}/metrics")
    set_split(gateway, reason="gauge test: back to the champion alone")
    shares = {line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in httpx.get(f"{gateway.url}/metrics").text.splitlines()
              if line.startswith("slm_traffic_percent{")}
    champion = gateway.state.live.split.champion
    assert shares == {f'model="intent-router",role="champion",version="v{champion}"': 100.0}


def test_a_replica_behind_the_stored_split_cannot_write_its_stale_champion_back(gateway, launch_gateway):
    """PUT /admin/split without a champion keeps "the current" one: this replica's view. A replica that has not
    polled the newest split yet (here: never) is refused with a 409 rather than write that view over it, and reads
    the stored split for the client's retry."""
    with launch_gateway(split_poll_s=3600) as stale:
        changed = set_split(gateway, shadow=2, reason="newer split, elsewhere")
        assert stale.state.live.split.revision < changed["revision"]
        refused = httpx.put(f"{stale.url}/admin/split", json={"challenger": 2, "challenger_percent": 5},
                            headers=ADMIN)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "conflict"
        assert httpx.get(f"{stale.url}/admin/split", headers=ADMIN).json()["revision"] == changed["revision"]
        stored = httpx.get(f"{gateway.url}/admin/split", headers=ADMIN).json()
        assert (stored["revision"], stored["shadow"]) == (changed["revision"], 2)
    set_split(gateway)


def test_a_split_change_on_one_replica_reaches_another(gateway, launch_gateway):
    """Two gateways on one registry store: a change through either admin API reaches the other."""
    with launch_gateway(split_poll_s=0.1) as replica:
        changed = set_split(gateway, challenger=2, challenger_percent=30, reason="replica test")
        # Generous: this asserts that the change arrives, not how fast (a loaded CI machine took over 1 s once).
        deadline = time.monotonic() + 30
        while replica.state.live.split.revision != changed["revision"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert replica.state.live.split.revision == changed["revision"]
        assert replica.state.live.split.challenger_percent == 30
    set_split(gateway)


def test_api_keys_and_a_restart_that_keeps_the_split(gateway, launch_gateway, monkeypatch):
    changed = set_split(gateway, challenger=2, challenger_percent=15, reason="persisted split")
    monkeypatch.setenv("SLM_API_KEYS", "key-one, key-two")
    with launch_gateway() as restarted:  # a fresh process would read the same registry row
        assert restarted.state.live.split == gateway.state.live.split
        assert restarted.state.live.split.revision == changed["revision"]
        body = {"model": "intent-router", "prompt": "card"}
        assert httpx.post(f"{restarted.url}/v1/completions", json=body).status_code == 401
        wrong = httpx.post(f"{restarted.url}/v1/completions", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        ok = openai.OpenAI(base_url=f"{restarted.url}/v1", api_key="key-two", max_retries=0)
        assert ok.completions.create(**body).model.startswith("intent-router:v")
        assert httpx.get(f"{restarted.url}/healthz").status_code == 200  # probes need no key
    set_split(gateway)
