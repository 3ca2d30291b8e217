"""The decommission flow under a real (temporary) Prefect server, on a registry of versions of every status and
age (registered with a clock set back in time; no model is trained or loaded)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, Lineage
from lifecycle.routing import TrafficSplit
from lifecycle.settings import get_settings
from lifecycle.status import VersionStatus as S

pytestmark = [pytest.mark.prefect]
MODEL = "retire-demo"
LINEAGE = Lineage(base_model=BaseModelRef(model_id="local://base/x", revision="0" * 64),
                  prompt_format=INTENT_V1.identity)


def registry():
    from registry.service import open_registry

    return open_registry()


@pytest.fixture(scope="module")
def world(slm_project, tmp_path_factory):
    """v1..v8 of MODEL, settled 100 days ago (day 0..6) except v8 (2 days ago); policy keep_recent 1, 30 days.

    v1 promoted, no alias (former champion) · v2 rejected · v3 previous · v4 champion · v5 stale candidate ·
    v6 rejected but the split's shadow · v7 rejected, the most recent resting one · v8 fresh candidate.
    """
    from registry.artifacts import LocalArtifactStore
    from registry.service import Registry
    from registry.store import RegistryStore
    from registry.traffic import set_split

    settings = get_settings()
    start = datetime.now(UTC) - timedelta(days=100)
    clock = {"now": start}
    reg = Registry(RegistryStore.open(settings.db_url, clock=lambda: clock["now"]),
                   LocalArtifactStore(settings.artifacts), MODEL)
    adapter = tmp_path_factory.mktemp("adapter")
    (adapter / "adapter_config.json").write_text('{"r": 4}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\x01" * 1000)
    plan = [("candidate", True), ("rejected", False), ("candidate", True), ("candidate", True), ("candidate", False),
            ("rejected", False), ("rejected", False)]
    for day, (status, promote) in enumerate(plan):
        clock["now"] = start + timedelta(days=day)
        v = reg.register(MODEL, staged=adapter, status=S(status), reason="t", actor="t", lineage=LINEAGE, evals=[],
                         task="banking77")
        if promote:
            reg.store.promote(MODEL, v.number, actor="t", reason="won")
    clock["now"] = datetime.now(UTC) - timedelta(days=2)
    reg.register(MODEL, staged=adapter, status=S.CANDIDATE, reason="t", actor="t", lineage=LINEAGE, evals=[],
                 task="banking77")
    set_split(reg.store, TrafficSplit(model=MODEL, champion=4, shadow=6), actor="t", reason="serve")
    log_answers(reg.store.engine)
    reg.close()
    policy = tmp_path_factory.mktemp("policy") / "retention.yaml"
    policy.write_text(yaml.safe_dump({"name": "test", "version": 2, "keep_recent": 1, "retire_after_days": 30,
                                      "artifacts": "archive"}))
    return str(policy)


OLD_ANSWERS, NEW_ANSWERS = 6, 4  # 100 and 1 days old; the policy keeps the log 90 days (its default)


def log_answers(engine) -> None:
    """Answers of v4 logged 100 days ago (two with feedback) and yesterday (one with feedback); another model's old
    answers, which this model's policy must not touch."""
    from lifecycle.predictions import Feedback, Prediction
    from registry.predictions import PredictionStore

    log, now = PredictionStore(engine), datetime.now(UTC)

    def answer(i: int, days: float, model: str = MODEL) -> Prediction:
        return Prediction(ts=now - timedelta(days=days, minutes=i), request_id=f"{model}-{days}-{i}", model=model,
                          version=4, role="champion", user_hash="u" * 16, prompt="p", completion="c", latency_ms=5.0,
                          prompt_tokens=1, completion_tokens=1, outcome="ok", served=True)

    log.insert_many([answer(i, 100) for i in range(OLD_ANSWERS)] + [answer(i, 1) for i in range(NEW_ANSWERS)]
                    + [answer(i, 100, model="someone-else") for i in range(3)])
    for request in (f"{MODEL}-100-0", f"{MODEL}-100-1", f"{MODEL}-1-0"):
        log.record_feedback(Feedback(request_id=request, outcome="success", ts=now))


