"""The retrain loop end to end under a real (temporary) Prefect server, on tiny models."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lifecycle.config import RetrainParams
from lifecycle.data import fingerprint, read_pairs, write_jsonl
from lifecycle.settings import get_settings

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


@pytest.fixture(scope="module")
def bootstrapped(slm_project):
    from flows.bootstrap import BootstrapParams, bootstrap

    outcome = bootstrap(BootstrapParams(model="router", task=str(slm_project / "task.yaml"),
                                        base_model=str(slm_project / "base_model.yaml")))
    assert outcome.created and outcome.champion == "router:v1"
    again = bootstrap(BootstrapParams(model="router", task=str(slm_project / "task.yaml"),
                                      base_model=str(slm_project / "base_model.yaml")))
    assert not again.created and again.champion == "router:v1"
    return slm_project


@pytest.fixture(scope="module")
def small_drop(bootstrapped, tmp_path_factory):
    drifted = read_pairs(get_settings().home / "data" / "drifted-labelled.jsonl")
    return write_jsonl(tmp_path_factory.mktemp("drop") / "drop.jsonl", drifted[:300])


def registry():
    from registry.service import open_registry

    return open_registry()


def test_bootstrap_registers_v1_as_champion_with_lineage(bootstrapped):
    with registry() as reg:
        v1 = reg.get("router:champion")
        assert v1.number == 1 and v1.status.value == "promoted"
        assert {r.benchmark for r in v1.evals} == {"golden-before", "golden-drifted"}
        train = next(d for d in v1.lineage.datasets if d.name == "train")
        assert fingerprint(read_pairs(reg.artifacts.dataset_path(train.snapshot))) == train.sha256
        assert reg.base_dir(v1).is_dir()  # content matches the recorded revision
        assert [m.version for m in reg.store.alias_history("router", "champion")] == [1]


def test_retrain_registers_a_challenger_with_lineage_and_evals(bootstrapped, small_drop):
    from flows.retrain import retrain

    outcome = retrain(RetrainParams(config=str(bootstrapped / "retrain.yaml"), data=str(small_drop),
                                    reason="test"))
    assert outcome.version == "router:v2" and outcome.champion == "router:v1"
    assert outcome.status in {"candidate", "rejected"}
    assert (outcome.status == "candidate") == (outcome.verdict == "pass")
    assert outcome.reasons and all(r.startswith("[") for r in outcome.reasons)
    with registry() as reg:
        v2 = reg.get("router:v2")
        lineage = v2.lineage
        assert lineage.parent == "router:v1" and lineage.trigger == "test"
        assert lineage.prompt_format == reg.get("router:v1").prompt_format
        names = {d.name: d for d in lineage.datasets}
        assert {"labelled-drop", "train", "golden-before", "golden-drifted"} <= set(names)
        assert names["labelled-drop"].rows == 300 and names["train"].rows == 500  # 300 + 200 replayed
        for d in lineage.datasets:
            assert fingerprint(read_pairs(reg.artifacts.dataset_path(d.snapshot))) == d.sha256
        assert lineage.recipe["r"] == 4 and lineage.libraries["torch"].startswith("2.")
        folder = reg.version_dir(v2)
        assert (folder / "adapter_config.json").is_file() and (folder / "README.md").is_file()
        assert json.loads((folder / "lineage.json").read_text())["parent"] == "router:v1"
        assert {r["benchmark"] for r in json.loads((folder / "eval.json").read_text())} == {
            "golden-before", "golden-drifted"}
        actions = [e.action for e in reg.store.audit_events()]
        assert "gate.decided" in actions
        assert ("slm.candidate.published" if outcome.status == "candidate" else "slm.gate.failed") in actions
        assert reg.store.verify_audit().ok
        assert reg.store.get_alias("router", "champion") == 1  # the gate never promotes


def test_bad_data_fails_the_run_and_trains_nothing(bootstrapped, tmp_path):
    from flows.retrain import retrain
    from tasks.data import DataRejected

    bad = tmp_path / "bad.jsonl"
    rows = [{"prompt": f"please mail me at user{i}@example.com", "completion": "not_an_intent"} for i in range(30)]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with registry() as reg:
        before = len(reg.store.list_versions("router"))
    with pytest.raises(DataRejected, match="completion_allowed|pii_email"):
        retrain(RetrainParams(config=str(bootstrapped / "retrain.yaml"), data=str(bad)))
    with registry() as reg:
        assert len(reg.store.list_versions("router")) == before
        rejected = [e for e in reg.store.audit_events() if e.action == "slm.data.rejected"]
        assert rejected and any("pii_email" in r for r in rejected[-1].payload["failed_rules"])


def test_cli_reads_the_result(bootstrapped):
    from slm_cli.main import app

    runner = CliRunner()
    listed = runner.invoke(app, ["registry", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    refs = {row["ref"]: row for row in json.loads(listed.output)}
    assert refs["router:v1"]["aliases"] == ["champion"]
    history = runner.invoke(app, ["registry", "history", "champion", "--model", "router", "--json"])
    assert history.exit_code == 0 and json.loads(history.output)[0]["version"] == 1
    verify = runner.invoke(app, ["audit", "verify"])
    assert verify.exit_code == 0 and "intact" in verify.output
    missing = runner.invoke(app, ["registry", "show", "router:v99"])
    assert missing.exit_code == 2 and "not in the registry" in missing.output


def test_a_retried_run_that_registered_returns_its_version_and_validates_nothing_again(bootstrapped, small_drop,
                                                                                      tmp_path, monkeypatch):
    """Prefect's Retry keeps the run's id. A run whose version was registered (its report step failed, say) is
    retried after its drop was cleaned up: the version it registered, not a data rejection for a published one."""
    import shutil
    from types import SimpleNamespace

    import flows.retrain
    from flows.retrain import retrain

    monkeypatch.setattr(flows.retrain, "flow_run", SimpleNamespace(get_id=lambda: "run-retried-once"))
    drop = shutil.copy(small_drop, tmp_path / "drop.jsonl")
    params = RetrainParams(config=str(bootstrapped / "retrain.yaml"), data=str(drop), reason="retry-test")
    first = retrain(params)
    (tmp_path / "drop.jsonl").unlink()
    again = retrain(params)
    assert (again.version, again.status, again.verdict, again.reasons) == (
        first.version, first.status, first.verdict, first.reasons)
    with registry() as reg:
        registered = [e for e in reg.store.audit_events() if e.action == "version.registered"
                      and e.payload.get("run") == "run-retried-once"]
        assert [e.subject for e in registered] == [first.version]
        assert not [e for e in reg.store.audit_events() if e.action == "slm.data.rejected"
                    and e.payload.get("reason") == "retry-test"]
