"""The monitor flow under a real (temporary) Prefect server: "before" traffic is quiet, drifted traffic emits
``slm.drift.detected`` with the report and summary as artifacts, and a second drifted run is suppressed."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from lifecycle.drift_policy import MonitorParams
from lifecycle.predictions import Feedback, Prediction
from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, EvalReport, Lineage
from lifecycle.status import VersionStatus
from lifecycle.task import load_task
from training.task_data import read_split, split_worlds

pytestmark = [pytest.mark.prefect]

REPO_TASK = "configs/task.yaml"
NOW = datetime.now(UTC).replace(microsecond=0)
SINCE, UNTIL = NOW - timedelta(hours=2), NOW + timedelta(minutes=1)


@pytest.fixture(scope="module", autouse=True)
def retrain_automation(slm_project):
    """An enabled automation waiting for slm.drift.detected on the harness's server, as `slm up` deploys one (its
    action here does nothing): without one the monitor records a drift as suppressed, no automation to hear it."""
    from prefect.client.orchestration import get_client
    from prefect.events.actions import DoNothing
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from tasks.monitor import automations_listen

    assert "no enabled automation" in automations_listen()  # the real server's list, read by the real client
    with get_client(sync_client=True) as client:
        automation_id = client.create_automation(AutomationCore(
            name="test: drift starts retrain", actions=[DoNothing()],
            trigger=EventTrigger(expect={"slm.drift.detected"}, posture=Posture.Reactive, threshold=1)))
    assert automations_listen() is None
    yield
    with get_client(sync_client=True) as client:
        client.delete_automation(automation_id)


@pytest.fixture(scope="module")
def worlds(slm_project):
    from lifecycle.settings import project_root

    root = project_root()
    spec = load_task(root / REPO_TASK, root)
    test = read_split(spec, "test")
    return spec, split_worlds(spec), [p for p in test if not spec.is_drifted(p.completion)]


def champion(model: str, train) -> str:
    """Version 1 of ``model`` as champion: no weights (the monitor never loads them), a training snapshot,
    and 0.84 exact match on golden-before at promotion."""
    from registry.service import open_registry

    with open_registry() as reg:
        lineage = Lineage(base_model=BaseModelRef(model_id="none", revision="0" * 64), prompt_format=INTENT_V1.identity,
                          datasets=[reg.snapshot_dataset("train", train, "before-train")])
        evals = [EvalReport(version=f"{model}:v1", benchmark="golden-before", benchmark_sha256="0" * 64, n_items=100,
                            exact_match=0.84, per_route_accuracy={}, malformed_rate=0.0, latency_p50_ms=1,
                            latency_p95_ms=2, latency_p99_ms=3, tokens_per_s=1, peak_memory_mb=1)]
        v1 = reg.register(model, staged=None, status=VersionStatus.CANDIDATE, reason="test", actor="test",
                          lineage=lineage, evals=evals, task="banking77")
        reg.store.promote(model, v1.number, actor="test", reason="test champion")
        return v1.ref


def log_traffic(model: str, pairs, completions: list[str], feedback_ok: int = 0) -> None:
    from registry.predictions import PredictionStore
    from registry.service import open_registry

    rows = [Prediction(ts=SINCE + timedelta(seconds=5 * i), request_id=f"{model}-{i}", model=model, version=1,
                       role="champion", user_hash=f"u{i % 50}", prompt=p.prompt, completion=c, latency_ms=12.0,
                       outcome="ok", served=True) for i, (p, c) in enumerate(zip(pairs, completions, strict=True))]
    with open_registry() as reg:
        store = PredictionStore(reg.store.engine)
        store.insert_many(rows)
        for i in range(feedback_ok):
            store.record_feedback(Feedback(request_id=f"{model}-{i}", outcome="success", ts=NOW))


def run(model: str, policy: str | None = None):
    from flows.monitor import monitor

    params = MonitorParams(model=model, since=SINCE, until=UNTIL, **({"policy": policy} if policy else {}))
    state = monitor(params, return_state=True)
    return state.result(), state.state_details.flow_run_id


def artifacts(flow_run_id) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def prefect_events(model: str, expect: int, timeout_s: float = 20.0, name: str = "slm.drift.detected") -> list:
    """Events ``name`` (drift by default) of ``model`` stored by the Prefect server (they arrive asynchronously:
    poll)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            # A new filter each time: its `occurred.until` defaults to the moment it is built.
            query = EventFilter(event=EventNameFilter(name=[name]),
                                resource=EventResourceFilter(id=[f"slm.model.{model}"]))
            events = client.read_events(filter=query, limit=50).events  # the server refuses more than 50
            if len(events) >= expect or time.monotonic() > deadline:
                return events
            time.sleep(0.5)


