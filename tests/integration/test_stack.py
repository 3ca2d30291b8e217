"""The loop closes by itself on a real local stack: `slm up` (Prefect server, work pool, the deployments and
automations of prefect.yaml, a worker), a tiny champion, the gateway, drifted traffic through it, the
monitor deployment — and the automation starts a retrain flow run with the drift event's parameters,
which the worker runs to a registered version. Nothing here calls the retrain flow. And a retrain run killed with
SIGKILL is marked Crashed by the stack's crash automation, so it stops holding off the monitor's triggers.
"""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

MODEL = "intent-router"  # the model the shared stack's tiny configs name (conftest STACK_MODEL)


def on_stack(record):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: record.api_url})


def test_drifted_traffic_makes_the_automation_start_a_retrain(stack, tiny_drifted_pairs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
    from prefect.deployments import run_deployment

    from flows.bootstrap import BootstrapParams, bootstrap
    from serving.loadgen import LoadGenerator
    from serving.server import free_port
    from slm_cli.stack import start_gateway

    record, configs = stack
    with on_stack(record):
        # A tiny champion, through the stack's Prefect server.
        assert bootstrap(BootstrapParams(model=MODEL, task=str(configs / "task.yaml"),
                                         base_model=str(configs / "base_model.yaml"))).created
        start_gateway(record, free_port())
        with LoadGenerator(record.gateway_url, tiny_drifted_pairs, model=MODEL, threads=3) as users:
            while users.counts["requests"] < 1200:  # the policy decides from 1000 served answers up
                time.sleep(0.5)
        assert users.counts["errors"] == 0
        time.sleep(1)  # the gateway's prediction writer flushes every 0.2 s

        monitor = run_deployment("monitor/monitor", timeout=300, parameters={
            "params": {"model": MODEL, "hours": 1, "policy": str(configs / "monitor.yaml")}})
        assert monitor.state.is_completed(), monitor.state

        with get_client(sync_client=True) as client:
            retrain_runs = []
            for _ in range(120):  # the automation reacts within seconds; the worker polls every 2 s
                retrain_runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["retrain"])))
                if retrain_runs and retrain_runs[0].state.is_final():
                    break
                time.sleep(2)
            assert len(retrain_runs) == 1, "the drift event started no retrain (or more than one)"
            run = retrain_runs[0]
            params = run.parameters["params"]
            assert params["config"] == str(configs / "retrain.yaml")
            # The policy names no drop: blank, so the retrain config's (its default: SLM_HOME/data/drifted-labelled)
            assert params["data"] in ("", None) and params["model"] == MODEL
            assert params["reason"].startswith("drift")
            assert run.state.is_completed(), f"{run.state}: see {record.logs['worker']}"
            # and the monitor's own run is the one that reported the drift
            monitor_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id={"any_": [monitor.id]}))
            assert monitor_runs[0].state.is_completed()

    from registry.service import open_registry

    with open_registry() as reg:
        v2 = reg.store.get_version(MODEL, 2)
        assert v2.lineage.trigger.startswith("drift")
        assert any(d.source.endswith("drifted-labelled.jsonl") for d in v2.lineage.datasets)  # the config's drop
        seq = {(e.action, e.subject): e.seq for e in reg.store.audit_events()}
        assert seq[("slm.drift.detected", MODEL)] < seq[("version.registered", f"{MODEL}:v2")]


def test_a_killed_flow_run_is_marked_crashed_and_holds_off_drift_triggers_no_longer(stack, tmp_path):
    """A retrain run killed with SIGKILL (an OOM kill, a lost worker) reports no final state: without the stack's
    crash automation it stays Running for ever, and the monitor holds off every drift trigger while a retrain runs."""
    import subprocess
    import sys
    import textwrap
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.objects import StateType

    from slm_cli.stack import CRASH_AUTOMATION, stack_env
    from tasks.monitor import running_retrain_since
    from tests.integration.conftest import CRASH_AFTER_S

    record, _ = stack
    script = tmp_path / "stuck_retrain.py"
    script.write_text(textwrap.dedent("""
        import time

        from prefect import flow


        @flow(name="retrain")
        def stuck():
            time.sleep(900)


        stuck()
    """))
    retrains = FlowFilter(name=FlowFilterName(any_=["retrain"]))
    with on_stack(record), get_client(sync_client=True) as client:
        [automation] = client.read_automations_by_name(CRASH_AUTOMATION)  # `slm up` set it, with the window asked
        assert automation.trigger.within.total_seconds() == CRASH_AFTER_S
        before = {r.id for r in client.read_flow_runs(flow_filter=retrains)}
        proc = subprocess.Popen([sys.executable, str(script)], env=stack_env(record.api_url),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not (new := [r for r in client.read_flow_runs(flow_filter=retrains) if r.id not in before
                               and r.state_type == StateType.RUNNING]):
                assert proc.poll() is None and time.monotonic() < deadline, "the stuck retrain never ran"
                time.sleep(1)
        finally:
            proc.kill()
            proc.wait()
        [run] = new
        killed = time.monotonic()
        assert running_retrain_since(datetime.now(UTC)) is not None  # dead, yet "Running": it holds off triggers
        while (state := client.read_flow_run(run.id).state).type != StateType.CRASHED:
            assert time.monotonic() < killed + CRASH_AFTER_S + 120, f"still {state.name} after the kill"
            time.sleep(3)
        assert "no heartbeat" in state.message
        assert running_retrain_since(datetime.now(UTC)) is None  # the monitor may trigger a retrain again
    print(f"\nkilled retrain run marked Crashed {time.monotonic() - killed:.0f} s after the kill "
          f"(window {CRASH_AFTER_S} s)")
