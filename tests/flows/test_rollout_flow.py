"""The rollout flow under a real (temporary) Prefect server: live traffic written to the prediction log by a
thread (routed by the stored split, as a gateway does), approval through the real pause/resume, and a
flow killed mid-rollout then run again. The gateway itself is in tests/integration/test_rollout_live.py."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import yaml

from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, Lineage
from lifecycle.status import VersionStatus

pytestmark = [pytest.mark.prefect]

MODEL = "rollout-router"
GUARD = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.3},
         {"metric": "feedback_success_rate", "direction": "higher_is_better", "regression": 0.3}]


@pytest.fixture(scope="module")
def plan_file(slm_project):
    plan = {"name": "test", "version": 1, "approval_before_last_stage": True,
            "stage_defaults": {"min_requests_per_arm": 30, "max_duration_s": 600, "guardrails": GUARD},
            "stages": [{"name": "shadow", "share": 0, "guardrails": GUARD[:1]}, {"name": "canary-20", "share": 20},
                       {"name": "canary-50", "share": 50}, {"name": "full", "share": 100}]}
    path = slm_project / "rollout.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def registry():
    from registry.service import open_registry

    return open_registry()


def register_candidate() -> int:
    """A fresh candidate (and, the first time, v1 as champion). No weights: the traffic is synthetic."""
    from lifecycle.routing import TrafficSplit
    from registry.traffic import set_split

    lineage = Lineage(base_model=BaseModelRef(model_id="local://base/none", revision="0" * 64),
                      prompt_format=INTENT_V1.identity)
    with registry() as reg:
        if not reg.store.list_versions(MODEL):
            reg.register(MODEL, staged=None, status=VersionStatus.CANDIDATE, reason="t", actor="t", lineage=lineage,
                         evals=[], task="banking77")
            reg.store.promote(MODEL, 1, actor="t", reason="first champion")
        champion = reg.store.get_alias(MODEL, "champion")
        set_split(reg.store, TrafficSplit(model=MODEL, champion=champion), actor="t", reason="test start")
        return reg.register(MODEL, staged=None, status=VersionStatus.CANDIDATE, reason="t", actor="t",
                            lineage=lineage, evals=[], task="banking77").number


class Traffic(threading.Thread):
    """Every 0.2 s, 100 requests of the last 0.2 s, routed by the split in the registry."""

    def __init__(self, send, candidate: int, bad: bool) -> None:
        super().__init__(daemon=True)
        self.send, self.candidate, self.bad, self.halt = send, candidate, bad, threading.Event()

    def run(self) -> None:
        from registry.predictions import PredictionStore

        with registry() as reg:
            preds = PredictionStore(reg.store.engine)
            while not self.halt.wait(0.2):
                now = reg.store.clock()
                self.send(reg.store, preds, now - timedelta(seconds=0.2), now, bad=self.bad, requests=100,
                          model=MODEL, candidate=self.candidate)


def approve_when_asked(candidate: int, plan_file, answers: list[str]) -> threading.Thread:
    """A person who approves the last stage as soon as the paused flow run asks."""
    def person():
        from lifecycle.config import load_yaml_config
        from lifecycle.rollout_plan import RolloutPlan
        from registry.rollouts import get_rollout
        from tasks.rollout import Approval, send_answer

        plan = load_yaml_config(RolloutPlan, plan_file)
        for _ in range(600):
            time.sleep(0.2)
            with registry() as reg:
                state = get_rollout(reg.store, MODEL, candidate)
            if state is not None and state.phase == "awaiting_approval":
                answers.append(send_answer(MODEL, candidate, Approval(approve=True, reviewer="ann",
                                                                       comment="canary looks fine"), plan))
                return
    thread = threading.Thread(target=person, daemon=True)
    thread.start()
    return thread


def params(version: int, plan_file):
    from tasks.rollout import RolloutParams

    return RolloutParams(version=f"{MODEL}:v{version}", plan=str(plan_file), look_interval_s=0.3, settle_s=0.25,
                         approval_poll_s=1, approval_timeout_s=120)


def test_good_candidate_is_promoted_with_a_person_approving_the_last_stage(slm_project, plan_file,
                                                                          synthetic_traffic):
    from prefect.client.orchestration import get_client

    from flows.rollout import rollout

    candidate = register_candidate()
    traffic = Traffic(synthetic_traffic, candidate, bad=False)
    traffic.start()
    answers: list[str] = []
    person = approve_when_asked(candidate, plan_file, answers)
    try:
        outcome = rollout(params(candidate, plan_file))
    finally:
        traffic.halt.set()
        person.join(timeout=5)
    assert (outcome.phase, outcome.stage) == ("promoted", "full"), "\n".join(outcome.reasons)
    assert answers and answers[0].startswith("resumed flow run")  # through the real pause, not the fallback
    with registry() as reg:
        assert reg.store.aliases(MODEL)["champion"] == candidate
        state = reg.store.get_version(MODEL, candidate)
        assert state.status is VersionStatus.PROMOTED
        approvals = [e for e in reg.store.audit_events() if e.action == "rollout.state"
                     and e.subject == f"{MODEL}:v{candidate}" and e.payload.get("detail", {}).get("reviewer")]
        assert approvals[0].payload["detail"] == {"reviewer": "ann", "approve": True, "comment": "canary looks fine"}
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    prefix = f"rollout-{MODEL}-v{candidate}"
    assert {prefix, f"{prefix}-shadow", f"{prefix}-canary-20", f"{prefix}-full"} <= keys


def test_killed_flow_resumes_where_it_was_and_bad_candidate_is_rolled_back(slm_project, plan_file,
                                                                           synthetic_traffic, monkeypatch):
    from flows.rollout import rollout
    from registry import rollout_exec
    from registry.rollouts import get_rollout

    candidate = register_candidate()

    class Killed(BaseException):
        pass

    real = rollout_exec._carry_out

    def die_entering_canary(store, state, effect, index, **kw):
        if effect.kind == "set_split" and effect.split.challenger_percent == 20:
            raise Killed  # the process dies with the decision saved and its effects not carried out
        return real(store, state, effect, index, **kw)

    traffic = Traffic(synthetic_traffic, candidate, bad=False)
    traffic.start()
    try:
        with monkeypatch.context() as m:
            m.setattr(rollout_exec, "_carry_out", die_entering_canary)
            with pytest.raises(Killed):
                rollout(params(candidate, plan_file))
        with registry() as reg:
            stored = get_rollout(reg.store, MODEL, candidate)
        assert (stored.phase, stored.stage_index) == ("running", 1) and stored.pending  # decided, not done
        traffic.bad = True  # the candidate goes bad while nobody drives the rollout
        outcome = rollout(params(candidate, plan_file))
    finally:
        traffic.halt.set()
    assert outcome.phase == "rolled_back" and outcome.stage == "canary-20"
    failed = {r.split(":")[0] for r in outcome.reasons if r.startswith("[fail]")}
    # Worse answers, seen on a clean window: not traffic routed by the split the killed run left behind.
    assert failed and failed <= {"[fail] model_error_rate", "[fail] feedback_success_rate"}
    with registry() as reg:
        from registry.traffic import get_split

        assert get_split(reg.store, MODEL).live_versions == [reg.store.get_alias(MODEL, "champion")]
        assert reg.store.get_version(MODEL, candidate).status is VersionStatus.ROLLED_BACK
        assert get_rollout(reg.store, MODEL, candidate).pending == []
