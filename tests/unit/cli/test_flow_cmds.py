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
