"""Operator commands on a real (SQLite) registry: promote, rollback, traffic pin — audited, traffic first."""

import json

import pytest
from typer.testing import CliRunner

from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, Lineage
from lifecycle.status import VersionStatus
from slm_cli.main import app

LINEAGE = Lineage(base_model=BaseModelRef(model_id="local://base/x", revision="0" * 64),
                  prompt_format=INTENT_V1.identity)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SLM_OPERATOR", "night-shift")
    from registry.service import open_registry

    with open_registry() as reg:
        for _ in range(2):
            reg.register("intent-router", staged=None, status=VersionStatus.CANDIDATE, reason="r", actor="t",
                         lineage=LINEAGE, evals=[], task="banking77")
        reg.store.promote("intent-router", 1, actor="t", reason="first")
    return tmp_path


def run(*args):
    return CliRunner().invoke(app, list(args))


def registry():
    from registry.service import open_registry

    return open_registry()


def test_promote_then_rollback_moves_traffic_and_aliases(home):
    assert run("promote", "intent-router:v2", "--reason", "hotfix").exit_code == 0
    from registry.traffic import get_split

    with registry() as reg:
        assert reg.store.aliases("intent-router") == {"champion": 2, "previous": 1}
        assert get_split(reg.store, "intent-router").champion == 2
    result = run("rollback", "--reason", "error spike")
    assert result.exit_code == 0, result.output
    with registry() as reg:
        assert get_split(reg.store, "intent-router").champion == 1
        assert reg.store.aliases("intent-router") == {"champion": 1}
        assert reg.store.get_version("intent-router", 2).status is VersionStatus.ROLLED_BACK
        events = reg.store.audit_events()
        split_at = next(i for i, e in enumerate(events)
                        if e.action == "traffic.split" and e.payload["reason"].startswith("rollback:"))
        alias_at = next(i for i, e in enumerate(events)
                        if e.action == "alias.moved" and e.payload["reason"] == "error spike")
        assert split_at < alias_at  # traffic is restored before the aliases move
        assert events[split_at].actor == events[alias_at].actor == "operator:night-shift"
        assert reg.store.verify_audit().ok


def test_an_operators_words_are_printed_as_written_never_read_as_markup(home):
    """Reasons are free text: "[ticket 42]" must show, and "[/opt]" must not crash the table (rich markup)."""
    reason = "[ticket 42] moved [/opt] files"
    assert run("promote", "intent-router:v2", "--reason", reason).exit_code == 0
    for command in (("registry", "history", "champion"), ("registry", "show", "intent-router:v2")):
        result = run(*command)
        assert result.exit_code == 0, (command, result.output)
        assert "[ticket 42]" in result.output, (command, result.output)


def test_pin_and_refusals(home):
    assert run("traffic", "pin", "--reason", "incident 42").exit_code == 0
    assert run("rollback", "--reason", "nothing to roll back to").exit_code == 2
    assert run("promote", "intent-router:v9", "--reason", "x").exit_code == 2
    empty = run("traffic", "pin", "--reason", "  ")
    assert empty.exit_code == 2 and "--reason must say why" in empty.output
    missing = run("promote", "intent-router:v2")
    assert missing.exit_code != 0


def _rollout_of_v3(reg):
    """v2 champion (v1 previous), and a rollout of a third version started with the demo plan."""
    from registry import rollout_exec
    from tasks.rollout import read_plan

    reg.register("intent-router", staged=None, status=VersionStatus.CANDIDATE, reason="r", actor="t",
                 lineage=LINEAGE, evals=[], task="banking77")
    reg.store.promote("intent-router", 2, actor="t", reason="second")
    return rollout_exec.begin(reg.store, "intent-router", 3, read_plan("configs/rollout-demo.yaml"), actor="t",
                              emit=lambda *a: None)


def test_promote_and_rollback_never_fight_a_rollout(home):
    from registry.rollouts import active_rollout, get_rollout
    from registry.traffic import get_split

    with registry() as reg:
        started = _rollout_of_v3(reg)
        assert started.champion == 2 and get_split(reg.store, "intent-router").shadow == 3  # stage 0: shadow
    refused = run("promote", "intent-router:v1", "--reason", "by hand")
    assert refused.exit_code == 2 and "rollout of v3 in progress" in refused.output
    with registry() as reg:
        assert reg.store.aliases("intent-router")["champion"] == 2  # nothing moved
    # The rollback aborts the rollout in the same decision: it would otherwise set the split back to v2.
    result = run("rollback", "--reason", "v2 is failing")
    assert result.exit_code == 0, result.output
    with registry() as reg:
        assert active_rollout(reg.store, "intent-router") is None
        assert get_rollout(reg.store, "intent-router", 3).phase == "aborted"
        split = get_split(reg.store, "intent-router")
        assert (split.champion, split.challenger, split.shadow) == (1, None, None)
        assert reg.store.aliases("intent-router")["champion"] == 1
        assert reg.store.verify_audit().ok


