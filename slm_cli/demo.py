"""`slm demo`: the whole lifecycle, told on the same local stack a user starts with `slm up`.

The story, each step a real component (nothing here calls the retrain or rollout flow):

1. up: Prefect server (SQLite), work pool, the deployments and automations of prefect.yaml, a worker;
2. bootstrap, while the deployments are created: the offline base model becomes champion v1 (built once, cached
   under SLM_CACHE_DIR);
3. traffic: the gateway, and simulated users who ask the old intents and send feedback on each answer;
4. drift: the users start asking about the new products; the monitor deployment sees it and emits
   ``slm.drift.detected``; the automation starts the retrain deployment on the worker;
5. the retrain publishes a candidate; ``slm.candidate.published`` starts the rollout deployment, which takes
   the candidate through shadow and canary stages to champion on live traffic;
6. a data scientist launches a quick retrain (configs/recipe_lora-quick.yaml: fewer steps) from the deployment (as
   from the UI's form) on the drifted drop alone, judged by a gate that sees the new intents only: it passes, goes
   live (the demo's shadow stage rules out a broken model only) and the canary's users roll it back;
7. decommission: the retention policy retires what it may;
8. the end: audit chain, a summary table, the report, where the UI is.

Each run starts from a fresh home (``<SLM_HOME>/demo``; the built base model is shared through the cache), so
the story is the same every time. ``--smoke`` tells it with the same model and retrains but a quarter of the
traffic and a smaller rollout plan (the test suite runs it); ``--keep`` leaves the stack up to look around.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from slm_cli.console import make_console

MODEL = "intent-router"


@dataclass(frozen=True)
class Scale:
    """How big the story is: the configs it runs with and how much traffic it sends."""

    name: str
    task: str
    base_model: str
    retrain: str
    monitor: str
    rollout: str
    blind_gate: str
    quick_recipe: str  # the data scientist's quick experiment (the forgetful retrain)
    retention: str
    before_requests: int  # old-world traffic before the drift
    # Drifted traffic before the monitor's run is started: with the old-world traffic, at least the policy's
    # min_rows (tests/unit/cli/test_demo.py); the traffic that flows while the run starts adds to it.
    drift_requests: int
    drifted_share: float  # of the prompts once the world drifted
    # Concurrent users in flight: the gateway batches what queues (max_batch 32), so 16 callers get ~1.5x the
    # answers per second of 8 on 2 busy cores (measured 2026-11-27: 8 -> 26-35/s, 16 -> 48/s, 24 -> 49-50/s,
    # 48 -> 46/s), and every traffic-bound step (drift, rollout stages) is that much shorter.
    threads: int
    users: int = 2000


FULL = Scale("full", task="configs/task.yaml", base_model="configs/base_model.yaml", retrain="configs/retrain.yaml",
             monitor="configs/monitor.yaml", rollout="configs/rollout-demo.yaml",
             blind_gate="configs/gate-drifted-only.yaml", quick_recipe="configs/recipe_lora-quick.yaml",
             retention="configs/retention-demo.yaml", before_requests=400, drift_requests=600, drifted_share=0.4,
             threads=16)
# The same model and retrains (their outcomes are what the story is about), a quarter of the traffic.
SMOKE = Scale("smoke", task=FULL.task, base_model=FULL.base_model, retrain=FULL.retrain,
              monitor="configs/smoke/monitor.yaml", rollout="configs/smoke/rollout.yaml",
              blind_gate=FULL.blind_gate, quick_recipe=FULL.quick_recipe, retention=FULL.retention,
              before_requests=100, drift_requests=200,
              drifted_share=0.4, threads=8, users=500)


class DemoError(RuntimeError):
    """A step of the story did not happen; the message says which and where to look."""


@dataclass
class StoryResult:
    """What happened, for the summary, the smoke test and bench/RESULTS.md."""

    home: str
    ui_url: str
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds
    runs: dict[str, str] = field(default_factory=dict)  # what -> flow run name and final state
    rollouts: dict[str, str] = field(default_factory=dict)  # version -> phase at stage
    retired: list[str] = field(default_factory=list)
    requests: int = 0
    client_errors: int = 0
    audit_ok: bool = False
    audit_events: int = 0
    report: str | None = None


def demo_home() -> Path:
    """``<SLM_HOME>/demo``: the demo's own registry, artifacts and Prefect database, fresh each run."""
    from lifecycle.settings import get_settings

    return get_settings().home / "demo"


