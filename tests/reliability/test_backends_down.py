"""Backends down: an upstream that is unreachable, failing or too slow, and a rollout whose challenger is down.

The gateway serves through its upstream backend (``upstream:`` in configs/serve.yaml) pointed at a real
OpenAI-compatible server on loopback (:class:`FakeUpstream`: a closed port, 500s, or answers that come after
every timeout). Whatever the failure, each request gets the category it deserves in the OpenAI error format
— 502 for a broken backend, 504 for a slow one, whichever of the two timeouts (the upstream client's, the
gateway's request timeout) fires first — is logged once as an ``infra_error`` and counted under
``category="infra"``; never a 500. After ``breaker_failures`` of them the circuit opens and the rest get 503
without reaching the backend (no retry storm: the upstream saw exactly ``breaker_failures`` requests); once
the backend is back, the breaker's probe closes it.

A rollout whose challenger answers nothing — its backend down, every one of its rows an ``infra_error`` —
is never advanced: the stage decision, fed by the prediction log this gateway wrote, holds when the plan
does not guard infra errors, and rolls back when it does.

The registry's champion has no weights: nothing in this module generates in-process.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from lifecycle.predictions import Prediction
from lifecycle.rollout_plan import RolloutPlan
from lifecycle.status import Alias, VersionStatus
from lifecycle.verdict import Verdict
from serving.upstream import UpstreamConfig
from tests.reliability.helpers import MODEL, FakeUpstream, start_gateway

V1, V2 = f"{MODEL}:v1", f"{MODEL}:v2"
THRESHOLD = 3  # breaker_failures: small, so the test reaches the open circuit quickly
AFTER_OPEN = 2  # requests sent once the circuit is open


def gateway(upstream: FakeUpstream, *, upstream_timeout_s: float = 10.0, request_timeout_s: float = 10.0):
    config = UpstreamConfig(base_url=upstream.url, render_prompt=False, timeout_s=upstream_timeout_s)
    return start_gateway(upstream=config, breaker_failures=THRESHOLD, breaker_reset_s=60,
                         request_timeout_s=request_timeout_s, split_poll_s=0.1)


def complete(gw, user: str, model: str = MODEL) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/completions", json={"model": model, "prompt": "where is my card", "user": user},
                      timeout=60)


def logged_since(gw, since: datetime) -> list[Prediction]:
    gw.state.writer.flush(timeout=10)
    return gw.state.predictions.window(MODEL, since, datetime.now(UTC) + timedelta(seconds=1), limit=None)


def infra_errors_counted(gw) -> float:
    text = httpx.get(f"{gw.url}/metrics").text
    return sum(float(v) for v in re.findall(r'^slm_errors_total\{[^}]*category="infra"[^}]*\} (\S+)$', text, re.M))


# (upstream behaviour for v1, upstream client timeout, gateway request timeout, status, message)
FAILURES = {
    "closed-port": ("closed", 10.0, 10.0, 502, "unreachable"),
    "upstream-500": ("error", 10.0, 10.0, 502, "upstream answered 500"),
    "slow-upstream-timeout-first": ("slow", 0.5, 10.0, 504, "timed out|did not answer"),
    "slow-gateway-timeout-first": ("slow", 10.0, 0.5, 504, "did not answer"),
}


@pytest.mark.parametrize("kind", list(FAILURES))
def test_a_down_backend_gets_its_category_then_fast_503s_and_comes_back(weightless_candidate, kind):
    mode, upstream_timeout, request_timeout, status, message = FAILURES[kind]
    with FakeUpstream({V1: "ok", V2: "ok"}, slow_s=5.0) as upstream, \
            gateway(upstream, upstream_timeout_s=upstream_timeout, request_timeout_s=request_timeout) as gw:
        assert complete(gw, "warm-up").status_code == 200  # the control: served while the backend is up
        since, served_before = datetime.now(UTC), upstream.received[V1]
        if mode == "closed":
            upstream.stop()
        else:
            upstream.modes[V1] = mode
        answers = [complete(gw, f"user-{k}") for k in range(THRESHOLD + AFTER_OPEN)]

        assert [a.status_code for a in answers] == [status] * THRESHOLD + [503] * AFTER_OPEN, \
            [(a.status_code, a.text) for a in answers]
        for answer in answers:
            error = answer.json()["error"]
            assert (error["type"], error["code"]) == ("server_error", "infra_error"), error
        assert all(re.search(message, a.json()["error"]["message"]) for a in answers[:THRESHOLD]), answers[0].text
        assert all("circuit open" in a.json()["error"]["message"] for a in answers[THRESHOLD:])
        # No retry storm: each failing request reached the backend once; the open circuit sent it nothing.
        assert upstream.received[V1] - served_before == (0 if mode == "closed" else THRESHOLD)
        breaker = gw.state.breakers[1].snapshot()
        assert (breaker.state, breaker.failures, breaker.rejected) == ("open", THRESHOLD, AFTER_OPEN)
        rows = logged_since(gw, since)
        assert [(r.version, r.role, r.outcome) for r in rows] == [(1, "champion", "infra_error")] * len(answers)
        assert infra_errors_counted(gw) == len(answers)
        assert httpx.get(f"{gw.url}/readyz").status_code == 503

        # The backend comes back; once the breaker's wait is over (its clock moved past breaker_reset_s rather
        # than a minute slept), one probe goes through, succeeds, and closes the circuit.
        if mode == "closed":
            upstream.start()
        upstream.modes[V1] = "ok"
        gw.state.breakers.clock = lambda: time.monotonic() + 61
        assert complete(gw, "after").status_code == 200
        assert gw.state.breakers[1].snapshot().state == "closed"
        assert httpx.get(f"{gw.url}/readyz").status_code == 200


def plan(*, guard_infra: bool) -> RolloutPlan:
    guardrails = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.3}]
    if guard_infra:
        guardrails.append({"metric": "infra_error_rate", "direction": "lower_is_better", "regression": 0.1})
    return RolloutPlan.model_validate({
        "name": "infra-guarded" if guard_infra else "model-errors-only", "version": 1,
        "approval_before_last_stage": False, "look_interval_s": 1, "settle_s": 0,
        "stage_defaults": {"min_requests_per_arm": 20, "max_duration_s": 3600, "guardrails": guardrails},
        "stages": [{"name": "shadow", "share": 0}, {"name": "full", "share": 100}]})


def shadow_traffic(gw, requests: int) -> list[Prediction]:
    """Send ``requests`` from distinct users once the gateway serves the rollout's split; wait for every shadow
    copy to be logged (they are answered after the response) and return the rows of this traffic."""
    deadline = time.monotonic() + 30
    while gw.state.live.split.shadow != 2:
        assert time.monotonic() < deadline, "the gateway never adopted the rollout's split"
        time.sleep(0.05)
    since = datetime.now(UTC)
    assert all(complete(gw, f"rollout-user-{since.timestamp()}-{k}").status_code == 200 for k in range(requests))
    while len(rows := logged_since(gw, since)) < 2 * requests:
        assert time.monotonic() < deadline, f"{len(rows)} of {2 * requests} rows logged"
        time.sleep(0.05)
    return rows


def test_a_rollout_whose_challenger_is_down_never_advances(weightless_candidate):
    """The challenger's upstream model fails (500) while the champion's answers: in shadow every copy to v2
    is an infra error. The shadow stays outside the breaker, so users never notice — only the rollout can."""
    from registry import rollout_exec
    from registry.predictions import PredictionStore
    from registry.traffic import get_split

    def look(store, state, rollout_plan):
        return rollout_exec.step(store, PredictionStore(store.engine), state, rollout_plan, actor="test",
                                 emit=lambda *a: None, settle_s=0)

    with FakeUpstream({V1: "ok", V2: "error"}) as upstream, gateway(upstream) as gw:
        store = gw.state.registry.store
        unguarded = plan(guard_infra=False)
        state = rollout_exec.begin(store, MODEL, 2, unguarded, actor="test", emit=lambda *a: None)
        rows = shadow_traffic(gw, 40)
        assert {(r.role, r.outcome) for r in rows} == {("champion", "ok"), ("shadow", "infra_error")}
        assert upstream.received[V2] == 40  # every copy reached the challenger's backend, and failed

        held, verdict = look(store, state, unguarded)
        assert verdict.action == "hold", verdict.reasons()  # 40 model-error-free rows of v2 are no pass
        assert any(f.check == "challenger: traffic" and "answered none" in f.reason for f in verdict.findings)
        assert (held.phase, held.stage_index) == ("running", 0)
        assert get_split(store, MODEL).shadow == 2 and store.get_alias(MODEL, Alias.CHALLENGER) == 2

        # The same traffic under a plan that guards infra errors rolls the candidate back.
        rollout_exec.stop(store, held, unguarded, reason="switch plans", actor="test", emit=lambda *a: None)
        guarded = plan(guard_infra=True)
        state = rollout_exec.begin(store, MODEL, 2, guarded, actor="test", emit=lambda *a: None)
        shadow_traffic(gw, 40)
        done, verdict = look(store, state, guarded)
        assert verdict.action == "rollback", verdict.reasons()
        assert any(f.check == "infra_error_rate" and f.verdict is Verdict.FAIL for f in verdict.findings)
        assert done.phase == "rolled_back"
        split = get_split(store, MODEL)
        assert (split.champion, split.challenger, split.shadow) == (1, None, None)
        assert store.get_version(MODEL, 2).status is VersionStatus.ROLLED_BACK
        assert store.get_alias(MODEL, Alias.CHALLENGER) is None
        assert store.verify_audit().ok


def test_a_failing_challenger_does_not_open_the_circuit_for_the_champion(tiny_home_with_split):
    gw = tiny_home_with_split
    assert [complete(gw, f"c-{k}", model=V2).status_code for k in range(THRESHOLD)] == [502] * THRESHOLD
    assert complete(gw, "challenger-after", model=V2).status_code == 503  # v2's own circuit is open: fail fast
    assert complete(gw, "champion-user", model=V1).status_code == 200
    assert (gw.state.breakers[1].state, gw.state.breakers[2].state) == ("closed", "open")
    ready = httpx.get(f"{gw.url}/readyz")  # the champion still serves: the gateway stays in the load balancer
    assert ready.status_code == 200 and ready.json()["circuits"] == {"v1": "closed", "v2": "open"}, ready.text
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'slm_backend_circuit_open{model="intent-router",version="v2"} 1.0' in metrics
    assert 'slm_backend_circuit_open{model="intent-router",version="v1"} 0.0' in metrics


@pytest.fixture
def tiny_home_with_split(weightless_candidate):
    """A gateway whose split names v2 as a 10 % challenger, v2's upstream model failing; the split is put
    back to the champion alone afterwards."""
    from lifecycle.routing import TrafficSplit
    from registry.service import open_registry
    from registry.traffic import set_split

    with open_registry() as reg:
        set_split(reg.store, TrafficSplit(model=MODEL, champion=1, challenger=2, challenger_percent=10),
                  actor="test", reason="challenger failing")
    try:
        with FakeUpstream({V1: "ok", V2: "error"}) as upstream, gateway(upstream) as gw:
            yield gw
    finally:
        with open_registry() as reg:
            set_split(reg.store, TrafficSplit(model=MODEL, champion=1), actor="test", reason="back")


def test_a_slow_shadow_sheds_its_copies_and_never_slows_the_champion(weightless_candidate):
    """The split mirrors every request to v2, whose upstream model answers after every timeout. Its copies run on
    their own threads and connections, at most ``shadow_max_in_flight`` at once: the 36 requests of 12 callers are
    all answered by the champion, whose circuit stays closed (before, the copies took the upstream's 4 threads; the
    champion's requests queued behind them into 504s, its circuit opened and the gateway went unready). Each
    request either got a copy (sent, then logged as a timeout: the shadow's own fault) or was shed, marked and
    counted."""
    from concurrent.futures import ThreadPoolExecutor

    from lifecycle.routing import TrafficSplit
    from registry.service import open_registry
    from registry.traffic import set_split

    def split(shadow: int | None) -> None:
        with open_registry() as reg:
            set_split(reg.store, TrafficSplit(model=MODEL, champion=1, shadow=shadow), actor="test", reason="shadow")

    split(2)
    try:
        with FakeUpstream({V1: "ok", V2: "slow"}, slow_s=60) as upstream:
            config = UpstreamConfig(base_url=upstream.url, render_prompt=False, timeout_s=5, max_concurrency=4)
            with start_gateway(upstream=config, breaker_failures=THRESHOLD, breaker_reset_s=60, request_timeout_s=2,
                               split_poll_s=0.1, shadow_max_in_flight=2) as gw:
                since = datetime.now(UTC)
                answers = []
                for _wave in range(2):  # the second once the first wave's copies are no longer in flight
                    with ThreadPoolExecutor(12) as callers:
                        answers += callers.map(lambda k: complete(gw, f"caller-{k % 12}"), range(18))
                    deadline = time.monotonic() + 30
                    while gw.state._shadow_tasks:  # a copy sent holds its place until the upstream's 5 s timeout
                        assert time.monotonic() < deadline, "shadow copies still in flight"
                        time.sleep(0.1)
                assert [a.status_code for a in answers] == [200] * 36, [(a.status_code, a.text) for a in answers]
                assert gw.state.breakers[1].state == "closed"
                assert httpx.get(f"{gw.url}/readyz").status_code == 200
                rows = logged_since(gw, since)
                metrics = httpx.get(f"{gw.url}/metrics").text
    finally:
        split(None)
    served = [r for r in rows if r.role == "champion"]
    copies = [r for r in rows if r.role == "shadow"]
    shed = [r.request_id for r in served if r.shadow_shed]
    assert len(served) == 36 and all(r.outcome == "ok" for r in served)
    assert len(copies) >= 2 and all(r.outcome == "infra_error" for r in copies)
    # Every copy logged was sent: none queued behind an abandoned one (its thread held past the gateway's 2 s by the
    # upstream client's 5 s) to time out unsent, which would have blamed the shadow for the gateway's own queue.
    assert upstream.received[V2] == len(copies)
    assert sorted(shed) == sorted({r.request_id for r in served} - {r.request_id for r in copies})
    assert f'slm_shadow_shed_total{{model="{MODEL}",version="v2"}} {float(len(shed))}' in metrics
