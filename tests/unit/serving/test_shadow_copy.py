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
    gateway = SimpleNamespace(generate=generate, log_answer=log_answer, live=live, _shadow_tasks=set())
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