def _port(preferred: int) -> int:
    """``preferred`` when it is free (the UI link stays the familiar one), else any free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def _fresh_home(console: Console) -> Path:
    """Stop a stack a previous `slm demo --keep` left, then start the demo's home afresh, sharing the cache."""
    from lifecycle.settings import get_settings

    settings = get_settings()
    home = demo_home()
    os.environ.setdefault("SLM_CACHE_DIR", str(settings.cache))
    os.environ["SLM_HOME"] = str(home)
    from slm_cli import stack

    if stack.read_record() is not None:
        console.print("   stopping the stack a previous `slm demo --keep` left running")
        stack.down(status=lambda _m: None)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return home


class Story:
    """One telling of the story against a running stack (see the module docstring)."""

    def __init__(self, scale: Scale, console: Console, record) -> None:
        self.scale, self.console, self.record = scale, console, record
        self.result = StoryResult(home=os.environ["SLM_HOME"], ui_url=record.ui_url)
        self.load = None
        self._seen: dict[str, set] = {}

    # -- printing --------------------------------------------------------------------------------------------
    def step(self, number: int, text: str) -> None:
        self.console.print(f"[bold]{number}.[/bold] {text}")

    def note(self, text: str) -> None:
        self.console.print(f"   {text}")

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.result.steps[name] = round(time.perf_counter() - start, 1)

    def progress(self) -> Progress:
        return Progress(SpinnerColumn(), TextColumn("   {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=self.console, transient=True)

    # -- traffic ---------------------------------------------------------------------------------------------
    def start_traffic(self, prompts) -> None:
        from serving.loadgen import LoadGenerator

        self.load = LoadGenerator(self.record.gateway_url, prompts, model=MODEL, threads=self.scale.threads,
                                  users=self.scale.users, seed=0).start()

    def wait_requests(self, count: int, what: str) -> None:
        """Until ``count`` more answers came back, with a progress bar."""
        start = self.load.counts["requests"]
        with self.progress() as bar:
            task = bar.add_task(what, total=count)
            while (done := self.load.counts["requests"] - start) < count:
                bar.update(task, completed=done)
                self._check_traffic()
                time.sleep(0.3)
        time.sleep(0.5)  # the gateway's prediction writer flushes every 0.2 s

    @contextmanager
    def paused_traffic(self) -> Iterator[None]:
        self.load.pause()
        try:
            yield
        finally:
            self.load.resume()

    def _check_traffic(self) -> None:
        errors = self.load.counts["errors"]
        if errors > 50 and errors > self.load.counts["requests"]:
            raise DemoError(f"the gateway fails most requests ({errors} errors); see {self.record.logs['gateway']}")

    # -- Prefect ---------------------------------------------------------------------------------------------
    def run_deployment(self, name: str, parameters: dict, what: str):
        """Start a deployment's run (as the UI's Run button does) and follow it to its end."""
        from prefect.deployments import run_deployment

        run = run_deployment(name, parameters=parameters, timeout=0)
        self._seen.setdefault(name.split("/")[0], set()).add(run.id)
        return self.follow(run, what)

    def next_run(self, deployment: str, what: str, timeout_s: float = 300,
                 detail: Callable[[], tuple[str, int, int]] | None = None):
        """The run of ``deployment`` that an automation starts, once it appears; followed to its end."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

        seen = self._seen.setdefault(deployment, set())
        deadline = time.monotonic() + timeout_s
        with get_client(sync_client=True) as client, self.progress() as bar:
            task = bar.add_task(f"{what}: waiting for the automation", total=None)
            while time.monotonic() < deadline:
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=[deployment])))
                fresh = [r for r in runs if r.id not in seen]
                if fresh:
                    seen.add(fresh[0].id)
                    bar.remove_task(task)
                    break
                time.sleep(1)
            else:
                raise DemoError(f"no {deployment} run started within {timeout_s:.0f} s: the automation did not "
                                f"fire; see {self.record.logs['prefect-server']}")
        return self.follow(fresh[0], what, detail)

    def follow(self, run, what: str, detail: Callable[[], tuple[str, int, int]] | None = None):
        """Poll a flow run to a final state, showing its current task (or ``detail()``) while it runs."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.client.schemas.sorting import TaskRunSort

        with get_client(sync_client=True) as client, self.progress() as bar:
            task = bar.add_task(f"{what} ({run.name})", total=None)
            while True:
                run = client.read_flow_run(run.id)
                if run.state is not None and run.state.is_final():
                    break
                if detail is not None:
                    text, done, total = detail()
                    bar.update(task, description=f"{what} ({run.name}): {text}", completed=done, total=total)
                else:
                    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                                                  sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=1)
                    doing = tasks[0].name.rsplit("-", 1)[0] if tasks else (run.state.name if run.state else "…")
                    bar.update(task, description=f"{what} ({run.name}): {doing}")
                time.sleep(1)
        self.result.runs[what] = f"{run.name}: {run.state.name}"
        if not run.state.is_completed():
            raise DemoError(f"{what} ended {run.state.name}: {run.state.message}; see {self.record.logs['worker']}")
        return run

    def wait_grace(self, policy_file: str) -> None:
        """Let the newest version's settling age reach the policy's grace period (seconds, in the demo's policy):
        decommissioning a version that settled a moment ago is refused, by design."""
        from registry.service import open_registry
        from tasks.decommission import load_policy

        policy, _path = load_policy(policy_file)
        with open_registry() as registry:
            events = [e for e in registry.store.audit_events() if e.action == "version.status"]
        if events:
            settled = datetime.fromisoformat(events[-1].ts)
            wait = policy.retire_after_days * 86_400 + 1 - (datetime.now(UTC) - settled).total_seconds()
            if wait > 0:
                time.sleep(wait)

    # -- the registry ----------------------------------------------------------------------------------------
    def audit_after(self, action: str, seq: int):
        from registry.service import open_registry

        with open_registry() as registry:
            return [e for e in registry.store.audit_events() if e.action == action and e.seq > seq]

    def last_seq(self) -> int:
        from registry.service import open_registry

        with open_registry() as registry:
            events = registry.store.audit_events()
        return events[-1].seq if events else 0

    def rollout_detail(self, version: str) -> Callable[[], tuple[str, int, int]]:
        from lifecycle.names import VersionRef
        from registry.rollouts import get_rollout
        from registry.service import open_registry
        from tasks.rollout import read_plan

        ref, plan = VersionRef.parse(version), read_plan(self.scale.rollout)

        def detail() -> tuple[str, int, int]:
            with open_registry() as registry:
                state = get_rollout(registry.store, ref.model, ref.number)
            if state is None:
                return "starting", 0, len(plan.stages)
            stage = plan.stages[state.stage_index]
            return (f"{stage.name} ({stage.share} %) {state.phase}, {self.load.counts['requests']} requests",
                    state.stage_index, len(plan.stages))
        return detail

    def rollout_of(self, version: str) -> tuple[str, list[str]]:
        """Follow the rollout run that the candidate's event starts; its phase and the failed checks."""
        self.next_run("rollout", f"rollout of {version}", detail=self.rollout_detail(version))
        from lifecycle.names import VersionRef
        from registry.rollouts import get_rollout
        from registry.service import open_registry

        ref = VersionRef.parse(version)
        with open_registry() as registry:
            state = get_rollout(registry.store, ref.model, ref.number)
        plan_stage = state.history[-1].stage if state.history else "?"
        failed = [r for r in (state.history[-1].reasons if state.history else []) if r.startswith("[fail]")]
        self.result.rollouts[version] = f"{state.phase.replace('_', ' ')} at {plan_stage}"
        return state.phase, failed


def tell(scale: Scale, *, keep: bool = False, console: Console | None = None) -> StoryResult:
    """The whole story (module docstring); stops the stack at the end unless ``keep``."""
    console = console or make_console()
    from slm_cli.flows_cmd import prefect_env

    console.rule(f"[bold]slm-lifecycle demo[/bold]{' (smoke)' if scale.name == 'smoke' else ''}")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    home = _fresh_home(console)
    from slm_cli import stack

    start = time.perf_counter()
    port = _port(4200)
    # This process's flow runs (the bootstrap) go to the stack's server too; set before prefect is imported.
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    prefect_env()
    base = _Background(_warm_base(scale), "slm-demo-base")
    console.print(f"[bold]1.[/bold] up: the local stack of `slm up`, its state under {escape(str(home))}")
    booted: dict[str, object] = {}
    record = stack.up(prefect_port=port, gateway_port=None, status=lambda m: console.print(f"   {escape(m)}"),
                      while_deploying=lambda: booted.update(_bootstrap(scale, console, base)))
    story = Story(scale, console, record)
    story.result.steps["bootstrap"] = booted["seconds"]
    try:
        stack.hold_schedules(record.api_url, ["monitor/monitor", "decommission/decommission"])
        console.print("   the monitor's and decommission's schedules are paused for the story, which starts their "
                      "runs")
        story.result.steps["up"] = round(time.perf_counter() - start, 1)  # the bootstrap included: they overlap
        _tell(story)
    finally:
        if story.load is not None:
            story.load.stop()
            story.result.requests = story.load.counts["requests"]
            story.result.client_errors = story.load.counts["errors"]
        story.result.steps["total"] = round(time.perf_counter() - start, 1)
        if keep:
            console.print(f"the stack stays up: UI {record.ui_url}, gateway {record.gateway_url}/v1; stop it with "
                          f"`SLM_HOME={escape(str(home))} slm down`")
        else:
            stack.down(status=lambda _m: None)
    return story.result


class _Background:
    """``work`` on a daemon thread from now; :meth:`wait` joins it and raises what it raised."""

    def __init__(self, work: Callable[[], object], name: str) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], object]) -> None:
        try:
            work()
        except BaseException as exc:  # handed to wait()
            self._error = exc

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _warm_base(scale: Scale) -> Callable[[], object]:
    """The base model's build (the story's first run only: then it is cached), started before the Prefect server:
    it needs no server, and on 2 cores the server's, the deployment's and the worker's start-ups then overlap it
    instead of preceding it. tasks.bootstrap (Prefect with it) is imported here, on the main thread, after
    PREFECT_API_URL is set; the build's own imports (torch, transformers) run on its thread."""
    from lifecycle.settings import project_root
    from tasks.bootstrap import warm_base_cache

    root = project_root()
    return lambda: warm_base_cache(root / scale.task, root / scale.base_model)