def test_status_look_says_what_a_stage_would_decide_now_and_saves_nothing(home):
    """A hold leaves no record; `slm rollout status --look` decides the stage now, as its next look would, and acts
    on nothing even when that look would roll the candidate back."""
    import time
    from datetime import datetime, timedelta

    from lifecycle.predictions import Prediction
    from registry.predictions import PredictionStore
    from registry.rollouts import get_rollout
    from registry.traffic import get_split

    with registry() as reg:
        started = _rollout_of_v3(reg)  # shadow, no traffic yet
    wrong_plan = run("rollout", "status", "--look")  # the default plan is not the one it runs by
    assert wrong_plan.exit_code == 2 and "runs by demo" in wrong_plan.output and "--plan" in wrong_plan.output
    result = run("rollout", "status", "--look", "--plan", "configs/rollout-demo.yaml")
    assert result.exit_code == 0, result.output
    assert "a look now at shadow" in result.output and "settle 1 s, the plan's): hold" in result.output
    assert "[inconclusive] champion: traffic: the champion arm received no requests" in result.output
    # A shadow that answers every request wrongly: the look's window is [applied_at + 1 s, now - 1 s) (settle_s 1).
    applied = datetime.fromisoformat(started.applied_at)
    with registry() as reg:
        revision = get_split(reg.store, "intent-router").revision
        PredictionStore(reg.store.engine).insert_many([
            Prediction(ts=applied + timedelta(seconds=1.1 + k / 1000), request_id=f"r-{k}", model="intent-router",
                       version=version, role=role, user_hash=f"caller-{k}", prompt="p", completion="c",
                       latency_ms=5.0, outcome="model_error" if role == "shadow" else "ok", served=role != "shadow",
                       split_revision=revision)
            for k in range(300) for version, role in ((2, "champion"), (3, "shadow"))])
        audit = len(reg.store.audit_events())
    time.sleep(max(0.0, (applied + timedelta(seconds=2.5) - datetime.now(applied.tzinfo)).total_seconds()))
    as_json = json.loads(run("rollout", "status", "--look", "--plan", "configs/rollout-demo.yaml", "--json").output)
    assert (as_json["look"]["action"], as_json["look"]["stage"], as_json["look"]["settle_s"]) == (
        "rollback", "shadow", 1.0)
    with registry() as reg:  # nothing saved, nothing done
        assert get_rollout(reg.store, "intent-router", 3).revision == started.revision
        assert len(reg.store.audit_events()) == audit
        assert get_split(reg.store, "intent-router").shadow == 3


def test_status_look_waits_for_a_stopped_runs_pending_effects(home):
    """A run that died between deciding and acting left the state at the decided stage, its window still the old
    split's: a look would judge the wrong traffic, so it says what to do instead."""
    from lifecycle.rollout_state import Emit
    from registry.rollouts import save_rollout

    with registry() as reg:
        started = _rollout_of_v3(reg)
        save_rollout(reg.store, started.model_copy(update={"pending": [Emit(event="slm.rollout.stage", stage="x")]}),
                     actor="t", expected_revision=started.revision)
    result = run("rollout", "status", "--look", "--plan", "configs/rollout-demo.yaml")
    assert result.exit_code == 1 and "1 effects of its last decision pending" in result.output
    assert "`slm rollout run` carries" in result.output  # (the line wraps at 120 columns)


def test_a_rollout_is_aborted_without_its_plan_file(home):
    from registry.rollouts import get_rollout

    with registry() as reg:
        _rollout_of_v3(reg)
    result = run("rollout", "abort", "--reason", "stop it")  # started with rollout-demo.yaml, not the default
    assert result.exit_code == 0, result.output
    with registry() as reg:
        state = get_rollout(reg.store, "intent-router", 3)
    assert state.phase == "aborted" and state.history[-1].stage == "stage-0"
    refused = run("rollout", "run", "intent-router:v9", "--plan", "configs/rollout-demo.yaml")
    assert refused.exit_code == 2 and "v9" in refused.output and "Traceback" not in refused.output
    missing = run("rollout", "run", "intent-router:v3", "--plan", "configs/nonexistent.yaml")
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_a_version_whose_files_are_gone_is_not_promoted(home):
    import shutil

    from registry.traffic import get_split

    with registry() as reg:
        shutil.rmtree(reg.version_dir(reg.store.get_version("intent-router", 2)))
    result = run("promote", "intent-router:v2", "--reason", "hotfix")
    assert result.exit_code == 2 and "missing" in result.output
    with registry() as reg:
        assert reg.store.aliases("intent-router") == {"champion": 1} and get_split(reg.store, "intent-router") is None


