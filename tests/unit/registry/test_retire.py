"""Retiring versions on a real registry (SQLite, and PostgreSQL when SLM_TEST_POSTGRES_URL is set): refusals,
tombstone, archive vs delete, and a re-run that completes a retirement killed at any step."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from lifecycle.files import hash_tree
from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, Lineage
from lifecycle.retention import RetentionPolicy, plan_retention
from lifecycle.routing import TrafficSplit
from lifecycle.status import VersionStatus as S
from registry import tombstone as tomb
from registry.artifacts import LocalArtifactStore
from registry.retire import RetirementRefused, VersionDecommissioned, retention_inputs, retire_version
from registry.service import Registry
from registry.store import RegistryStore
from registry.traffic import get_split, set_split

LINEAGE = Lineage(base_model=BaseModelRef(model_id="local://base/x", revision="0" * 64),
                  prompt_format=INTENT_V1.identity)
ARCHIVE = RetentionPolicy(keep_recent=0, retire_after_days=30, artifacts="archive")
DELETE = ARCHIVE.model_copy(update={"artifacts": "delete"})
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def registry(db_url, tmp_path, clock):
    reg = Registry(RegistryStore.open(db_url, clock=clock), LocalArtifactStore(tmp_path / "artifacts"), "router")
    yield reg
    reg.close()


@pytest.fixture
def adapter(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 4}')
    (folder / "adapter_model.safetensors").write_bytes(b"\x00weights" * 100)
    return folder


def register(reg, adapter, status=S.REJECTED):
    return reg.register("router", staged=adapter, status=status, reason="r", actor="t", lineage=LINEAGE,
                        evals=[], task="banking77")


@pytest.fixture
def world(registry, adapter):
    """v1 champion (with the split), v2 rejected: the one to retire."""
    register(registry, adapter, S.CANDIDATE)
    registry.store.promote("router", 1, actor="t", reason="first")
    set_split(registry.store, TrafficSplit(model="router", champion=1), actor="t", reason="serve")
    register(registry, adapter)
    return registry


def root(reg):
    return reg.artifacts.root


def retire(reg, number=2, policy=ARCHIVE):
    return retire_version(reg, "router", number, policy=policy, actor="test", reason="past retention")


def test_archive_moves_the_weights_and_keeps_a_tombstone(world):
    files = world.store.get_version("router", 2).files
    done = retire(world)
    assert done.steps == ["archived", "tombstone", "weights archived", "decommissioned"]
    assert done.archive_uri == "local://archive/models/router/v2"
    assert world.store.get_version("router", 2).status is S.DECOMMISSIONED
    assert not tomb.version_folder(root(world), "router", 2).exists()
    assert hash_tree(tomb.archive_folder(root(world), "router", 2)) == files  # restorable, verifiable
    stone = tomb.tombstone_folder(root(world), "router", 2)
    assert {p.name for p in stone.iterdir()} == {"README.md", "lineage.json", "eval.json", "tombstone.json"}
    assert json.loads((stone / "lineage.json").read_text())["prompt_format"] == INTENT_V1.identity
    record = json.loads((stone / "tombstone.json").read_text())
    assert record["state"] == "decommissioned"
    assert [(h["from_status"], h["to_status"]) for h in record["status_history"]] == [
        (None, "rejected"), ("rejected", "archived"), ("archived", "decommissioned")]
    actions = [e["action"] for e in record["audit"]]
    assert actions[:3] == ["version.registered", "version.status", "version.retire.started"]
    assert "version.weights.archived" in actions and record["retirement"]["policy"]["artifacts"] == "archive"
    assert world.store.verify_audit().ok


def test_delete_removes_the_weights_and_keeps_the_tombstone(world):
    done = retire(world, policy=DELETE)
    assert done.archive_uri is None and "weights deleted" in done.steps
    assert not tomb.version_folder(root(world), "router", 2).exists()
    assert not tomb.archive_folder(root(world), "router", 2).exists()
    assert (tomb.tombstone_folder(root(world), "router", 2) / "README.md").is_file()
    assert not list((root(world) / "models" / "router").glob(".*deleting"))


def test_every_replica_is_told_through_a_split_revision_bump(world):
    before = get_split(world.store, "router")
    retire(world)
    after = get_split(world.store, "router")
    assert after.revision == before.revision + 1 and after.live_versions == before.live_versions
    bump = [e for e in world.store.audit_events() if e.action == "traffic.split"][-1]
    assert bump.payload["reason"] == "router:v2 retired: replicas unload it"


@pytest.mark.parametrize("hold, number, message", [
    ("alias", 1, "holds alias champion"),
    ("split", 2, "named by the traffic split as shadow"),
    ("rollout", 3, "candidate of the running rollout"),
])
def test_refuses_a_version_something_still_needs(world, adapter, hold, number, message):
    if hold == "split":
        set_split(world.store, TrafficSplit(model="router", champion=1, shadow=2), actor="t", reason="shadow")
    if hold == "rollout":
        from lifecycle.rollout_plan import RolloutPlan
        from lifecycle.rollout_state import start
        from registry.rollouts import start_rollout

        guard = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.04}]
        plan = RolloutPlan(name="p", version=1, approval_before_last_stage=False, stages=[
            {"name": f"s{share}", "share": share, "min_requests_per_arm": 1, "max_duration_s": 60,
             "guardrails": guard} for share in (0, 100)])
        register(world, adapter, S.CANDIDATE)  # v3: only a candidate can be rolled out
        start_rollout(world.store, start("router", 3, 1, plan, T0.isoformat())[0], actor="t")
    status = world.store.get_version("router", number).status
    with pytest.raises(RetirementRefused, match=message):
        retire(world, number)
    assert world.store.get_version("router", number).status is status  # nothing changed
    assert tomb.version_folder(root(world), "router", number).is_dir()
    assert not tomb.tombstone_folder(root(world), "router", number).exists()
    refused = world.store.audit_events()[-1]
    assert refused.action == "version.retire.refused" and message in " ".join(refused.payload["holds"])


def crash_in(monkeypatch, step):
    """Kill the retirement at ``step``, once ("after-weights": once the weights moved, before it is audited)."""
    import registry.retire as retire_module

    target, name = {"bump": (retire_module, "_bump_split"), "tombstone": (tomb, "write_tombstone"),
                    "weights": (tomb, "archive_weights"), "after-weights": (tomb, "archive_weights"),
                    "status": (RegistryStore, "set_status")}[step]
    original = getattr(target, name)

    def killed(*args, **kwargs):
        monkeypatch.setattr(target, name, original)
        if step == "after-weights":
            original(*args, **kwargs)
        raise KeyboardInterrupt(f"killed at {step}")

    monkeypatch.setattr(target, name, killed)


@pytest.mark.parametrize("step", ["bump", "tombstone", "weights", "after-weights", "status"])
def test_a_retirement_killed_at_any_step_is_completed_by_the_next_run(world, monkeypatch, clock, step):
    files = world.store.get_version("router", 2).files
    crash_in(monkeypatch, step)
    with pytest.raises(KeyboardInterrupt):
        retire(world)
    assert world.store.get_version("router", 2).status is S.ARCHIVED
    clock.now = T0 + timedelta(days=1)
    inputs = retention_inputs(world, "router")
    assert [f.retiring for f in inputs.versions] == [False, True]
    plan = plan_retention("router", inputs.versions, aliases=inputs.aliases, split=inputs.split,
                          rollout=inputs.rollout, policy=ARCHIVE.model_copy(update={"keep_recent": 5}), now=clock.now)
    assert (plan[1].action, plan[1].reasons) == ("retire", ["a retirement was interrupted; completing it"])
    done = retire(world)
    assert "decommissioned" in done.steps
    assert world.store.get_version("router", 2).status is S.DECOMMISSIONED
    assert hash_tree(tomb.archive_folder(root(world), "router", 2)) == files
    assert tomb.read_tombstone(root(world), "router", 2)["state"] == "decommissioned"
    assert not any(f.retiring for f in retention_inputs(world, "router").versions)
    assert world.store.verify_audit().ok
    archived = [e for e in world.store.audit_events() if e.action == "version.weights.archived"]
    assert len(archived) == 1  # the move is on record once, whichever run made it
    assert ("note" in archived[0].payload) == (step == "after-weights")


@pytest.mark.parametrize("where", ["closing-work", "closing-event"])
def test_a_retirement_killed_after_its_last_status_does_its_closing_work_on_the_next_run(world, monkeypatch, clock,
                                                                                          where):
    """Decommissioned, tombstone final, but killed in the caller's closing work (the flow's announcement) or before
    the closing audit event: the version is still unfinished for retention, and the next run does the closing work
    and writes the event (before, it found "nothing left to do" and they were lost for good)."""
    from registry.retire import CLOSED

    calls: list[str] = []

    def close(done):
        calls.append(done.ref)
        if where == "closing-work" and len(calls) == 1:
            raise KeyboardInterrupt("killed in the closing work")

    if where == "closing-event":
        original = RegistryStore.append_audit

        def append_audit(self, *, action, **kwargs):
            if action == CLOSED:
                monkeypatch.setattr(RegistryStore, "append_audit", original)
                raise KeyboardInterrupt("killed before the closing event")
            return original(self, action=action, **kwargs)

        monkeypatch.setattr(RegistryStore, "append_audit", append_audit)

    def run():
        return retire_version(world, "router", 2, policy=ARCHIVE, actor="test", reason="old", before_close=close)

    with pytest.raises(KeyboardInterrupt):
        run()
    assert world.store.get_version("router", 2).status is S.DECOMMISSIONED
    assert tomb.read_tombstone(root(world), "router", 2)["state"] == "decommissioned"
    assert not world.store.has_event(CLOSED, "router:v2")
    assert [f.retiring for f in retention_inputs(world, "router").versions] == [False, True]
    done = run()
    assert done.steps == ["tombstone"] and calls == ["router:v2", "router:v2"]
    assert world.store.has_event(CLOSED, "router:v2")
    assert not any(f.retiring for f in retention_inputs(world, "router").versions)
    assert run().steps == [] and len(calls) == 2  # closed: the closing work is not done again


def test_two_retirements_of_one_version_at_once_take_turns(world, monkeypatch):
    """The 03:00 schedule and a manual run retire v2 at the same moment. Unserialized, the second could find the
    archive there and remove it (``archive_weights`` clears a stale archive) just after the first moved the weights
    into it; now the second waits for the first, then finds the work done."""
    import threading

    files = world.store.get_version("router", 2).files
    original, inside, overlapped = tomb.archive_weights, [], threading.Event()
    first_in = threading.Event()

    def archive_weights(*args):
        inside.append(threading.current_thread().name)
        if len(inside) > 1 and not first_done.is_set():
            overlapped.set()
        first_in.set()
        first_done.wait(timeout=2)  # the first run stays here a while: the second would come in now
        try:
            return original(*args)
        finally:
            first_done.set()

    first_done = threading.Event()
    monkeypatch.setattr(tomb, "archive_weights", archive_weights)
    results = {}

    def run(name):
        results[name] = retire(world)

    first = threading.Thread(target=run, args=("first",), name="first")
    first.start()
    assert first_in.wait(timeout=30)
    second = threading.Thread(target=run, args=("second",), name="second")
    second.start()
    first.join(timeout=60)
    second.join(timeout=60)
    assert not overlapped.is_set() and inside == ["first"]  # the second never reached the weights
    assert "weights archived" in results["first"].steps and results["second"].steps == []
    assert hash_tree(tomb.archive_folder(root(world), "router", 2)) == files
    assert len([e for e in world.store.audit_events() if e.action == "version.weights.archived"]) == 1


def test_an_interrupted_retirement_finishes_as_it_began_whatever_the_policy_now_says(world, monkeypatch):
    """Killed after archiving v2's weights; the policy is changed to delete before the next run. The retirement
    finishes as an archive (the tombstone records how it began): the archived copy stays."""
    files = world.store.get_version("router", 2).files
    crash_in(monkeypatch, "after-weights")
    with pytest.raises(KeyboardInterrupt):
        retire(world, policy=ARCHIVE)
    done = retire(world, policy=DELETE)
    assert done.artifacts == "archive" and done.archive_uri == "local://archive/models/router/v2"
    assert hash_tree(tomb.archive_folder(root(world), "router", 2)) == files
    assert tomb.read_tombstone(root(world), "router", 2)["retirement"]["weights"] == "archive"


def test_retiring_again_changes_nothing(world):
    retire(world)
    count = len(world.store.audit_events())
    again = retire(world)
    assert again.steps == [] and again.archive_uri == "local://archive/models/router/v2"
    assert len(world.store.audit_events()) == count


def test_a_retired_version_cannot_be_loaded_nor_take_traffic(world):
    retire(world)
    version = world.store.get_version("router", 2)
    with pytest.raises(VersionDecommissioned, match="tombstone .* is at local://tombstones/router/v2"):
        world.version_dir(version)
    with pytest.raises(ValueError, match="v2 is decommissioned"):
        set_split(world.store, TrafficSplit(model="router", champion=1, challenger=2, challenger_percent=5),
                  actor="t", reason="try")


def test_an_archived_version_whose_weights_left_is_refused_clearly(world, monkeypatch):
    crash_in(monkeypatch, "status")
    with pytest.raises(KeyboardInterrupt):
        retire(world)
    with pytest.raises(VersionDecommissioned, match="is archived"):
        world.version_dir(world.store.get_version("router", 2))


def test_age_counts_from_the_last_status_change_before_archiving(registry, adapter, clock):
    register(registry, adapter, S.CANDIDATE)
    clock.now = T0 + timedelta(days=10)
    registry.store.set_status("router", 1, S.ROLLED_BACK, actor="t", reason="canary failed")
    clock.now = T0 + timedelta(days=20)
    registry.store.set_status("router", 1, S.ARCHIVED, actor="t", reason="by hand")
    (facts,) = retention_inputs(registry, "router").versions
    assert facts.settled_at == T0 + timedelta(days=10) and facts.status is S.ARCHIVED and not facts.retiring


def test_a_former_champion_ages_from_when_it_stopped_being_the_rollback_target(registry, adapter, clock):
    """v1 champion from day 0, replaced on day 95 (it becomes `previous`, the rollback target), and that alias
    leaves it on day 99. An hour later it is not 99 days old: it was of use until an hour ago."""
    from registry import operations

    register(registry, adapter, S.CANDIDATE)
    registry.store.promote("router", 1, actor="t", reason="first")
    set_split(registry.store, TrafficSplit(model="router", champion=1), actor="t", reason="serve")
    for day in range(1, 5):  # rejected retrains take the keep_recent places
        clock.now = T0 + timedelta(days=day)
        register(registry, adapter)
    for day, number in ((95, 6), (99, 7)):
        clock.now = T0 + timedelta(days=day)
        register(registry, adapter, S.CANDIDATE)
        operations.promote(registry, "router", number, actor="op", reason=f"v{number}")
    clock.now = T0 + timedelta(days=99, hours=1)
    facts = {f.number: f for f in retention_inputs(registry, "router").versions}
    assert facts[1].settled_at == T0 + timedelta(days=99)  # not day 0, its promotion
    assert facts[6].settled_at == T0 + timedelta(days=99)  # promoted on 95, champion until 99
    inputs = retention_inputs(registry, "router")
    decisions = {d.ref: d.action for d in plan_retention(
        "router", inputs.versions, aliases=inputs.aliases, split=inputs.split, rollout=inputs.rollout,
        policy=RetentionPolicy(keep_recent=3, retire_after_days=30), now=clock.now)}
    assert decisions["router:v1"] != "retire" and decisions["router:v2"] == "retire"


def test_registry_show_and_list_still_work_for_a_decommissioned_version(tmp_path, monkeypatch, adapter):
    from typer.testing import CliRunner

    from registry.service import open_registry
    from slm_cli.main import app

    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    with open_registry() as reg:
        for status in (S.CANDIDATE, S.REJECTED):
            reg.register("intent-router", staged=adapter, status=status, reason="r", actor="t", lineage=LINEAGE,
                         evals=[], task="banking77")
        reg.store.promote("intent-router", 1, actor="t", reason="first")
        retire_version(reg, "intent-router", 2, policy=ARCHIVE, actor="t", reason="old")
    shown = CliRunner().invoke(app, ["registry", "show", "intent-router:v2", "--json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.output)
    assert doc["status"] == "decommissioned" and doc["status_history"][-1]["to_status"] == "decommissioned"
    listed = CliRunner().invoke(app, ["registry", "list", "--json"])
    assert [r["status"] for r in json.loads(listed.output)] == ["promoted", "decommissioned"]
    assert CliRunner().invoke(app, ["registry", "show", "intent-router:v2"]).exit_code == 0


def test_weights_gone_before_the_first_run_are_not_recorded_as_moved(world):
    import shutil

    shutil.rmtree(tomb.version_folder(root(world), "router", 2))  # removed by hand, not by a retirement
    done = retire(world)
    assert "weights archived" not in done.steps
    assert not world.store.has_event("version.weights.archived", "router:v2")
    assert world.store.get_version("router", 2).status is S.DECOMMISSIONED


def test_a_retirement_lock_held_too_long_is_refused_by_name_and_one_that_cannot_lock_goes_on(world, monkeypatch):
    import errno
    import threading

    from registry import locks
    from registry import retire as retire_mod

    held, release, raised = threading.Event(), threading.Event(), []
    other = RegistryStore(world.store.engine)  # another holder of the same registry (its own connection on PG)

    def hold():
        with other.lock("retire/router/v2", wait_s=5, busy="the other retirement"):
            held.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(timeout=30)
    monkeypatch.setattr(retire_mod, "RETIRE_WAIT_S", 0.3)
    try:
        retire(world)
        raised.append("retired")
    except locks.LockBusy as exc:
        raised.append(str(exc))
    finally:
        release.set()
        holder.join()
    assert len(raised) == 1 and "router:v2 is being retired by another process" in raised[0]
    assert world.store.get_version("router", 2).status is S.REJECTED  # it waited: nothing was started

    if world.store.engine.dialect.name == "sqlite":
        def no_locks(handle, operation):
            raise OSError(errno.ENOLCK, "No locks available")

        monkeypatch.setattr(locks.fcntl, "flock", no_locks)  # a mount without locks: retire anyway, with a warning
    assert "decommissioned" in retire(world).steps