def _bootstrap(scale: Scale, console: Console, base: _Background) -> dict[str, object]:
    """Step 2, run while `slm up` deploys and starts the worker: it needs only the Prefect server, and the base
    model that ``base`` builds meanwhile (at once when it is cached)."""
    from flows.bootstrap import BootstrapParams, bootstrap

    console.print("[bold]2.[/bold] bootstrap: the offline base model becomes champion v1 (built once, then cached), "
                  "while the deployments are created")
    begun = time.perf_counter()
    base.wait()
    outcome = bootstrap(BootstrapParams(model=MODEL, task=scale.task, base_model=scale.base_model))
    seconds = round(time.perf_counter() - begun, 1)
    console.print(f"   {outcome.champion} is champion ({seconds:.0f} s)")
    return {"champion": outcome.champion, "seconds": seconds}


def _tell(story: Story) -> None:
    from lifecycle.data import read_pairs
    from lifecycle.settings import get_settings
    from slm_cli import stack

    scale, result = story.scale, story.result
    with story.timed("traffic"):
        stack.start_gateway(story.record, _port(8000))
        data = get_settings().home / "data"
        before = read_pairs(data / "golden-before.jsonl")
        drifted = read_pairs(data / "golden-drifted.jsonl")
        story.step(3, f"traffic: gateway on {story.record.gateway_url}/v1; {scale.users} simulated users ask the "
                      "old intents and say whether the answer routed them right")
        story.start_traffic(before)
        story.wait_requests(scale.before_requests, "old-world traffic")

    story.step(4, f"drift: users start asking about virtual and disposable cards ({scale.drifted_share:.0%} of "
                  "prompts); the monitor deployment looks (its schedule runs it every 15 min)")
    with story.timed("drift"):
        story.load.shift(mix(before, drifted, scale.drifted_share, seed=0))
        story.wait_requests(scale.drift_requests, "drifted traffic")
        seq = story.last_seq()
        story.run_deployment("monitor/monitor", {"params": {"model": MODEL, "hours": 1, "policy": scale.monitor,
                                                            "rollout_plan": scale.rollout}}, "monitor")
        detected = story.audit_after("slm.drift.detected", seq)
        if not detected:
            raise DemoError("the monitor saw no drift in the drifted traffic; see its report under "
                            f"{get_settings().home / 'reports'}")
        story.note(f"[yellow]drift detected[/yellow]: {', '.join(detected[-1].payload['drifted_columns'])}")

    story.step(5, "the automation starts the retrain deployment: validate, LoRA, benchmark, gate, publish "
                  "(the users wait meanwhile: on a laptop they would share the trainer's cores)")
    with story.timed("retrain"), story.paused_traffic():
        story.next_run("retrain", "retrain (drift)", timeout_s=120)
    good = _latest_version()
    story.note(f"{good.ref} registered as [bold]{good.status.value}[/bold]: {_scores(good)}")
    if good.status.value != "candidate":
        raise DemoError(f"{good.ref} did not pass the gate: {good.reason}")
    story.step(6, f"slm.candidate.published starts the rollout deployment: {good.ref} through shadow and "
                  f"canary stages ({scale.rollout}) on live traffic")
    with story.timed("rollout"):
        phase, failed = story.rollout_of(good.ref)
    story.note(_phase_line(good.ref, phase, failed))
    if phase != "promoted":  # the gate's candidate is sound: the rest of the story builds on it as champion
        raise DemoError(f"{good.ref} was {phase.replace('_', ' ')} instead of promoted: {'; '.join(failed) or '-'}; "
                        f"`SLM_HOME={get_settings().home} slm rollout status` shows every decision")

    story.step(7, "a data scientist tries a quick retrain (fewer steps) on the drifted drop alone, judged by a gate "
                  "that sees the new intents only (the deployment's form, as in the UI): it forgets the old intents")
    with story.timed("bad retrain"), story.paused_traffic():
        story.run_deployment("retrain/retrain", {"params": {
            "config": scale.retrain, "replay_rows": 0, "gate": scale.blind_gate, "recipe": scale.quick_recipe,
            "rollout_plan": scale.rollout, "reason": "demo: quick experiment on the drifted drop alone, blind gate"}},
            "retrain (drifted only)")
    bad = _latest_version()
    story.note(f"{bad.ref} registered as [bold]{bad.status.value}[/bold]: {_scores(bad)}")
    if bad.status.value != "candidate":  # the story needs it to slip through: say why it did not
        raise DemoError(f"{bad.ref} did not pass its blind gate ({scale.blind_gate}): {bad.reason}")
    story.note(f"{bad.ref} goes live: shadow looks only for a broken model; the canary's users judge it")
    with story.timed("rollback"):
        phase, failed = story.rollout_of(bad.ref)
    story.note(_phase_line(bad.ref, phase, failed))
    if phase != "rolled_back":
        raise DemoError(f"{bad.ref} forgot the old intents, yet its rollout ended {phase}: see its rollout history "
                        f"(SLM_HOME={result.home} slm rollout status --version {bad.ref})")

    story.step(8, f"decommission: the retention policy ({scale.retention}) retires what nothing holds")
    with story.timed("decommission"):
        story.wait_grace(scale.retention)
        story.run_deployment("decommission/decommission", {"model": MODEL, "policy_path": scale.retention},
                             "decommission")
    result.retired = _retired()
    story.note(f"retired: {', '.join(result.retired) or 'nothing'}")
    _finish(story)


