"""The stack's Prefect API calls ride out the 503 a busy SQLite server answers, and give up on anything else."""

import httpx
import pytest

from slm_cli import stack


def client(statuses):
    seen = []

    def handler(request):
        seen.append(request.method)
        return httpx.Response(statuses[min(len(seen), len(statuses)) - 1], json={})

    return httpx.Client(base_url="http://prefect.test/api", transport=httpx.MockTransport(handler)), seen


def test_a_503_is_retried_until_the_write_goes_through(monkeypatch):
    monkeypatch.setattr(stack.time, "sleep", lambda _s: None)
    api, seen = client([503, 503, 200])
    assert stack._api(api, "PATCH", "/deployments/x/schedules/y", json={"active": False}).status_code == 200
    assert seen == ["PATCH"] * 3


def test_other_errors_and_a_lasting_503_raise(monkeypatch):
    monkeypatch.setattr(stack.time, "sleep", lambda _s: None)
    api, seen = client([404])
    with pytest.raises(httpx.HTTPStatusError):
        stack._api(api, "GET", "/deployments/name/a/b")
    assert seen == ["GET"]
    api, seen = client([503])
    with pytest.raises(httpx.HTTPStatusError):
        stack._api(api, "GET", "/deployments/name/a/b", attempts=3)
    assert len(seen) == 3


def test_the_crash_automation_watches_every_flow_run_for_silence():
    from prefect.events.schemas.automations import AutomationCore, Posture

    body = stack.crash_automation(600)
    automation = AutomationCore.model_validate(body)  # what the server validates the POST against
    trigger = automation.trigger
    assert trigger.posture == Posture.Proactive and trigger.within.total_seconds() == 600
    assert trigger.for_each == {"prefect.resource.id"}  # one window per flow run
    assert trigger.after == {"prefect.flow-run.heartbeat", "prefect.flow-run.Running"}
    # A heartbeat re-arms the window; a final state or a heartbeat-less wait (a retry, a suspension) answers it.
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Crashed",
            "prefect.flow-run.AwaitingRetry", "prefect.flow-run.Suspended"} <= trigger.expect
    assert [(a.type, a.state.value) for a in automation.actions] == [("change-flow-run-state", "CRASHED")]


def test_setting_the_crash_automation_replaces_the_old_one():
    seen = []

    def handler(request):
        seen.append((request.method, request.url.path))
        found = [{"id": "old-1"}] if request.url.path.endswith("/filter") else {}
        return httpx.Response(200, json=found)

    real = httpx.Client
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stack.httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(handler), **kw))
        stack.ensure_crash_automation("http://prefect.test/api", 120)
    assert seen == [("POST", "/api/automations/filter"), ("DELETE", "/api/automations/old-1"),
                    ("POST", "/api/automations/")]


def test_a_crash_window_shorter_than_three_heartbeats_is_refused_by_name(monkeypatch):
    from pydantic import ValidationError

    from lifecycle.settings import get_settings

    monkeypatch.setenv("SLM_CRASH_AFTER_S", "45")
    with pytest.raises(ValidationError, match=r"crash_after_s\n  Input should be greater than or equal to 90"):
        get_settings()
    monkeypatch.setenv("SLM_CRASH_AFTER_S", "120")
    assert get_settings().crash_after_s == 120


def test_down_signals_only_the_processes_up_started(tmp_path, monkeypatch):
    """A recorded pid the system gave to another process (after a reboot or crash) is not stopped; a damaged
    record is a clear error."""
    import subprocess
    import sys

    from slm_cli import stack

    monkeypatch.setenv("SLM_HOME", str(tmp_path))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        ours = stack.StackRecord(api_url="-", ui_url="-", gateway_url=None, pids={"gateway": other.pid},
                                 started={"gateway": "1"})  # another start time: the pid was reused
        stack._write_record(ours)
        assert not ours.running("gateway") and stack.down(timeout_s=1) == []
        assert other.poll() is None  # still alive: never signalled
        mine = stack.StackRecord(api_url="-", ui_url="-", gateway_url=None, pids={"gateway": other.pid},
                                 started={"gateway": stack._start_time(other.pid)})
        stack._write_record(mine)
        assert stack.down(timeout_s=5) == ["gateway"] and other.wait(timeout=10) is not None
    finally:
        other.kill()
        other.wait()
    stack.record_path().write_text('{"api_url": ')
    with pytest.raises(stack.StackError, match="damaged"):
        stack.read_record()


def test_up_refuses_a_port_something_already_listens_on(tmp_path, monkeypatch):
    """Another server on the port (another home's stack, a `slm demo --keep` one) answered the health check in
    place of ours, which exited: the stack deployed to it and shared its work pool."""
    import socket

    monkeypatch.setenv("SLM_HOME", str(tmp_path))
    spawned = []
    monkeypatch.setattr(stack, "_spawn", lambda *a, **k: spawned.append(a))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(stack.StackError, match=f"port {port} for the Prefect server is in use"):
            stack.up(prefect_port=port, gateway_port=None, worker=False)
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            free_port = free.getsockname()[1]
        with pytest.raises(stack.StackError, match=f"port {port} for the gateway is in use"):
            stack.up(prefect_port=free_port, gateway_port=port, worker=False)
    assert spawned == [] and stack.read_record() is None
