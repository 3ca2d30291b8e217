"""Crashes of the flows: the rollout flow and the retrain flow killed with SIGKILL in their own processes.

Each flow runs as the real CLI (``slm rollout run``, ``slm retrain``) in a process of its own, against this
session's Prefect API and the module's SLM_HOME; the test kills it with ``kill -9`` and runs it again.

* Rollout: a gateway on loopback serves ``intent-router`` through a :class:`FakeUpstream` (nothing generates
  in-process) while simulated sticky users send requests through it; the flow decides from the prediction log
  the gateway writes. The flow is killed once the registry shows the rollout in each stage of the plan, and
  twice around the promotion (a fault planted in the flow process kills it just before, then in the re-run just
  after, the champion alias moves). The re-run must resume (same rollout, history kept, no stage decided twice),
  promote exactly once, leave no effect pending, and the gateway must serve the split the registry holds — after
  every kill too.
* Retrain: killed while the LoRA fine-tune runs (its training log shows steps), then killed again while
  publishing the version's files (a fault planted at the rename), then run to completion. After either kill no
  version row exists (the second leaves a hidden, unreferenced copy of the folder, which the next registration of
  that number removes); the completed run registers exactly one version and nothing of the killed runs stays in
  the artifact store.

A killed rollout run is marked Crashed in Prefect by the run that resumes the rollout; a killed retrain run stays
``Running`` on this module's Prefect server (an ephemeral test server runs no proactive automations); on the
``slm up`` stack the crash automation marks it Crashed (tests/integration/test_stack.py). The file prints the count.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from lifecycle.data import read_pairs, write_jsonl
from tests.reliability.helpers import MODEL, REPO, FakeUpstream, banking_rows, register_base_version, start_gateway

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

# The flow processes. Importing the flows and what their runs load takes 10-20 s on two busy cores (prefect, torch), and
# the file starts a dozen of them; so one server process imports them once and forks a process per run, which
# runs the real CLI (``slm rollout run ...``, ``slm retrain ...``) in a process of its own, reported by pid
# and killed with SIGKILL like any other. A run may carry one planted fault (SLM_TEST_CRASH), a SIGKILL of
# the process itself at a point no outside timing hits reliably:
#   before:KIND / after:KIND   just before / after the rollout carries out an effect of that kind (Promote, ...)
#   publish-rename             when the artifact store renames a fully copied version folder into place
FORK_SERVER = r"""
import json, os, signal, sys, threading, time

import flows.retrain, flows.rollout, peft, torch, transformers  # noqa: the imports every run would pay for
import great_expectations
from slm_cli.main import app

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def plant(crash):
    if crash.startswith(("before:", "after:")):
        from registry import rollout_exec
        when, kind = crash.split(":")
        real = rollout_exec._carry_out
        def carry_out(store, state, effect, index, **kw):
            if when == "before" and type(effect).__name__ == kind:
                die()
            real(store, state, effect, index, **kw)
            if when == "after" and type(effect).__name__ == kind:
                die()
        rollout_exec._carry_out = carry_out
    elif crash == "publish-rename":
        import registry.artifacts as artifacts
        class Os:  # registry.artifacts' os, with a replace that dies on a version folder's rename
            def __getattr__(self, name):
                return getattr(os, name)
            @staticmethod
            def replace(src, dst):
                if os.path.basename(str(src)).startswith(".v") and ".tmp-" in str(src):
                    die()
                return os.replace(src, dst)
        artifacts.os = Os()

def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.05)
            continue
        print("exit", pid, os.waitstatus_to_exitcode(status), flush=True)