def logged(model: str = MODEL) -> int:
    from registry.predictions import PredictionStore

    with registry() as reg:
        return PredictionStore(reg.store.engine).count(model)


def statuses() -> dict[int, str]:
    with registry() as reg:
        return {v.number: v.status.value for v in reg.store.list_versions(MODEL)}


def audit_count() -> int:
    with registry() as reg:
        return len(reg.store.audit_events())


def test_dry_run_plans_and_changes_nothing(world):
    from flows.decommission import decommission

    before, events = statuses(), audit_count()
    outcome = decommission(model=MODEL, policy_path=world, dry_run=True)
    actions = {d.number: d.action for d in outcome.decisions}
    assert actions == {1: "retire", 2: "retire", 3: "keep", 4: "keep", 5: "retire", 6: "keep", 7: "keep", 8: "keep"}
    reasons = {d.number: d.reasons[0] for d in outcome.decisions}
    assert reasons[3] == "holds alias previous" and reasons[6] == "named by the traffic split as shadow"
    assert reasons[7] == "one of the 1 most recent resting versions"
    assert reasons[8].startswith("candidate waiting for its rollout: only 2")
    assert outcome.outcomes == [] and statuses() == before
    assert audit_count() == events
    assert outcome.log_rows_due == OLD_ANSWERS and outcome.log_purge is None  # counted, not deleted
    assert logged() == OLD_ANSWERS + NEW_ANSWERS


def test_retires_what_the_policy_says_and_keeps_the_rest(world):
    from flows.decommission import decommission
    from registry.tombstone import archive_folder, read_tombstone, version_folder

    outcome = decommission(model=MODEL, policy_path=world)
    assert outcome.retired == [f"{MODEL}:v1", f"{MODEL}:v2", f"{MODEL}:v5"] and outcome.refused == []
    got = statuses()
    assert {n for n, s in got.items() if s == "decommissioned"} == {1, 2, 5}
    assert (got[3], got[4], got[8]) == ("promoted", "promoted", "candidate")
    with registry() as reg:
        root = reg.artifacts.root
        for n in (1, 2, 5):
            assert not version_folder(root, MODEL, n).exists() and archive_folder(root, MODEL, n).is_dir()
            assert read_tombstone(root, MODEL, n)["retirement"]["policy"]["version"] == 2
        for n in (3, 4, 6, 7, 8):
            assert reg.version_dir(reg.store.get_version(MODEL, n)).is_dir()
        events = [e for e in reg.store.audit_events() if e.action == "slm.version.decommissioned"]
        assert [e.payload["version"] for e in events] == [f"{MODEL}:v1", f"{MODEL}:v2", f"{MODEL}:v5"]
        assert all(e.subject == e.payload["version"] and e.actor == "decommission-flow" for e in events)
        planned = [e for e in reg.store.audit_events() if e.action == "retention.planned"][-1]
        assert planned.payload["policy"]["name"] == "test" and len(planned.payload["decisions"]) == 8
        assert reg.store.verify_audit().ok

    # The prediction log: the answers older than 90 days went with their feedback; yesterday's and another
    # model's stayed.
    assert (outcome.log_purge.rows, outcome.log_purge.feedback) == (OLD_ANSWERS, 2)
    assert logged() == NEW_ANSWERS and logged("someone-else") == 3
    with registry() as reg:
        [purged] = [e for e in reg.store.audit_events() if e.action == "predictions.purged"]
        assert (purged.subject, purged.payload["rows"], purged.payload["feedback"]) == (MODEL, OLD_ANSWERS, 2)
        # The intent came first: a purge cut short between its batches is still on record.
        [started] = [e for e in reg.store.audit_events() if e.action == "predictions.purge_started"]
        assert started.seq < purged.seq and started.payload["rows_due"] == OLD_ANSWERS
        assert started.payload["cutoff"] == purged.payload["cutoff"]
        assert planned.payload["prediction_log"]["rows_due"] == OLD_ANSWERS

    again = decommission(model=MODEL, policy_path=world)
    assert again.outcomes == [] and {d.number for d in again.decisions if d.action == "done"} == {1, 2, 5}
    assert (again.log_rows_due, again.log_purge.rows) == (0, 0)


