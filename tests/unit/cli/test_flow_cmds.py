"""Flow commands refuse bad input in one line before any flow run starts (a flow run would log its tracebacks
first): configs that are missing, empty or invalid, and parameters out of range."""

import pytest
from typer.testing import CliRunner

from slm_cli.main import app


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    return tmp_path


def run(*args):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(("args", "says"), [
    (["retrain", "--config", "configs/nonexistent.yaml"], "does not exist"),
    (["retrain", "--replay-rows", "-5"], "replay_rows"),
    (["retrain"], "slm bootstrap"),  # nothing bootstrapped: no golden sets, no champion
    (["monitor", "--policy", "configs/nonexistent.yaml"], "does not exist"),
    (["decommission", "--policy", "EMPTY"], "is empty"),
    (["decommission", "--policy", "configs/retention.yaml", "--monitor-policy", "EMPTY"], "is empty"),
])
def test_bad_input_to_a_flow_command_is_one_line_before_any_run(home, args, says):
    (home / "empty.yaml").write_text("")
    result = run(*[str(home / "empty.yaml") if a == "EMPTY" else a for a in args])
    assert result.exit_code == 2, result.output
    assert says in result.output.replace("\n", "") and "Traceback" not in result.output


@pytest.mark.parametrize("error", ["LockBusy", "LockUnavailable"])
def test_a_registration_that_cannot_take_its_lock_is_one_line_and_exit_1(home, monkeypatch, error):
    import typer

    import flows.bootstrap
    import flows.retrain
    from registry import locks
    from slm_cli.flows_cmd import run_retrain

    why = "another registration of demo is still publishing its files (lock register/demo held for over 1800 s)"

    def refused(*args, **kwargs):
        raise getattr(locks, error)(why)

    monkeypatch.setattr(flows.bootstrap, "bootstrap", refused)
    monkeypatch.setattr(flows.retrain, "retrain", refused)
    result = run("bootstrap")
    assert result.exit_code == 1, result.output
    assert "not registered" in result.output and why in " ".join(result.output.split())
    assert "Traceback" not in result.output
    with pytest.raises(typer.Exit) as exit_:
        run_retrain(object())
    assert exit_.value.exit_code == 1