def audit(model: str, action: str) -> list:
    from registry.service import open_registry

    with open_registry() as reg:
        return [e for e in reg.store.audit_events() if e.action == action and e.subject == model]


@pytest.fixture(scope="module")
def quiet_model(worlds):
    spec, w, before = worlds
    champion("watch-before", w.before_train)
    sample = random.Random(0).sample(before, 1200)  # test.csv is sorted by intent: a prefix is not the world
    log_traffic("watch-before", sample, [p.completion for p in sample], feedback_ok=60)
    return "watch-before"


def test_before_world_traffic_emits_nothing(quiet_model):
    outcome, run_id = run(quiet_model)
    assert outcome.verdict == "pass" and not outcome.event and outcome.action == "no action"
    assert outcome.drifted_columns == [] and outcome.champion == "watch-before:v1"
    assert any("[pass] feedback-accuracy" in r for r in outcome.reasons)  # 60 of 60 vs 0.84 at promotion
    found = artifacts(run_id)
    assert "file://" in found["drift-report"].data and found["drift-summary"].type == "markdown"  # a link artifact
    assert "| prompt_oov_share |" in found["drift-summary"].data
    assert audit("watch-before", "slm.drift.detected") == []


def test_drifted_traffic_emits_the_event_then_the_storm_rule_holds_it(worlds):
    spec, w, _ = worlds
    ref = champion("watch-drift", w.before_train)
    sample = w.drifted_labelled[:1200]
    old = spec.before_labels  # the champion can only answer old intents
    log_traffic("watch-drift", sample, [old[i % 5] for i in range(len(sample))])

    outcome, run_id = run("watch-drift")
    assert outcome.verdict == "fail" and outcome.event, outcome.reasons
    assert "prompt_oov_share" in outcome.drifted_columns
    found = artifacts(run_id)
    assert f"file://{outcome.report}" in found["drift-report"].data and outcome.report.endswith(".html")
    assert "slm.drift.detected" in found["drift-summary"].data

    [recorded] = audit("watch-drift", "slm.drift.detected")
    payload = recorded.payload
    assert payload["model"] == "watch-drift" and payload["champion"] == ref
    assert payload["window_since"] == SINCE.isoformat() and payload["window_until"] == UNTIL.isoformat()
    # No drop or plan in the policy: blank, so the retrain config's apply (the automation reads blank as unset).
    assert (payload["data_path"], payload["rollout_plan"]) == ("", "")
    assert payload["retrain_config"] == "configs/retrain.yaml" and payload["reason"].startswith("drift on watch-drift")
    assert set(payload["drifted_columns"]) <= set(payload["scores"]) and payload["rows"] == 1200
    [event] = prefect_events("watch-drift", expect=1)
    assert event.payload["data_path"] == payload["data_path"] and event.resource.id == "slm.model.watch-drift"

    again, _ = run("watch-drift")  # drift persists: the next run must not start another retrain
    assert again.verdict == "fail" and not again.event and again.action.startswith("trigger suppressed: cooldown")
    [suppressed] = audit("watch-drift", "slm.drift.suppressed")
    assert "last trigger" in suppressed.payload["suppressed"] and suppressed.payload["retry_after"]
    assert len(audit("watch-drift", "slm.drift.detected")) == 1
    assert len(prefect_events("watch-drift", expect=2, timeout_s=3)) == 1