def test_a_stale_plan_is_refused_at_retirement(world):
    from lifecycle.retention import RetentionDecision
    from tasks.decommission import plan_decommission, retire

    plan = plan_decommission.fn(MODEL, world, dry_run=True)
    stale = RetentionDecision(model=MODEL, number=4, status=S.PROMOTED, action="retire", reasons=["stale plan"])
    outcome = retire.fn(plan, stale)
    assert outcome.outcome == "refused"
    assert outcome.reasons == ["holds alias champion", "named by the traffic split as champion"]
    assert statuses()[4] == "promoted"


def test_the_monitors_pinned_reference_window_is_kept_from_its_start(world, tmp_path):
    from flows.decommission import decommission
    from lifecycle.predictions import Prediction
    from registry.predictions import PredictionStore

    since = datetime.now(UTC) - timedelta(days=120)  # older than the policy's 90 days and than every logged answer
    with registry() as reg:  # answers inside the window (whatever the tests before this one purged)
        PredictionStore(reg.store.engine).insert_many([Prediction(
            ts=since + timedelta(days=1, minutes=i), request_id=f"window-{i}", model=MODEL, version=4, role="champion",
            user_hash="u" * 16, prompt="p", completion="c", latency_ms=5.0, prompt_tokens=1, completion_tokens=1,
            outcome="ok", served=True) for i in range(2)])
    monitor = tmp_path / "monitor.yaml"
    monitor.write_text(yaml.safe_dump({
        **yaml.safe_load((Path(__file__).parents[2] / "configs/monitor.yaml").read_text()),
        "reference": {"kind": "window", "since": since.isoformat(), "until": (since + timedelta(days=7)).isoformat()}}))
    outcome = decommission(model=MODEL, policy_path=world, dry_run=True, monitor_policy=str(monitor))
    assert outcome.log_plan.cutoff == since and outcome.log_rows_due == 0
    assert outcome.log_plan.reasons[-1].startswith(f"but the drift monitor's reference window ({monitor}) reads")
    plain = decommission(model=MODEL, policy_path=world, dry_run=True)  # the shipped monitor compares to training
    assert plain.log_rows_due >= 2 and len(plain.log_plan.reasons) == 1  # the window's answers would go
    monitor.write_text("reference: {kind: window}\n")
    with pytest.raises(ValueError, match="needs both `since` and `until`"):
        decommission(model=MODEL, policy_path=world, dry_run=True, monitor_policy=str(monitor))


def test_cli_dry_run_prints_the_plan(world):
    from slm_cli.decommission_cmd import decommission_cmd

    app = typer.Typer()
    app.command()(decommission_cmd)
    result = CliRunner().invoke(app, ["--model", MODEL, "--policy", world, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output[result.output.index("{"):])
    assert doc["dry_run"] is True and doc["model"] == MODEL and doc["retired"] == []
    table = CliRunner().invoke(app, ["--model", MODEL, "--policy", world, "--dry-run"])
    assert table.exit_code == 0, table.output
    assert f"{MODEL}:v5" in table.output and "dry run, would retire" in table.output
    assert "Prediction log:" in table.output and "would be deleted" in table.output
    missing = CliRunner().invoke(app, ["--policy", "no/such.yaml"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    no_monitor = CliRunner().invoke(app, ["--policy", world, "--monitor-policy", "no/monitor.yaml"])
    assert no_monitor.exit_code == 2 and "monitor policy no/monitor.yaml does not exist" in no_monitor.output