def test_registry_errors_are_one_line_and_an_edited_event_is_still_listed(home, monkeypatch):
    from sqlalchemy import text

    with registry() as reg, reg.store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET payload = 'not json' WHERE seq = 2"))
    listed = run("audit", "log", "--limit", "50")
    assert listed.exit_code == 0 and "unreadable: edited" in listed.output
    assert run("audit", "verify").exit_code == 1
    assert run("audit", "log", "--limit", "0").exit_code == 2  # not "every event"
    monkeypatch.setenv("SLM_DATABASE_URL", "notaurl")
    broken = run("registry", "list")
    assert broken.exit_code == 2 and "cannot open the registry" in broken.output and "Traceback" not in broken.output
    monkeypatch.delenv("SLM_DATABASE_URL")
    huge = run("registry", "show", "intent-router:v99999999999999999999999")
    assert huge.exit_code == 2 and "Traceback" not in huge.output


def test_a_promotion_that_fails_midway_moves_neither_aliases_nor_traffic(home, monkeypatch):
    import registry.operations as operations
    from registry.traffic import get_split

    def locked(*args, **kwargs):
        raise ValueError("database is locked")  # after the aliases moved, inside the same transaction

    monkeypatch.setattr(operations, "write_split", locked)
    result = run("promote", "intent-router:v2", "--reason", "hotfix")
    assert result.exit_code == 2 and "database is locked" in result.output
    with registry() as reg:
        assert reg.store.aliases("intent-router") == {"champion": 1} and get_split(reg.store, "intent-router") is None
        assert reg.store.get_version("intent-router", 2).status is VersionStatus.CANDIDATE


def test_a_model_name_that_escapes_or_cannot_be_addressed_is_refused(home, monkeypatch):
    with registry() as reg:
        for bad in ("../../../escape", "Intent Router", "a:b"):
            with pytest.raises(ValueError, match="invalid model name"):
                reg.register(bad, staged=None, status=VersionStatus.CANDIDATE, reason="r", actor="t",
                             lineage=LINEAGE, evals=[], task="banking77")
        assert reg.store.models() == ["intent-router"]
    assert not any(home.parent.glob("**/escape"))
    monkeypatch.setenv("SLM_MODEL_NAME", "Intent-Router")
    result = run("registry", "list")
    assert result.exit_code == 2 and "invalid model name" in result.output and "Traceback" not in result.output


def test_an_unknown_model_is_named_not_taken_for_an_empty_registry(home):
    for args in (("registry", "list", "--model", "nope"), ("registry", "history", "champion", "--model", "nope")):
        result = run(*args)
        assert result.exit_code == 2 and "no model 'nope'" in result.output and "intent-router" in result.output
    assert run("registry", "list", "--model", "intent-router").exit_code == 0


@pytest.mark.parametrize("command", [["report"], ["validate", "data.jsonl"], ["registry", "list"]])
@pytest.mark.parametrize("setting", [("SLM_HUB_RETRIES", "-1"), ("SLM_ARTIFACT_STORE", "hub")])
def test_bad_settings_are_one_line_and_exit_2_in_every_command(command, setting, tmp_path, monkeypatch):
    """An invalid SLM_* variable (a hub store without its namespace, a negative retry count) was a traceback in
    `slm report` and `slm validate`; every command says which setting is wrong, in one line."""
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SLM_HUB_NAMESPACE", raising=False)
    monkeypatch.setenv(*setting)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert said.startswith("error:") and ("hub_retries" in said or "SLM_HUB_NAMESPACE" in said), said
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_missing_file_reads_as_itself_and_a_hub_failure_as_the_artifact_store():
    from huggingface_hub.errors import LocalEntryNotFoundError

    from slm_cli.console import describe_error

    assert describe_error(FileNotFoundError("config plans/x.yaml does not exist")) == \
        "config plans/x.yaml does not exist"
    said = describe_error(LocalEntryNotFoundError("cannot reach the Hub\nmore"))
    assert said.startswith("the artifact store failed: LocalEntryNotFoundError:") and "cannot reach the Hub" in said
    assert "more" not in said  # one line