def test_a_run_whose_storm_check_missed_another_runs_trigger_does_not_fire_again(worlds, monkeypatch):
    """Two runs find one drift at once: both storm checks read the log before either trigger is in it. The second
    to append finds the first's trigger within the cooldown (one transaction under the audit lock) and records
    its drift as suppressed: one retrain, and an outcome and summary that say so."""
    import tasks.monitor
    from lifecycle.drift_policy import TriggerDecision

    spec, w, _ = worlds
    champion("watch-race", w.before_train)
    sample = w.drifted_labelled[:1200]
    log_traffic("watch-race", sample, [spec.before_labels[i % 5] for i in range(len(sample))])
    first, _ = run("watch-race")
    assert first.event
    # The next run's storm check read the log "before" the first run's trigger landed: it says fire.
    monkeypatch.setattr(tasks.monitor, "decide_trigger", lambda **kwargs: TriggerDecision(fire=True, reason="race"))
    second, run_id = run("watch-race")
    assert second.verdict == "fail" and not second.event
    assert second.action.startswith("trigger suppressed: another monitor run fired for watch-race")
    assert "another monitor run fired" in artifacts(run_id)["drift-summary"].data
    assert len(audit("watch-race", "slm.drift.detected")) == 1
    [suppressed] = audit("watch-race", "slm.drift.suppressed")
    assert suppressed.payload["retry_after"]


def test_cli_runs_the_monitor(quiet_model):
    import typer
    from typer.testing import CliRunner

    from slm_cli.monitor_cmd import monitor_cmd

    app = typer.Typer()
    app.command("monitor")(monitor_cmd)
    app.command("other")(lambda: None)  # two commands: typer then expects the command name
    window = ["--since", SINCE.strftime("%Y-%m-%dT%H:%M:%S"), "--until", UNTIL.strftime("%Y-%m-%dT%H:%M:%S")]
    result = CliRunner().invoke(app, ["monitor", "--model", quiet_model, *window])
    assert result.exit_code == 0, result.output
    assert "drift verdict pass; no action" in result.output and "report: " in result.output
    missing = CliRunner().invoke(app, ["monitor", "--model", "nobody", *window])
    assert missing.exit_code == 2 and "nobody has no champion" in missing.output


def test_a_policy_with_prompt_embeddings_runs_them_with_the_reference_cached(worlds, tmp_path):
    """The semantic column alone (200 prompts a side): the new products drift on it; the reference's embeddings
    land in SLM_HOME/cache/embeddings, and the next run reads them from there."""
    import yaml

    from lifecycle.settings import get_settings, project_root

    spec, w, _ = worlds
    champion("watch-meaning", w.before_train)
    sample = w.drifted_labelled[:1200]
    log_traffic("watch-meaning", sample, [spec.before_labels[i % 5] for i in range(len(sample))])
    raw = yaml.safe_load((project_root() / "configs/monitor.yaml").read_text())
    raw.update(columns={"prompt_embedding": {"method": "model", "threshold": 0.6}}, embedding_sample=200)
    policy = tmp_path / "meaning.yaml"
    policy.write_text(yaml.safe_dump(raw))
    from flows.monitor import monitor

    cache = get_settings().home / "cache" / "embeddings"
    before = set(cache.glob("*.npy"))
    outcome = monitor(MonitorParams(model="watch-meaning", since=SINCE, until=UNTIL, policy=str(policy)))
    assert outcome.verdict == "fail" and outcome.drifted_columns == ["prompt_embedding"], outcome.reasons
    cached = set(cache.glob("*.npy")) - before
    assert len(cached) == 1
    (path,) = cached
    stamp = path.stat().st_mtime_ns
    again = monitor(MonitorParams(model="watch-meaning", since=SINCE, until=UNTIL, policy=str(policy)))
    # Read from the cache: a hit marks the file used (its mtime moves); a miss would embed the same bytes again,
    # which write_bytes_atomic leaves unwritten, mtime and all.
    assert again.drifted_columns == ["prompt_embedding"] and path.stat().st_mtime_ns > stamp
    assert set(cache.glob("*.npy")) - before == cached


