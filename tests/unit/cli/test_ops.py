"""Operator commands on a real (SQLite) registry: promote, rollback, traffic pin — audited, traffic first."""

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


def test_pin_and_refusals(home):
    assert run("traffic", "pin", "--reason", "incident 42").exit_code == 0
    assert run("rollback", "--reason", "nothing to roll back to").exit_code == 2
    assert run("promote", "intent-router:v9", "--reason", "x").exit_code == 2
    empty = run("traffic", "pin", "--reason", "  ")
    assert empty.exit_code == 2 and "--reason must say why" in empty.output
    missing = run("promote", "intent-router:v2")
    assert missing.exit_code != 0
