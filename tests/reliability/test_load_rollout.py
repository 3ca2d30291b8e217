"""Load through a whole rollout: 16 concurrent callers send more than 20,000 requests through the gateway while a
rollout walks shadow → 25 % → 50 % → 100 % and promotes, and as many again while another candidate is rolled back.

The gateway is the real ``slm serve`` in its own process, generating through an upstream on loopback
(:class:`FakeUpstream`: every version answers at once, so the gateway, its router and its prediction log are what
is loaded, not a model). The callers are :class:`serving.loadgen.LoadGenerator` threads — the real ``openai``
client, sticky users, feedback on every answer. The rollout is the real rollout flow (``slm_cli.live.roll``, as
the demo runs it), deciding from the prediction log the gateway writes.

What must hold in both runs: no caller ever gets an error (none while the split moves, none at promotion or
rollback); every answered request is in the prediction log exactly once, served by the version the caller was
told (``x-slm-version``), with the feedback the caller sent; shadow copies are logged at most once each and only
for requests that were answered; the log dropped nothing. The plans are sized so that neither rollout can end
before 20,000 requests have been answered (each stage's minimum sample, in requests, adds up past it).
"""

from __future__ import annotations

import hashlib
import re
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import yaml

from lifecycle.status import VersionStatus
from serving.server import free_port
from tests.reliability.helpers import (
    MODEL,
    FakeUpstream,
    banking_rows,
    register_base_version,
    serve_config,
    start_serving,
)

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

V1, V2, V3 = f"{MODEL}:v1", f"{MODEL}:v2", f"{MODEL}:v3"
CALLERS = 16
REQUESTS = 20_000
INTENTS = ("card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked", "card_linking",
           "transfer_timing", "balance_not_updated_after_bank_transfer")
GUARD = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.04, "tolerance": 0.005},
         {"metric": "infra_error_rate", "direction": "lower_is_better", "regression": 0.02},
         {"metric": "feedback_success_rate", "direction": "higher_is_better", "regression": 0.1, "tolerance": 0.02}]
# Minimum answers per arm: shadow mirrors every request (4,000 requests), 2,000 at 25 % needs ~8,000, 4,000 at
# 50 % ~8,000, the full stage 1,000: a promotion needs at least 21,000 answered requests.
STAGES = [{"name": "shadow", "share": 0, "min_requests_per_arm": 4000, "guardrails": GUARD[:2]},
          {"name": "canary-25", "share": 25, "min_requests_per_arm": 2000},
          {"name": "canary-50", "share": 50, "min_requests_per_arm": 4000},
          {"name": "full", "share": 100, "min_requests_per_arm": 1000}]


def wrong_for(prompt: str) -> bool:
    """One prompt in five, fixed by its text: the routes the bad candidate gets wrong."""
    return hashlib.sha256(prompt.encode()).digest()[0] % 5 == 0


@pytest.fixture(scope="module")
def prompts():
    return banking_rows(INTENTS, 60, "train")


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    plan = {"name": "load", "version": 1, "approval_before_last_stage": False, "look_interval_s": 1, "settle_s": 0.5,
            "stage_defaults": {"min_requests_per_arm": 1000, "max_duration_s": 900, "on_inconclusive": "rollback",
                               "guardrails": GUARD},
            "stages": STAGES}
    path = tmp_path_factory.mktemp("plan") / "rollout.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


@pytest.fixture(scope="module")
def served(weightless_candidate, prompts, tmp_path_factory):
    """``slm serve`` through the fake upstream: v1 and v2 route every prompt right, v3 gets one in five wrong
    (a valid route, the wrong one: only the callers' feedback shows it)."""
    from registry.service import open_registry

    with open_registry() as reg:
        lineage = reg.get(V1).lineage
        register_base_version(reg, MODEL, lineage.model_copy(update={"parent": V2}), "a candidate that misroutes")
    label = {p.prompt: p.completion for p in prompts}

    def answers(model: str, prompt: str) -> str:
        right = label[prompt]
        if model == V3 and wrong_for(prompt):
            return next(i for i in INTENTS if i != right)
        return right

    folder = tmp_path_factory.mktemp("serve")
    port, log = free_port(), folder / "serve.log"
    with FakeUpstream({V1: "ok", V2: "ok", V3: "ok"}, answers=answers) as upstream:
        proc = start_serving(serve_config(folder, upstream), port, log)
        try:
            yield f"http://127.0.0.1:{port}", log
        finally:
            proc.send_signal(signal.SIGTERM)  # a clean stop flushes the log
            proc.wait(timeout=60)