threading.Thread(target=reap, daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the run: the CLI exits with SystemExit, so interpreter shutdown (atexit: Prefect's event and
        # log workers drain) runs as in any `slm` process
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.update(request["env"])
        plant(request["env"].get("SLM_TEST_CRASH", ""))
        app(args=request["args"], prog_name="slm")
        sys.exit(0)
    print("pid", pid, flush=True)
"""


class FlowProcess:
    """One forked run: its pid, and its exit code once the fork server has reaped it (-9: SIGKILL)."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server, self.pid = server, pid

    def poll(self) -> int | None:
        return self.server.exits.get(self.pid)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            assert time.monotonic() < deadline, f"flow process {self.pid} still running after {timeout} s"
            time.sleep(0.05)
        return code


class ForkServer:
    def __init__(self, log: Path) -> None:
        import threading

        from prefect.settings import PREFECT_API_URL

        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "OMP_NUM_THREADS": "1",
               "SLM_ADMIN_TOKEN": ""}
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=REPO, env=env, text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out)
        self.exits: dict[int, int] = {}
        self._pids: list[int] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        assert self._ready.wait(300), "the fork server never got ready:\n" + tail(log)

    def _read(self) -> None:
        for line in self.proc.stdout:
            words = line.split()
            if words[:1] == ["ready"]:
                self._ready.set()
            elif words[:1] == ["pid"]:
                self._pids.append(int(words[1]))
            elif words[:1] == ["exit"]:
                self.exits[int(words[1])] = int(words[2])

    def launch(self, args: list[str], log: Path, **env: str) -> FlowProcess:
        with log.open("ab") as out:
            out.write(f"\n==== slm {' '.join(args)} {env}\n".encode())
        known = len(self._pids)
        self.proc.stdin.write(json.dumps({"args": args, "log": str(log), "env": env}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + 60
        while len(self._pids) == known:
            assert self.proc.poll() is None and time.monotonic() < deadline, "the fork server died:\n" + tail(self.log)
            time.sleep(0.01)
        return FlowProcess(self, self._pids[known])

    def close(self) -> None:
        for pid in self._pids:
            if pid not in self.exits:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.proc.stdin.close()
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def runs(slm_home, prefect_harness, tmp_path_factory):
    """The fork server, on this session's Prefect API and the module's SLM_HOME."""
    server = ForkServer(tmp_path_factory.mktemp("fork-server") / "server.log")
    try:
        yield server
    finally:
        server.close()


STAGES = ("shadow", "canary-20", "canary-50", "full")
GUARD = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.3},
         {"metric": "infra_error_rate", "direction": "lower_is_better", "regression": 0.3}]
# Why a 1 s look: a stage can advance no sooner than one look after it began, which gives the test (polling the
# registry every 50 ms) a window of about a second to kill the flow while the rollout is in that stage.
KILL_LOOK_S, RERUN_LOOK_S = 1.0, 0.5


