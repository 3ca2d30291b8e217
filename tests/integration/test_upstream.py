"""The upstream backend against a real OpenAI-compatible server: a second gateway on loopback."""

from __future__ import annotations

import httpx
import openai
import pytest

from serving.resilience import BackendError
from serving.server import free_port
from serving.upstream import UpstreamConfig

pytestmark = pytest.mark.slow


def test_a_gateway_serves_through_an_upstream_gateway(gateway, launch_gateway):
    upstream = UpstreamConfig(base_url=f"{gateway.url}/v1", render_prompt=False, timeout_s=10)
    with launch_gateway(upstream=upstream, split_poll_s=0.1) as front:
        api = openai.OpenAI(base_url=f"{front.url}/v1", api_key="-", max_retries=0)
        direct = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="-", max_retries=0)
        for prompt in ("I lost my card", "my top up failed", "what is the exchange rate"):
            via_front = api.completions.create(model="intent-router", prompt=prompt)
            straight = direct.completions.create(model="intent-router:v1", prompt=prompt)
            assert via_front.model == "intent-router:v1"
            assert via_front.choices[0].text == straight.choices[0].text
        assert front.state.live.live() == {1: "intent-router:v1"}


def test_an_unreachable_upstream_fails_fast_and_opens_the_circuit(tiny_registry, launch_gateway):
    dead = UpstreamConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=1)
    with pytest.raises(BackendError, match="unreachable"):  # it cannot even check the champion is served
        launch_gateway(upstream=dead)


def test_upstream_failures_become_502_then_503(gateway, launch_gateway):
    upstream = UpstreamConfig(base_url=f"{gateway.url}/v1", render_prompt=False, timeout_s=5)
    with launch_gateway(upstream=upstream, breaker_failures=2, breaker_reset_s=60) as front:
        backend = front.state.live.backend
        backend._http.base_url = f"http://127.0.0.1:{free_port()}/v1"  # the upstream goes away
        body = {"model": "intent-router", "prompt": "hi"}
        answers = [httpx.post(f"{front.url}/v1/completions", json=body) for _ in range(4)]
        assert [a.status_code for a in answers] == [502, 502, 503, 503]
        # Each failure was logged under the id the client gets; an open circuit says when to come back.
        assert all(a.headers["x-request-id"].startswith("cmpl-") for a in answers)
        assert "retry-after" not in answers[0].headers and 55 <= int(answers[2].headers["retry-after"]) <= 60
        retried = openai.OpenAI(base_url=f"{front.url}/v1", api_key="-", max_retries=0)
        with pytest.raises(openai.APIStatusError) as failed:
            retried.completions.create(model="intent-router", prompt="hi")
        assert failed.value.status_code == 503 and failed.value.request_id.startswith("cmpl-")
        metrics = httpx.get(f"{front.url}/metrics").text
        assert 'category="infra"' in metrics
        assert 'slm_backend_circuit_open{model="intent-router",version="v1"} 1.0' in metrics
        ready = httpx.get(f"{front.url}/readyz")
        assert ready.status_code == 503


def test_a_clients_max_tokens_cuts_what_it_is_sent_not_what_is_judged(gateway, launch_gateway):
    """Behind an upstream as in process: the client gets the first max_tokens tokens, the log keeps the whole
    answer as it is judged (asked for one token only, the upstream's cut answer was logged as a model error)."""
    from datetime import UTC, datetime

    upstream = UpstreamConfig(base_url=f"{gateway.url}/v1", render_prompt=False, timeout_s=10)
    with launch_gateway(upstream=upstream, split_poll_s=0.1) as front:
        api = openai.OpenAI(base_url=f"{front.url}/v1", api_key="-", max_retries=0)
        whole = api.completions.create(model="intent-router", prompt="I lost my card").choices[0].text
        raw = api.completions.with_raw_response.create(model="intent-router", prompt="I lost my card", max_tokens=1)
        cut = raw.parse()
        assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 1
        assert whole.startswith(cut.choices[0].text) and cut.choices[0].text != whole
        front.state.writer.flush(timeout=30)
        [row] = [p for p in front.state.predictions.window("intent-router", datetime(2000, 1, 1, tzinfo=UTC),
                                                            datetime(2100, 1, 1, tzinfo=UTC), limit=None)
                 if p.request_id == raw.headers["x-request-id"]]
        assert row.completion == whole and row.outcome == "ok"
