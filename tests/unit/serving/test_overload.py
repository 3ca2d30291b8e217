"""A burst beyond the gateway's capacity: requests that time out still queued are 503 'overloaded' with Retry-After,
never counted against the version's circuit breaker (a burst of load had opened the champion's circuit, so every
request failed fast and the replica went unready), and their rows are never generated for nobody."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import SimpleNamespace

from lifecycle.routing import assignment
from serving.backend import Generation
from serving.batcher import MicroBatcher
from serving.config import ServeConfig
from serving.guardrails import GuardrailPolicy, Guardrails
from serving.resilience import CircuitBreakers, CircuitState
from serving.state import GatewayState


def test_requests_timing_out_in_the_queue_are_overloaded_not_backend_failures():
    release, generated = threading.Event(), []

    def slow(prompts, adapters):  # one row at a time, each held until the test lets go
        release.wait(10)
        generated.extend(prompts)
        return [Generation(text="a\n", completion="a", prompt_tokens=1, completion_tokens=1, latency_ms=1,
                           adapter=None) for _ in prompts]

    batcher = MicroBatcher(slow, max_batch=1, max_wait_s=0.0)
    live = SimpleNamespace(adapter=lambda version: None, in_flight=lambda version: contextlib.nullcontext(),
                           backend=SimpleNamespace())
    config = ServeConfig(request_timeout_s=0.3, breaker_failures=2)
    breakers = CircuitBreakers("test", failure_threshold=2)
    state = GatewayState(config=config, registry=None, live=live, batcher=batcher, writer=None, predictions=None,
                         guardrails=Guardrails(GuardrailPolicy()), breakers=breakers, allowed=frozenset({"a"}))

    async def burst():
        return await asyncio.gather(*(state.generate(assignment(1, "champion", 1, None), f"p{k}", f"r{k}")
                                      for k in range(6)))

    try:
        answers = asyncio.run(burst())
    finally:
        release.set()
        batcher.close()
    statuses = sorted(a.status for a in answers)
    assert statuses == [503] * 5 + [504]  # one row reached the backend (too slow: 504), five never left the queue
    for answer in answers:
        if answer.status == 503:
            assert "overloaded" in answer.error and answer.retry_after_s >= 1
    assert breakers[1].snapshot().state is CircuitState.CLOSED  # one backend timeout, under the threshold of 2
    assert generated == ["p0"]  # the five cancelled in the queue were never generated