def under_load(url: str, prompts, version: str, plan_file, seed: int) -> tuple[dict, object, datetime, datetime]:
    """Start the callers, run the rollout of ``version`` to its end, keep the callers going until 20,000 requests
    were answered, stop them. Returns the rollout's outcome, the callers, and the window they sent in."""
    from serving.loadgen import LoadGenerator
    from slm_cli.live import roll

    since = datetime.now(UTC)
    load = LoadGenerator(url, prompts, model=MODEL, users=2000, threads=CALLERS, seed=seed, keep_ids=True)
    with load:
        outcome = roll(version, str(plan_file), look_s=1.0, settle_s=0.5)
        deadline = time.monotonic() + 600
        while load.counts["requests"] < REQUESTS and time.monotonic() < deadline:
            time.sleep(0.5)
    until = datetime.now(UTC) + timedelta(seconds=1)
    print(f"{version}: {outcome['phase']} at {outcome['stage']} after {outcome['seconds']} s; callers: "
          f"{dict(load.counts)}")
    return outcome, load, since, until


def logged(url: str, since: datetime, until: datetime, expected_served: int):
    """The prediction log of the window once the gateway has stored every served answer (its writer runs behind
    the responses; shadow copies are answered after the response)."""
    from registry.predictions import PredictionStore
    from registry.service import open_registry

    with open_registry() as reg:
        store = PredictionStore(reg.store.engine)
        deadline = time.monotonic() + 60
        while True:
            rows = store.window(MODEL, since, until, limit=None)
            pending = httpx.get(f"{url}/metrics").text
            queued = float(re.search(r"^slm_prediction_log_pending (\S+)$", pending, re.M).group(1))
            if (sum(r.served for r in rows) >= expected_served and queued == 0) or time.monotonic() > deadline:
                return rows


def check_exactly_once(url: str, load, since: datetime, until: datetime, shadowed: str) -> Counter:
    assert load.counts["errors"] == 0 and load.counts["feedback_errors"] == 0, (load.counts, load.error_samples)
    assert load.counts["requests"] >= REQUESTS, load.counts
    told = load.answered
    assert len(told) == load.counts["requests"]  # request ids are unique per answer
    rows = logged(url, since, until, len(told))

    served = [r for r in rows if r.served]
    per_request = Counter(r.request_id for r in served)
    assert set(per_request) == set(told), (len(set(told) - set(per_request)), len(set(per_request) - set(told)))
    assert max(per_request.values()) == 1, per_request.most_common(3)
    for row in served:  # the log says what the caller was told, and holds the feedback the caller sent
        version, right = told[row.request_id]
        assert (f"{MODEL}:v{row.version}", row.outcome) == (version, "ok"), row
        assert row.feedback == ("success" if right else "failure"), row

    shadows = [r for r in rows if not r.served]
    per_shadow = Counter(r.request_id for r in shadows)
    assert shadows and max(per_shadow.values()) == 1, per_shadow.most_common(3)
    assert set(per_shadow) <= set(told)
    assert {(r.role, f"{MODEL}:v{r.version}") for r in shadows} == {("shadow", shadowed)}
    assert re.search(r"^slm_prediction_log_dropped_total 0\.0$", httpx.get(f"{url}/metrics").text, re.M)
    return Counter(version for version, _ in told.values())


def test_twenty_thousand_requests_through_a_promotion_then_a_rollback(served, prompts, plan_file, prefect_harness):
    from registry.service import open_registry
    from registry.traffic import get_split

    url, _log = served
    promoted, load, since, until = under_load(url, prompts, V2, plan_file, seed=1)
    assert promoted["phase"] == "promoted", promoted["history"]
    assert [h["stage"] for h in promoted["history"] if h["action"] == "advance"] == [s["name"] for s in STAGES]
    by_version = check_exactly_once(url, load, since, until, shadowed=V2)
    assert by_version[V1] > 0 and by_version[V2] > 0

    rolled_back, load, since, until = under_load(url, prompts, V3, plan_file, seed=2)
    assert (rolled_back["phase"], rolled_back["stage"]) == ("rolled_back", "canary-25"), rolled_back["history"]
    failed = {r.split(":")[0].removeprefix("[fail] ") for r in rolled_back["history"][-1]["failed"]}
    assert failed == {"feedback_success_rate"}, rolled_back["history"][-1]
    by_version = check_exactly_once(url, load, since, until, shadowed=V3)
    # The callers that v3 served before the rollback, and v2 (champion now) serving everyone after it.
    assert by_version[V3] > 0 and by_version[V2] > by_version[V3] and V1 not in by_version

    with open_registry() as reg:
        assert reg.store.aliases(MODEL)["champion"] == 2
        assert reg.store.get_version(MODEL, 2).status is VersionStatus.PROMOTED
        assert reg.store.get_version(MODEL, 3).status is VersionStatus.ROLLED_BACK
        split = get_split(reg.store, MODEL)
        assert split.live_versions == [2]
        assert reg.store.verify_audit().ok
    assert httpx.get(f"{url}/readyz").json()["split_revision"] == split.revision  # the gateway serves that split