def _phase_line(version: str, phase: str, failed: list[str]) -> str:
    colour = "green" if phase == "promoted" else "red"
    lines = [f"[{colour}]{version} {phase.replace('_', ' ')}[/{colour}]"] + [f"  {escape(r)}" for r in failed]
    return "\n   ".join(lines)


def mix(before: Sequence, drifted: Sequence, share: float, seed: int) -> list:
    """Prompts of which ``share`` come from ``drifted`` (sampling with replacement keeps the ratio exact)."""
    import random

    rng = random.Random(seed)
    n = 1000
    k = round(n * share)
    return [rng.choice(drifted) for _ in range(k)] + [rng.choice(before) for _ in range(n - k)]


def _latest_version():
    from registry.service import open_registry

    with open_registry() as registry:
        latest = registry.store.list_versions(MODEL)[-1]
        return registry.get(latest.ref)  # with its evals


def _scores(version) -> str:
    return ", ".join(f"{e.benchmark} {e.exact_match:.3f}" for e in version.evals)


def _retired() -> list[str]:
    from lifecycle.status import RETIRED
    from registry.service import open_registry

    with open_registry() as registry:
        return [v.ref for v in registry.store.list_versions(MODEL) if v.status in RETIRED]


def _write_report(registry) -> Path:
    from lifecycle.settings import get_settings
    from reporting.publish import default_path, write_report

    path = default_path(get_settings().home, MODEL)
    write_report(registry.store, MODEL, path)
    return path


