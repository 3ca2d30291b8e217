"""The local stack of ``slm up``: a Prefect server, the work pool, the deployments of prefect.yaml (with their
automations), a worker and the gateway — each a real process, their pids recorded so ``slm down`` stops
exactly what ``slm up`` started. One more automation watches every flow run: a run that goes silent (killed with
SIGKILL, its machine lost) is marked Crashed after ``SLM_CRASH_AFTER_S`` (``crash_automation``).

Prefect's own state lives under ``SLM_HOME/prefect`` (SQLite); give ``database_url`` (a
``postgresql+asyncpg://`` URL) to put the Prefect server on PostgreSQL instead. The record is
``SLM_HOME/run/stack.json``; each process logs to ``SLM_HOME/run/<name>.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from lifecycle.files import write_bytes_atomic
from lifecycle.handoff import same_server
from lifecycle.settings import get_settings, project_root

POOL = "slm-local"
#: Every process of the stack (worker, its flow runs, the gateway) sends a flow-run heartbeat this often: Prefect's
#: minimum (its default is 180 s).
HEARTBEAT_S = 30
CRASH_AUTOMATION = "slm: mark unresponsive flow runs Crashed"


class StackError(RuntimeError):
    """A part of the stack did not come up; the message says which and where its log is."""


@dataclass
class StackRecord:
    api_url: str
    ui_url: str
    gateway_url: str | None
    pids: dict[str, int] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    #: each pid's start time (``/proc/<pid>/stat``): a pid the system reused for another process is not ours
    started: dict[str, str] = field(default_factory=dict)

    def running(self, name: str) -> bool:
        """Is the process recorded as ``name`` still the one `slm up` started?"""
        pid = self.pids[name]
        return _alive(pid) and (name not in self.started or _start_time(pid) in (None, self.started[name]))


def run_dir() -> Path:
    path = get_settings().home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_path() -> Path:
    return run_dir() / "stack.json"


def read_record() -> StackRecord | None:
    path = record_path()
    if not path.is_file():
        return None
    try:
        return StackRecord(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise StackError(f"{path} is damaged ({exc}); stop the stack's processes by hand (their logs are in "
                         f"{path.parent}) and delete it") from None


def _write_record(record: StackRecord) -> None:
    write_bytes_atomic(record_path(), json.dumps(asdict(record), indent=2).encode())


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux); None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in parentheses may hold spaces


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stack_env(api_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every process of the stack shares: one SLM_HOME, one Prefect API, one torch thread."""
    settings = get_settings()
    env = dict(os.environ)
    env.update({"SLM_HOME": str(settings.home), "PREFECT_API_URL": api_url,
                "PREFECT_HOME": str(settings.home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                # The worker asks for work every 2 s, not 10: waiting must not be what a demo measures. (1 s was
                # tried: ~0.5 s less per flow run, more writers on the server's SQLite; not worth it.)
                "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)})
    env.update(extra or {})
    return env


def crash_automation(after_s: float) -> dict:
    """The automation that marks a flow run Crashed once it has gone ``after_s`` seconds without a heartbeat or a
    state change (the body of Prefect's ``POST /automations/``).

    A flow run killed with SIGKILL (an out-of-memory kill, a lost worker machine, ``kill -9``) reports nothing and
    would stay Running for ever — and while a retrain stays Running the drift monitor holds off every trigger
    (lifecycle.drift_policy.decide_trigger), so one killed retrain would stop the loop. This is Prefect's
    zombie-run automation (a proactive trigger per flow run), with two additions: the Running state arms it too
    (a run killed before its first heartbeat reached the server is caught), and the states a live run may sit in
    without heartbeats (scheduled for a retry, suspended) answer it.
    """
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    answers = {f"prefect.flow-run.{state}" for state in (
        "heartbeat", "Completed", "Failed", "Cancelled", "Crashed", "TimedOut", "Cancelling", "Paused", "Suspended",
        "AwaitingRetry", "Scheduled")}
    core = AutomationCore(
        name=CRASH_AUTOMATION,
        description=f"A flow run that sends no heartbeat (every {HEARTBEAT_S} s from the stack's processes, 180 s "
                    f"from Prefect's default) and no state for {after_s:g} s is dead: mark it Crashed.",
        trigger=EventTrigger(after={"prefect.flow-run.heartbeat", "prefect.flow-run.Running"}, expect=answers,
                             match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
                             for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                             within=timedelta(seconds=after_s)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {after_s:g} s: the flow run's process is gone")])
    return core.model_dump(mode="json")


def ensure_crash_automation(api_url: str, after_s: float) -> None:
    """Create (or replace: the window may have changed) the stack's crash automation on this Prefect server."""
    with httpx.Client(base_url=api_url, timeout=30) as api:
        found = _api(api, "POST", "/automations/filter",
                     json={"automations": {"name": {"any_": [CRASH_AUTOMATION]}}}).json()
        for automation in found:
            _api(api, "DELETE", f"/automations/{automation['id']}")
        _api(api, "POST", "/automations/", json=crash_automation(after_s))


def _spawn(name: str, argv: list[str], env: dict[str, str], record: StackRecord) -> subprocess.Popen:
    log = run_dir() / f"{name}.log"
    handle = log.open("ab")
    # A session of its own: `slm down` signals the whole group (a worker's flow-run children too).
    proc = subprocess.Popen(argv, cwd=project_root(), env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)
    record.pids[name], record.logs[name] = proc.pid, str(log)
    if (started := _start_time(proc.pid)) is not None:
        record.started[name] = started
    _write_record(record)
    return proc


def check_port_free(port: int, what: str) -> None:
    """Refuse a port something already listens on: a server started there would exit at once, while the other
    one answered the health check in its place (another `slm up` home's, a `slm demo --keep` stack, a bare
    `prefect server start`), and the stack would deploy to it and share its work pool."""
    with socket.socket() as sock:
        # As the servers bind (uvicorn sets it): a port whose last connections are only in TIME_WAIT (for a minute
        # after `slm down`) is free; one with a listener on 127.0.0.1, 0.0.0.0 or :: is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise StackError(f"port {port} for {what} is in use ({exc.strerror}): stop what listens there "
                             f"(`slm down` in its home, `ss -ltnp 'sport = :{port}'` names it), or choose "
                             "another port") from None


def _wait_http(url: str, name: str, proc: subprocess.Popen, log: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{name} exited with code {proc.returncode}; see {log}")
        try:
            answered = httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            answered = False
        if answered:
            if proc.poll() is None:
                return
            raise StackError(f"{name} exited with code {proc.returncode} while something else answered {url}; "
                             f"see {log}")
        time.sleep(0.5)
    raise StackError(f"{name} did not answer {url} within {timeout_s:.0f} s; see {log}")


def _prefect(args: list[str], env: dict[str, str], what: str) -> str:
    return _prefect_wait(_prefect_start(args, env), args, what)


def _prefect_start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "prefect", *args], cwd=project_root(), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _prefect_wait(proc: subprocess.Popen, args: list[str], what: str) -> str:
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise StackError(f"{what} failed (prefect {' '.join(args)}):\n{out[-2000:]}{err[-2000:]}")
    return out


def _ensure_pool(env: dict[str, str]) -> None:
    """Create the work pool unless it exists: one CLI call, not a listing and then a creation (an existing
    pool, perhaps with a job template a user edited, is left as it is)."""
    args = ["work-pool", "create", POOL, "--type", "process"]
    proc = _prefect_start(args, env)
    try:
        _prefect_wait(proc, args, f"creating work pool {POOL}")
    except StackError as exc:
        if "already exists" not in str(exc):
            raise


def up(*, prefect_port: int = 4200, gateway_port: int | None = 8000, worker: bool = True,
       database_url: str | None = None, status=print, while_deploying: Callable[[], object] | None = None
       ) -> StackRecord:
    """Start everything (refused if a recorded stack is still running: `slm down` first).

    ``while_deploying``: work that needs only the server (the demo's bootstrap), done while ``prefect deploy``
    and the worker start in their own processes; one CLI start-up (~3-5 s on 2 busy cores) is not waited twice.
    """
    existing = read_record()
    if existing and any(existing.running(name) for name in existing.pids):
        raise StackError(f"a stack is already up (UI {existing.ui_url}); run `slm down` first")
    check_port_free(prefect_port, "the Prefect server")
    if gateway_port:
        check_port_free(gateway_port, "the gateway")
    api_url = f"http://127.0.0.1:{prefect_port}/api"
    record = StackRecord(api_url=api_url, ui_url=f"http://127.0.0.1:{prefect_port}",
                         gateway_url=f"http://127.0.0.1:{gateway_port}" if gateway_port else None)
    env = stack_env(api_url, {"PREFECT_API_DATABASE_CONNECTION_URL": database_url} if database_url else None)
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    try:
        status(f"Prefect server on {record.ui_url} ({'PostgreSQL' if database_url else 'SQLite'})")
        server = _spawn("prefect-server", [sys.executable, "-m", "prefect", "server", "start", "--host",
                                           "127.0.0.1", "--port", str(prefect_port)], env, record)
        _wait_http(f"{api_url}/health", "the Prefect server", server, record.logs["prefect-server"], 180)
        status(f"work pool {POOL} (process) and the deployments of prefect.yaml, with their automations")
        _ensure_pool(env)
        ensure_crash_automation(api_url, get_settings().crash_after_s)
        deploy_args = ["--no-prompt", "deploy", "--all"]
        deploying = _prefect_start(deploy_args, env)
        try:
            if worker:
                status(f"worker on {POOL}")
                _spawn("worker", [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL], env, record)
            if while_deploying is not None:
                while_deploying()
        except BaseException:
            deploying.kill()
            deploying.communicate()
            raise
        _prefect_wait(deploying, deploy_args, "deploying prefect.yaml")
        if gateway_port:
            status(f"gateway on {record.gateway_url}/v1")
            start_gateway(record, gateway_port)
    except BaseException:
        down(status=lambda _m: None)
        raise
    return record


def hold_schedules(api_url: str, deployments: list[str]) -> None:
    """Deactivate the schedules of these deployments (``flow/deployment``) and delete their scheduled runs.

    For stories that start those runs themselves (`slm demo`, the stack tests): a monitor run at :15 with the
    production policy would otherwise start a retrain of its own in the middle of them.
    """
    with httpx.Client(base_url=api_url, timeout=30) as api:
        for name in deployments:
            flow, deployment = name.split("/", 1)
            body = _api(api, "GET", f"/deployments/name/{flow}/{deployment}").json()
            for schedule in body.get("schedules", []):
                _api(api, "PATCH", f"/deployments/{body['id']}/schedules/{schedule['id']}", json={"active": False})
            runs = _api(api, "POST", "/flow_runs/filter", json={
                "deployments": {"id": {"any_": [body["id"]]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
            for run in runs.json():
                _api(api, "DELETE", f"/flow_runs/{run['id']}")


def _api(api: httpx.Client, method: str, url: str, attempts: int = 6, **kwargs) -> httpx.Response:
    """One Prefect API call, retried while the server answers 503: on SQLite a write that meets another
    writer's lock (the scheduler filling in runs of the deployments just created, a flow run starting) is
    answered 503 and succeeds a moment later."""
    for attempt in range(attempts):
        response = api.request(method, url, **kwargs)
        if response.status_code != 503 or attempt == attempts - 1:
            response.raise_for_status()
            return response
        time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def start_gateway(record: StackRecord, port: int) -> StackRecord:
    """Add the gateway to a running stack (it needs a champion in the registry: `slm bootstrap`)."""
    check_port_free(port, "the gateway")
    record.gateway_url = f"http://127.0.0.1:{port}"
    gateway = _spawn("gateway", [sys.executable, "-m", "slm_cli.main", "serve", "--port", str(port)],
                     stack_env(record.api_url), record)
    _wait_http(f"{record.gateway_url}/readyz", "the gateway", gateway, record.logs["gateway"], 180)
    return record


def down(*, status=print, timeout_s: float = 20.0) -> list[str]:
    """Stop what `slm up` recorded: SIGTERM to each recorded process group, SIGKILL after ``timeout_s`` — the
    gateway, the worker, then the flow runs the worker started (:func:`stop_flow_runs`: the worker no longer
    reports on them), then the server."""
    record = read_record()
    if record is None:
        return []
    stopped = []
    for name, pid in reversed(list(record.pids.items())):  # gateway and worker before the server
        if name == "prefect-server" and record.running(name):
            stopped += stop_flow_runs(record.api_url, status=status, timeout_s=timeout_s)
        elif name == "prefect-server" and "worker" in record.pids:
            status("the Prefect server is not running, so the flow runs its worker started cannot be listed: any "
                   "still running were not stopped (`ps -eo pid,args | grep prefect` finds them)")
        if not record.running(name):  # gone, or its pid now belongs to another process: not ours to signal
            continue
        if not _stop_group(pid, timeout_s):
            continue
        stopped.append(name)
        status(f"stopped {name} (pid {pid})")
    record_path().unlink(missing_ok=True)
    return stopped


ACTIVE_RUNS = ["RUNNING", "PENDING", "PAUSED", "CANCELLING"]


def stop_flow_runs(api_url: str, *, status=print, timeout_s: float = 20.0) -> list[str]:
    """Stop the flow runs a worker of this host started, and mark them Cancelled.

    A process worker starts each flow run in a session of its own, so signalling the worker's group leaves them
    running: a retrain would go on writing to the registry after `slm down`, a rollout waiting for an approval
    would wait for hours. Each active run whose process (its ``infrastructure_pid``) is here and carries the run's
    id in its environment (``PREFECT__FLOW_RUN_ID``: never a process that reused the pid) gets SIGTERM to its
    group, SIGKILL after ``timeout_s``, then the state Cancelled, with the reason. A rollout so stopped resumes
    from its stored state when run again; a retrain starts over."""
    try:
        with httpx.Client(base_url=api_url, timeout=10) as api:
            runs = _api(api, "POST", "/flow_runs/filter",
                        json={"flow_runs": {"state": {"type": {"any_": ACTIVE_RUNS}}}}).json()
    except httpx.HTTPError as exc:
        status(f"could not list the flow runs ({type(exc).__name__}: {exc}): any still running were not stopped")
        return []
    stopped = []
    for run in runs:
        pid = str(run.get("infrastructure_pid") or "")
        if not pid.isdigit() or not _runs_flow_run(int(pid), run["id"], api_url):
            continue
        _stop_group(int(pid), timeout_s)
        stopped.append(f"flow run {run['name']}")
        status(f"stopped flow run {run['name']} (pid {pid}); {_mark_cancelled(api_url, run['id'])}; "
               f"{_rerun_hint(api_url, run)}")
    return stopped


def _rerun_hint(api_url: str, run: dict) -> str:
    """What to run once the stack is up again: a stopped rollout resumes from its stored state; a stopped retrain's
    trigger holds the next one off for the monitor's cooldown, so it is not restarted by itself."""
    params = (run.get("parameters") or {}).get("params")
    if isinstance(params, dict) and params.get("version"):
        return f"resume it with `slm rollout run {params['version']}`"
    try:
        with httpx.Client(base_url=api_url, timeout=10) as api:
            flow = _api(api, "GET", f"/flows/{run['flow_id']}").json().get("name")
    except (httpx.HTTPError, KeyError):
        flow = None
    if flow == "retrain":
        return ("start it again with `slm retrain` (the drift trigger that started it holds the next one off for the "
                "monitor's cooldown)")
    return f"start it again from the Prefect UI ({flow or 'its deployment'}) if it should finish"


def _mark_cancelled(api_url: str, run_id: str) -> str:
    """Cancelled, unless the run reached an end of its own meanwhile (it finished while its process was being
    stopped); says what it did."""
    try:
        with httpx.Client(base_url=api_url, timeout=10) as api:
            state = (_api(api, "GET", f"/flow_runs/{run_id}").json().get("state") or {}).get("type")
            if state not in ACTIVE_RUNS:
                return f"it ended {str(state).lower()} on its own"
            _api(api, "POST", f"/flow_runs/{run_id}/set_state", json={"force": True, "state": {
                "type": "CANCELLED", "name": "Cancelled", "message": "stopped by `slm down`"}})
    except httpx.HTTPError as exc:
        return f"could not mark it Cancelled ({type(exc).__name__}): the crash automation will mark it Crashed"
    return "marked it Cancelled"


def _runs_flow_run(pid: int, run_id: str, api_url: str) -> bool:
    """Is ``pid`` the process of flow run ``run_id``, started for this stack's server (its environment says so: a
    pid the system gave to another process, or a run of another home whose server shares the database, is not)?"""
    try:
        environ = dict(item.partition(b"=")[::2] for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return False
    server = environ.get(b"PREFECT_API_URL")  # absent: the worker passed its settings some other way
    return (environ.get(b"PREFECT__FLOW_RUN_ID") == run_id.encode()
            and (server is None or same_server(server.decode(errors="replace"), api_url)))


def _stop_group(pid: int, timeout_s: float) -> bool:
    """SIGTERM to the process group ``pid`` leads, SIGKILL after ``timeout_s``; False if it was gone already."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _reap(pid)
    return True


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie (which `kill 0` calls alive)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