def wait_until(found: Callable[[], object], proc: FlowProcess, log: Path, what: str, timeout: float = 180):
    """Poll ``found`` every 50 ms until it returns something truthy; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value:
            return value
        assert proc.poll() is None, f"the flow process ended (rc {proc.poll()}) before {what}:\n" + tail(log)
        assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n" + tail(log)
        time.sleep(0.05)


def kill9(proc: FlowProcess) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]


def registry():
    from registry.service import open_registry

    return open_registry()


def events(store, subject: str, action: str) -> list:
    return [e for e in store.audit_events() if e.subject == subject and e.action == action]


# ---------------------------------------------------------------------------------------------------- rollout


@pytest.fixture(scope="module")
def plan_file(slm_home) -> Path:
    plan = {"name": "flow-crash", "version": 1, "approval_before_last_stage": False, "settle_s": 0,
            "stage_defaults": {"min_requests_per_arm": 20, "max_duration_s": 600, "guardrails": GUARD},
            "stages": [{"name": "shadow", "share": 0}, {"name": "canary-20", "share": 20},
                       {"name": "canary-50", "share": 50}, {"name": "full", "share": 100}]}
    path = slm_home / "rollout-crash.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


class Users(threading.Thread):
    """Simulated callers through the gateway: sticky users (``x-user-id``, as the router's canary split wants),
    labelled BANKING77 prompts, paced to about ``rate`` requests a second — what a stage's sample needs, and no
    more: every request costs the gateway's CPU, which the flow processes share. Sends only while ``sending``."""

    def __init__(self, url: str, prompts: list[str], rate: float = 40.0) -> None:
        super().__init__(name="flow-crash-users", daemon=True)
        self.url, self.prompts, self.gap = url, prompts, 1.0 / rate
        self.sending, self.halt = threading.Event(), threading.Event()
        self.counts: Counter[str] = Counter()

    def run(self) -> None:
        rng = random.Random(0)
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.halt.is_set():
                if not self.sending.wait(0.2):
                    continue
                began = time.monotonic()
                try:
                    answer = http.post("/v1/completions", headers={"x-user-id": f"user-{rng.randrange(2000)}"},
                                       json={"model": MODEL, "prompt": rng.choice(self.prompts)})
                    self.counts["requests" if answer.status_code == 200 else "errors"] += 1
                except httpx.TransportError:
                    self.counts["errors"] += 1
                self.halt.wait(max(0.0, self.gap - (time.monotonic() - began)))


@pytest.fixture(scope="module")
def live(weightless_champion, prefect_harness):
    """The gateway on loopback (through a FakeUpstream that knows every version the module registers) and
    simulated users sending through it while a rollout test runs."""
    from serving.upstream import UpstreamConfig

    with FakeUpstream({f"{MODEL}:v{n}": "ok" for n in range(1, 30)}) as upstream:
        upstream_config = UpstreamConfig(base_url=upstream.url, render_prompt=False, timeout_s=10)
        with start_gateway(upstream=upstream_config, split_poll_s=0.1) as gateway:
            prompts = [p.prompt for p in banking_rows(("card_arrival", "exchange_rate", "top_up_failed"), 30, "test")]
            users = Users(gateway.url, prompts)
            users.start()
            try:
                yield gateway, users
            finally:
                users.halt.set()
                users.join(timeout=30)


def new_candidate() -> tuple[int, int]:
    """(champion, candidate): a weightless candidate on the champion's (never loaded) base."""
    with registry() as reg:
        champion = reg.store.get_alias(MODEL, "champion")
        lineage = reg.store.get_version(MODEL, champion).lineage
        candidate = register_base_version(reg, MODEL, lineage.model_copy(update={"parent": f"{MODEL}:v{champion}"}),
                                          "flow-crash candidate")
    return champion, candidate


def run_rollout(runs: ForkServer, ref: str, plan: Path, log: Path, look_s: float, **env: str) -> FlowProcess:
    return runs.launch(["rollout", "run", ref, "--plan", str(plan), "--look-interval", str(look_s), "--settle", "0",
                   "--approval-timeout", "60"], log, **env)


def in_stage(candidate: int, index: int):
    from registry.rollouts import get_rollout

    def found():
        with registry() as reg:
            state = get_rollout(reg.store, MODEL, candidate)
        return state if state is not None and state.phase == "running" and state.stage_index == index else None
    return found


def gateway_follows(gateway, timeout: float = 15.0):
    """The gateway's live split once it has caught up with the registry's revision."""
    from registry.traffic import get_split

    deadline = time.monotonic() + timeout
    while True:
        with registry() as reg:
            stored = get_split(reg.store, MODEL)
        live = gateway.state.live.split
        if live.revision == stored.revision or time.monotonic() > deadline:
            return stored, live
        time.sleep(0.1)


def check_killed(gateway, candidate: int, champion: int, how: str, where: int | str):
    """The registry right after a kill: the rollout where the kill left it, and the gateway serving its split."""
    from registry.rollouts import get_rollout
    from registry.traffic import get_split

    with registry() as reg:
        killed = get_rollout(reg.store, MODEL, candidate)
        holder = reg.store.get_alias(MODEL, "champion")
        split = get_split(reg.store, MODEL)
    if how == "stage":
        assert (killed.phase, killed.stage_index) == ("running", where), "the flow raced past the stage"
        assert holder == champion
    else:  # the promotion was decided and saved; its effects were cut short
        assert (killed.phase, killed.stage_index) == ("promoted", 3) and killed.pending
        assert holder == (candidate if where.startswith("after") else champion)
        assert (split.champion, split.challenger, split.challenger_percent) == (champion, candidate, 100)
    stored, served = gateway_follows(gateway)
    assert served == stored  # dead flow or not, the gateway serves the split the registry holds
    print(f"\nkilled ({where if how == 'fault' else 'by the test'}) in {STAGES[killed.stage_index]}: phase "
          f"{killed.phase}, pending {[e.kind for e in killed.pending]}, champion v{holder}, split r{split.revision}")
    return killed


# Each stage once; then the promotion twice in a row: killed just before the champion alias moves (the decision
# saved, its effects not begun), and the re-run killed just after it moved (the split not yet changed).
CASES = [pytest.param([("stage", k)], id=f"killed-in-{name}") for k, name in enumerate(STAGES)] + [
    pytest.param([("fault", "before:Promote"), ("fault", "after:Promote")], id="killed-around-the-promotion")]


@pytest.mark.parametrize("kills", CASES)
def test_killed_rollout_flow_resumes_and_promotes_exactly_once(runs, live, plan_file, tmp_path, kills):
    from lifecycle.status import VersionStatus
    from registry import rollout_exec
    from registry.rollouts import get_rollout
    from registry.traffic import get_split
    from tasks.rollout import read_plan

    gateway, users = live
    champion, candidate = new_candidate()
    ref, log = f"{MODEL}:v{candidate}", tmp_path / "rollout.log"
    errors_before = users.counts["errors"]
    first, proc, drivers = None, None, []
    users.sending.set()
    try:
        for how, where in kills:
            proc = run_rollout(runs, ref, plan_file, log, KILL_LOOK_S,
                               **({"SLM_TEST_CRASH": where} if how == "fault" else {}))
            if how == "stage":
                wait_until(in_stage(candidate, where), proc, log, f"the rollout in stage {STAGES[where]}")
                kill9(proc)
            else:
                assert proc.wait(timeout=240) == -signal.SIGKILL, tail(log)
            killed = check_killed(gateway, candidate, champion, how, where)
            first = first or killed
            drivers.append(killed.flow_run_id)
            # Resumed, never restarted: the same rollout, the history so far kept.
            assert killed.started_at == first.started_at and killed.history[:len(first.history)] == first.history
        proc = run_rollout(runs, ref, plan_file, log, RERUN_LOOK_S)
        assert proc.wait(timeout=240) == 0, tail(log)
    finally:
        users.sending.clear()
        if proc is not None and proc.poll() is None:
            kill9(proc)
        with registry() as reg:  # a failed case must not block the next one's rollout
            state = get_rollout(reg.store, MODEL, candidate)
            if state is not None and not state.terminal:
                rollout_exec.stop(reg.store, state, read_plan(str(plan_file)), reason="test cleanup", actor="test",
                                  emit=lambda *a: None)

    subject = f"{MODEL}:v{candidate}"
    with registry() as reg:
        store = reg.store
        final = get_rollout(store, MODEL, candidate)
        # Resumed, not restarted: the same rollout, its history kept, each stage decided once, in order.
        assert final.phase == "promoted" and final.pending == [] and final.applied_at
        assert final.started_at == first.started_at and final.history[:len(killed.history)] == killed.history
        assert [(h.stage, h.action) for h in final.history] == [(s, "advance") for s in STAGES]
        assert len(events(store, subject, "rollout.started")) == 1 and not events(store, subject, "rollout.restarted")
        # Promoted exactly once.
        promoted = [e for e in events(store, subject, "version.status") if e.payload["to"] == "promoted"]
        assert len(promoted) == 1
        decided = [e for e in events(store, subject, "rollout.state") if e.payload["to"]["phase"] == "promoted"]
        assert len(decided) == 1
        assert [m.version for m in store.alias_history(MODEL, "champion")].count(candidate) == 1
        assert store.aliases(MODEL) == {"champion": candidate, "previous": champion}
        assert store.get_version(MODEL, candidate).status is VersionStatus.PROMOTED
        split = get_split(store, MODEL)
        assert (split.champion, split.challenger, split.shadow) == (candidate, None, None)
        assert store.verify_audit().ok
    # The killed runs do not stay "Running" in Prefect: the run that took over marked each Crashed.
    from prefect.client.orchestration import get_client

    assert final.flow_run_id not in drivers
    with get_client(sync_client=True) as client:
        killed_states = [client.read_flow_run(uuid.UUID(run)).state for run in drivers]
    assert all(state.is_crashed() for state in killed_states), [state.name for state in killed_states]
    # The gateway serves what the registry says.
    stored, served = gateway_follows(gateway)
    assert served == stored
    ready = httpx.get(f"{gateway.url}/readyz", timeout=10).json()
    assert ready["split_revision"] == stored.revision and f"v{candidate}" in ready["live_versions"]
    # The gateway never failed a request while the flow died and came back.
    assert users.counts["errors"] == errors_before
    print(f"re-run: promoted {subject} once; split r{stored.revision}; {users.counts['requests']} requests so far")


# ---------------------------------------------------------------------------------------------------- retrain

RETRAIN_MODEL = "crash-router"
LORA_STEPS = 150  # long enough to be caught training (its log shows every 2nd step), short for the re-run


@pytest.fixture(scope="module")
def retrain_project(slm_home, prefect_harness, write_tiny_configs, tmp_path_factory) -> tuple[Path, Path]:
    """Tiny configs (a LoRA long enough to be caught training) and a bootstrapped champion; the drop."""
    from flows.bootstrap import BootstrapParams, bootstrap

    configs = write_tiny_configs(tmp_path_factory.mktemp("retrain-configs"), model=RETRAIN_MODEL)
    recipe = yaml.safe_load((configs / "recipe_lora.yaml").read_text())
    recipe.update(max_steps=LORA_STEPS, log_every=2)
    (configs / "recipe_lora.yaml").write_text(yaml.safe_dump(recipe))
    outcome = bootstrap(BootstrapParams(model=RETRAIN_MODEL, task=str(configs / "task.yaml"),
                                        base_model=str(configs / "base_model.yaml")))
    assert outcome.champion == f"{RETRAIN_MODEL}:v1"
    drifted = read_pairs(slm_home / "data" / "drifted-labelled.jsonl")
    return configs, write_jsonl(tmp_path_factory.mktemp("drop") / "drop.jsonl", drifted[:200])


def on_disk(home: Path) -> dict[str, set[str]]:
    """What the artifact store holds for the model, and its data snapshots (names only)."""
    from lifecycle.settings import get_settings

    root = get_settings().artifacts
    models = root / "models" / RETRAIN_MODEL
    return {"models": {p.name for p in models.iterdir()} if models.is_dir() else set(),
            "datasets": {p.name for p in (root / "datasets").iterdir()} if (root / "datasets").is_dir() else set(),
            "stray": {str(p.relative_to(root)) for p in root.rglob(".*")}}


def training_step(home: Path):
    """The last step a run's training.log shows, once one shows any (run folder, step)."""
    def found():
        for log in (home / "runs").glob("*/training.log"):
            lines = log.read_text().splitlines()
            if lines:
                return log.parent, int(lines[-1].split()[1].split("/")[0])
        return None
    return found


def test_retrain_flow_killed_while_training_and_publishing_leaves_nothing_and_reruns_clean(
        runs, retrain_project, slm_home, tmp_path):
    configs, drop = retrain_project
    args = ["retrain", "--config", str(configs / "retrain.yaml"), "--data", str(drop), "--reason", "crash-test"]
    log = tmp_path / "retrain.log"
    with registry() as reg:
        versions_before = [v.number for v in reg.store.list_versions(RETRAIN_MODEL)]
    disk_before = on_disk(slm_home)
    assert versions_before == [1] and disk_before["models"] == {"v1"} and not disk_before["stray"]

    # 1. Killed while the fine-tune runs.
    proc = runs.launch(args, log)
    try:
        run_dir, _ = wait_until(training_step(slm_home), proc, log, "a training step in the log")
        kill9(proc)
    finally:
        if proc.poll() is None:
            kill9(proc)
    steps_at_kill = int(run_dir.joinpath("training.log").read_text().splitlines()[-1].split()[1].split("/")[0])
    assert 0 < steps_at_kill < LORA_STEPS, "the kill came after training"
    assert not (run_dir / "adapter").exists()  # no adapter was saved; its temporary folder died unrenamed or empty
    with registry() as reg:
        assert [v.number for v in reg.store.list_versions(RETRAIN_MODEL)] == versions_before
        assert not [e for e in reg.store.audit_events() if e.action == "version.registered"
                    and e.subject.startswith(f"{RETRAIN_MODEL}:") and e.subject != f"{RETRAIN_MODEL}:v1"]
        assert reg.store.verify_audit().ok
    after_training_kill = on_disk(slm_home)
    assert after_training_kill["models"] == {"v1"} and not after_training_kill["stray"]
    print(f"\nretrain killed at step {steps_at_kill}/{LORA_STEPS}: no version, no model folder")

    # 2. Killed at the rename that publishes v2's folder (the copy is whole, the database row not written).
    proc = runs.launch(args, log, SLM_TEST_CRASH="publish-rename")
    assert proc.wait(timeout=300) == -signal.SIGKILL, tail(log)
    with registry() as reg:
        assert [v.number for v in reg.store.list_versions(RETRAIN_MODEL)] == versions_before
        assert reg.store.verify_audit().ok
    after_publish_kill = on_disk(slm_home)
    assert after_publish_kill["models"] - {"v1"} <= {p for p in after_publish_kill["models"] if p.startswith(".v2.")}
    print(f"retrain killed publishing v2: left on disk {sorted(after_publish_kill['models'] - {'v1'})}")

    # 3. Run again: it starts clean and registers exactly one version.
    proc = runs.launch(args, log)
    assert proc.wait(timeout=300) == 0, tail(log)
    with registry() as reg:
        versions = reg.store.list_versions(RETRAIN_MODEL)
        assert [v.number for v in versions] == [*versions_before, 2]
        v2 = versions[-1]
        assert v2.status.value in {"candidate", "rejected"} and v2.lineage.trigger == "crash-test"
        reg.version_dir(v2)  # every file as recorded, nothing more (exact check)
        registered = [e.subject for e in reg.store.audit_events() if e.action == "version.registered"
                      and e.subject.startswith(f"{RETRAIN_MODEL}:")]
        assert registered == [f"{RETRAIN_MODEL}:v1", f"{RETRAIN_MODEL}:v2"]
        referenced = {d.snapshot.removeprefix("local://datasets/") for v in versions for d in v.lineage.datasets
                      if d.snapshot}
        assert reg.store.verify_audit().ok
    final = on_disk(slm_home)
    # Nothing the killed runs wrote outlives the re-run: the model's folders are exactly its versions', no
    # hidden temporary folder anywhere, every data snapshot belongs to a version.
    assert final["models"] == {"v1", "v2"}
    assert not final["stray"], final["stray"]
    assert final["datasets"] <= referenced
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = Counter(r.state_name for r in client.read_flow_runs())
    print(f"retrain re-run registered v2 ({v2.status.value}); Prefect flow runs by state: {dict(states)}")


def test_unpublishing_a_number_clears_what_a_killed_registration_left_of_it(tmp_path):
    """What the publish-rename kill above leaves (a whole copy under a hidden temporary name) goes with the next
    registration of that number, which unpublishes it first; other numbers' folders stay."""
    from registry.artifacts import LocalArtifactStore

    models = tmp_path / "models" / "m"
    for name in ("v2", ".v2.tmp-123", ".v20.tmp-9", "v20", "v1"):
        (models / name).mkdir(parents=True)
    LocalArtifactStore(tmp_path).unpublish_version("m", 2)
    assert sorted(p.name for p in models.iterdir()) == [".v20.tmp-9", "v1", "v20"]