def test_a_candidate_whose_announcement_prefect_never_heard_is_announced_again(worlds, tmp_path):
    """The retrain recorded ``slm.candidate.published`` and died before Prefect heard the event (it is sent from a
    background queue): the monitor's hand-off check finds no such event on the real server and sends it again, with
    the retrain's payload; the next run finds it there and leaves the rest to a person."""
    from prefect.client.orchestration import get_client
    from prefect.events.actions import DoNothing
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from lifecycle.settings import project_root
    from registry.service import open_registry
    from tasks.events import prefect_api

    spec, w, before = worlds
    model = "watch-handoff"
    champion(model, w.before_train)
    sample = random.Random(1).sample(before, 1200)
    log_traffic(model, sample, [p.completion for p in sample])
    payload = {"model": model, "version": f"{model}:v2", "champion": f"{model}:v1", "verdict": "pass",
               "reasons": [], "rollout_plan": "", "run": "run-died"}
    with open_registry() as reg:
        v2 = reg.register(model, staged=None, status=VersionStatus.CANDIDATE, reason="test", actor="test",
                          lineage=reg.get(f"{model}:v1").lineage, evals=[], task="banking77")
        reg.store.append_audit(actor="retrain-flow", action="slm.candidate.published", subject=v2.ref,
                               payload={**payload, "prefect_api": prefect_api()})  # ... and died before emit_event
    policy = tmp_path / "monitor.yaml"
    policy.write_text((project_root() / "configs/monitor.yaml").read_text()
                      .replace("handoff_grace_minutes: 30", "handoff_grace_minutes: 0"))
    with get_client(sync_client=True) as client:
        automation_id = client.create_automation(AutomationCore(
            name="test: candidate starts rollout", actions=[DoNothing()],
            trigger=EventTrigger(expect={"slm.candidate.published"}, posture=Posture.Reactive, threshold=1)))
    try:
        outcome, run_id = run(model, policy=str(policy))
        assert outcome.reannounced == v2.ref
        assert "the Prefect server never received it, and no rollout of it has started: announcing it again " \
            "(attempt 1 of 3)" in outcome.handoff[-1]
        (event,) = prefect_events(model, expect=1, name="slm.candidate.published")
        assert event.payload == payload  # what the rollout automation templates: the version and the plan
        assert "**Hand-off:**" in artifacts(run_id)["drift-summary"].data
        again, _ = run(model, policy=str(policy))  # the server has it now: a rollout that does not start is a person's
        assert again.reannounced is None and "received watch-handoff:v2's announcement, yet no rollout" in \
            again.handoff[-1]
        assert len(prefect_events(model, expect=2, timeout_s=3, name="slm.candidate.published")) == 1
        assert len(audit(f"{model}:v2", "slm.candidate.reannounced")) == 1
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(automation_id)


@pytest.mark.parametrize("received", [False, True])
def test_a_trigger_the_server_never_received_does_not_hold_the_next_one_off(worlds, received):
    """The monitor recorded its trigger an hour ago and died before the event left its queue: the server has no
    such event, no retrain answers it, so drift now fires again instead of waiting out the 6 h cooldown; the
    server's own record is read. A trigger the server did receive holds the next one off, as before."""
    from datetime import timedelta

    from prefect.events import emit_event

    from registry.service import open_registry
    from registry.store import RegistryStore
    from tasks.events import prefect_api, resource

    spec, w, _ = worlds
    model = f"watch-lost-{int(received)}"
    champion(model, w.before_train)
    sample = w.drifted_labelled[:1200]
    log_traffic(model, sample, [spec.before_labels[i % 5] for i in range(len(sample))])
    payload = {"model": model, "monitor_run": f"monitor-run-that-died-{int(received)}", "reason": "drift"}
    with open_registry() as reg:
        an_hour_ago = RegistryStore(reg.store.engine, clock=lambda: datetime.now(UTC) - timedelta(hours=1))
        an_hour_ago.append_audit(actor="monitor-flow", action="slm.drift.detected", subject=model,
                                 payload={**payload, "prefect_api": prefect_api()})
    if received:
        emit_event(event="slm.drift.detected", resource=resource(model), payload=payload,
                   occurred=datetime.now(UTC) - timedelta(hours=1))
        assert len(prefect_events(model, expect=1)) == 1
    outcome, _ = run(model)
    assert outcome.verdict == "fail" and outcome.event is not received, outcome.action
    assert len(audit(model, "slm.drift.detected")) == (1 if received else 2)
    assert len(prefect_events(model, expect=2, timeout_s=5)) == 1  # the new trigger's event, or the received one
    if received:
        assert outcome.action.startswith("trigger suppressed: cooldown")