def _finish(story: Story) -> None:
    from registry.service import open_registry

    result = story.result
    story.step(9, "the end")
    table = Table("version", "status", "aliases", "before", "drifted", "rollout",
                  title=f"{MODEL} after the story (exact match on the golden sets)")
    with open_registry() as registry:
        aliases: dict[int, list[str]] = {}
        for alias in ("champion", "previous", "challenger"):
            number = registry.store.get_alias(MODEL, alias)
            if number is not None:
                aliases.setdefault(number, []).append(alias)
        for listed in registry.store.list_versions(MODEL):
            version = registry.get(listed.ref)  # with its evals
            scores = {e.benchmark: f"{e.exact_match:.3f}" for e in version.evals}
            table.add_row(f"v{version.number}", version.status.value, ", ".join(aliases.get(version.number, [])) or "—",
                          scores.get("golden-before", "—"), scores.get("golden-drifted", "—"),
                          result.rollouts.get(version.ref, "—"))
        audit = registry.store.verify_audit()
        result.report = str(_write_report(registry))
    result.audit_ok, result.audit_events = audit.ok, audit.checked
    story.console.print(table)
    colour = "green" if audit.ok else "red"
    story.note(f"audit chain [{colour}]{'intact' if audit.ok else 'BROKEN'}[/{colour}] ({audit.checked} events); "
               f"{story.load.counts['requests']} requests, {story.load.counts['errors']} failed")
    story.note(f"report: {escape(str(result.report))}")
    story.note(f"Prefect UI: {story.record.ui_url} (deployments, flow runs, artifacts); "
               f"registry: SLM_HOME={escape(str(result.home))} slm registry list")
