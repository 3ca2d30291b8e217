"""`slm down` stops the flow runs its worker started: a process worker runs each in a session of its own, which
signalling the worker's group never reached (a retrain went on writing to the registry, a rollout waiting for an
approval waited for hours). Against the session's real Prefect server; the flow-run processes are stand-ins that
carry the environment a worker gives them."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.prefect]


def flow_run_process(run_id: str, api_url: str) -> subprocess.Popen:
    """A stand-in for a flow run's process, with the environment a worker gives it."""
    import os

    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True,
                            env={**os.environ, "PREFECT__FLOW_RUN_ID": run_id, "PREFECT_API_URL": api_url})


def test_down_stops_the_worker_started_flow_runs_and_marks_them_cancelled(prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Completed, Running

    from slm_cli.stack import stop_flow_runs

    @flow(name="stand-in")
    def stand_in() -> None: ...

    with get_client(sync_client=True) as client:
        api = PREFECT_API_URL.value()
        ours, other, elsewhere = (client.create_flow_run(stand_in) for _ in range(3))
        for run in (ours, other, elsewhere):
            client.set_flow_run_state(run.id, Running(), force=True)
        mine = flow_run_process(str(ours.id), api)
        stranger = flow_run_process("not-this-run", api)  # a process that reused the pid the other run recorded
        neighbour = flow_run_process(str(elsewhere.id), "http://127.0.0.1:4300/api")  # another home's server
        client.update_flow_run(ours.id, infrastructure_pid=str(mine.pid))
        client.update_flow_run(other.id, infrastructure_pid=str(stranger.pid))
        client.update_flow_run(elsewhere.id, infrastructure_pid=str(neighbour.pid))
        said: list[str] = []
        try:
            stopped = stop_flow_runs(api, status=said.append, timeout_s=5)
            assert mine.wait(timeout=10) is not None and stranger.poll() is None and neighbour.poll() is None
            assert stopped == [f"flow run {ours.name}"] and "marked it Cancelled" in said[0]
            assert "start it again from the Prefect UI (stand-in)" in said[0]  # what to do once the stack is back
            cancelled = client.read_flow_run(ours.id).state
            assert cancelled.type is StateType.CANCELLED and cancelled.message == "stopped by `slm down`"
            assert client.read_flow_run(other.id).state.type is StateType.RUNNING
        finally:
            for proc in (mine, stranger, neighbour):
                proc.kill()
                proc.wait()
            for run in (other, elsewhere):  # the session's server is shared
                client.set_flow_run_state(run.id, Completed(), force=True)
