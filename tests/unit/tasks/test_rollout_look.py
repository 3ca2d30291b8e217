"""A look that holds because a gateway has not adopted the stage's split says so in the flow run's log; other
holds stay quiet (a stage holds at most looks while its sample grows)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest

import tasks.rollout as rollout_task
from lifecycle.config import load_yaml_config
from lifecycle.rollout_plan import RolloutPlan, StageVerdict
from lifecycle.rollout_state import RolloutState
from lifecycle.verdict import Finding, Verdict

REPO = Path(__file__).resolve().parents[3]
STATE = RolloutState(model="router", candidate=2, champion=1, plan_name="p", plan_version=1, stage_index=0,
                     stage_started_at="2026-01-01T00:00:00+00:00", started_at="2026-01-01T00:00:00+00:00",
                     split_revision=7)
SAMPLE = Finding(check="minimum sample", verdict=Verdict.INCONCLUSIVE, reason="12 answered requests, need 200")


class Logger:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str, *args: object) -> None:
        self.warnings.append(message % args)


@pytest.fixture
def looked(monkeypatch):
    """Run the look task's body on a verdict given by the test, with no registry and no Prefect run."""
    logger = Logger()
    plan = load_yaml_config(RolloutPlan, REPO / "configs" / "rollout.yaml").model_copy(update={"look_interval_s": 0})
    monkeypatch.setattr(rollout_task, "get_run_logger", lambda: logger)
    monkeypatch.setattr(rollout_task, "open_registry", lambda: nullcontext(SimpleNamespace(store=SimpleNamespace(
        engine=None))))
    monkeypatch.setattr(rollout_task, "PredictionStore", lambda engine: None)

    def run(*findings: Finding, elapsed_s: float = 60.0) -> list[str]:
        # The plan's settle_s is 5 s and looks come back to back here: past 5 s a hold is past the first looks.
        verdict = StageVerdict(stage="shadow", verdict=Verdict.INCONCLUSIVE, action="hold", findings=list(findings),
                               elapsed_s=elapsed_s)
        monkeypatch.setattr(rollout_task.rollout_exec, "step", lambda *a, **k: (STATE, verdict))
        params = rollout_task.RolloutParams(version="router:v2")
        assert rollout_task.look.fn(params, plan, STATE) == (STATE, verdict)
        return logger.warnings
    return run


def test_a_hold_on_an_unadopted_split_is_logged_with_its_reason(looked):
    reason = "40 requests in the window were routed by a traffic split older than the stage's (revision 7)"
    stuck = Finding(check="split adoption", verdict=Verdict.INCONCLUSIVE, reason=reason)
    assert looked(SAMPLE, stuck, elapsed_s=4.0) == []  # the first looks: the gateway may still be loading
    assert looked(SAMPLE, stuck) == [f"router:v2 still holds at shadow after 60 s: {reason}"]


def test_other_holds_and_a_few_late_requests_are_not_logged(looked):
    late = Finding(check="split adoption", verdict=Verdict.PASS, reason="3 requests ... not counted")
    assert looked(SAMPLE, late) == []


def test_the_progress_line_says_what_a_holding_stage_waits_for():
    plan = load_yaml_config(RolloutPlan, REPO / "configs" / "rollout.yaml")
    line = rollout_task.describe_progress(STATE, plan)
    assert line == "router:v2 vs champion v1: running at stage shadow (1/5)"
    passed = Finding(check="sample ratio", verdict=Verdict.PASS, reason="share 0.5")
    hold = StageVerdict(stage="shadow", verdict=Verdict.INCONCLUSIVE, action="hold", findings=[passed, SAMPLE],
                        elapsed_s=42.4)
    assert rollout_task.describe_progress(STATE, plan, hold) == (
        f"{line}; after 42 s it waits on minimum sample: 12 answered requests, need 200")
    moved = hold.model_copy(update={"action": "advance", "verdict": Verdict.PASS})
    assert rollout_task.describe_progress(STATE, plan, moved) == line
