"""A shadow copy goes to the shadow version of the split that routed the request, logged with that split's
revision, even when the gateway has adopted another split while the served answer was being generated (the copy
starts after it): a rollout's stage then counts the pair under one revision, never a served row without its copy
in one stage and a copy without its request in the next."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

from lifecycle.routing import TrafficSplit, assignment
from serving.state import GatewayState


def test_the_copy_follows_the_split_that_routed_the_request_not_the_one_live_when_it_starts():
    logged: list[tuple[str, object]] = []

    async def generate(copy, prompt, request_id):
        return f"answer of v{copy.version}"

    def log_answer(request_id, copy, user_hash, prompt, arrived, result):
        logged.append((request_id, copy, result))

    # By the time the copy starts, the gateway serves a split without a shadow (the rollout moved on).
    live = SimpleNamespace(split=TrafficSplit(model="m", champion=1, challenger=2, challenger_percent=5, revision=8))
    gateway = SimpleNamespace(generate=generate, log_answer=log_answer, live=live, _shadow_tasks=set(),
                              config=SimpleNamespace(shadow_max_in_flight=32))
    routed = assignment(1, "champion", split_revision=7, shadow=2)
    not_mirrored = assignment(1, "champion", split_revision=8, shadow=None)

    async def run() -> None:
        arrived = datetime.now(UTC)
        GatewayState.shadow(gateway, "req-1", routed, "u", "p", arrived)
        GatewayState.shadow(gateway, "req-2", not_mirrored, "u", "p", arrived)
        while gateway._shadow_tasks:
            await asyncio.sleep(0)

    asyncio.run(run())
    assert [(rid, copy.version, copy.role, copy.split_revision, answer) for rid, copy, answer in logged] == [
        ("req-1", 2, "shadow", 7, "answer of v2")]


def test_copies_over_the_cap_are_shed_counted_and_said_so_until_one_finishes():
    """At ``shadow_max_in_flight`` copies generating, the next request gets none: ``shadow`` says it was shed (the
    gateway marks the served row) and ``slm_shadow_shed`` counts it; once a copy finishes, copies go out again."""
    from serving.metrics import GatewayMetrics

    release = asyncio.Event()
    logged: list[str] = []

    async def generate(copy, prompt, request_id):
        await release.wait()  # a slow shadow: every copy still generating
        return "answer"

    gateway = SimpleNamespace(generate=generate, log_answer=lambda rid, *rest: logged.append(rid), _shadow_tasks=set(),
                              config=SimpleNamespace(shadow_max_in_flight=2), metrics=GatewayMetrics(), model="m")
    routed = assignment(1, "champion", split_revision=7, shadow=2)

    async def run() -> list[bool]:
        arrived = datetime.now(UTC)
        shed = [GatewayState.shadow(gateway, f"req-{k}", routed, "u", "p", arrived) for k in range(5)]
        release.set()
        while gateway._shadow_tasks:
            await asyncio.sleep(0)
        shed.append(GatewayState.shadow(gateway, "req-after", routed, "u", "p", arrived))
        while gateway._shadow_tasks:
            await asyncio.sleep(0)
        return shed

    assert asyncio.run(run()) == [False, False, True, True, True, False]
    assert sorted(logged) == ["req-0", "req-1", "req-after"]  # a shed request's copy never ran
    assert gateway.metrics.shadow_shed.labels("m", "v2")._value.get() == 3
