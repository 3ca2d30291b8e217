"""`slm bootstrap --hub-base`: an unpinned Hub reference is refused before anything runs, with the reason."""

import pytest
from typer.testing import CliRunner

from slm_cli.main import app


@pytest.mark.parametrize(("ref", "why"), [("acme/tiny-lm@main", "branch or tag"), ("acme/tiny-lm@1a2b3c4", "short sha"),
                                          ("acme/tiny-lm", "not pinned")])
def test_an_unpinned_hub_base_is_refused_and_nothing_is_created(tmp_path, monkeypatch, ref, why):
    home = tmp_path / "home"
    monkeypatch.setenv("SLM_HOME", str(home))
    result = CliRunner().invoke(app, ["bootstrap", "--hub-base", ref])
    assert result.exit_code == 2, result.output
    assert why in " ".join(result.output.split())  # rich wraps long lines
    assert not (home / "registry.db").exists()
