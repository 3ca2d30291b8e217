"""`slm validate`: exit 0 valid, 1 invalid (table of failed rules), 2 unreadable (one line, no traceback)."""

import pytest
import typer
from typer.testing import CliRunner

from lifecycle.data import Pair, write_jsonl
from slm_cli.validate_cmd import validate

app = typer.Typer()
app.command("validate")(validate)


@app.command("noop")
def _noop() -> None:
    """A second command, so `validate` stays a named subcommand as in the real app."""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    # One SLM_HOME for the module: the golden sets are built by the first run and reused by the rest.
    path = tmp_path_factory.mktemp("slm") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLM_HOME", str(path))
        yield path


def run(*args):
    return CliRunner().invoke(app, ["validate", *map(str, args)])


def pairs(n, completion="card_arrival"):
    return [Pair(prompt=f"question number {chr(97 + i % 26)} {chr(97 + i // 26)} about my card", completion=completion)
            for i in range(n)]


def test_valid_file_exits_0_and_prints_data_docs(home, tmp_path):
    path = write_jsonl(tmp_path / "ok.jsonl", pairs(60))
    result = run(path)
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "60 rows" in result.output
    assert f"Data Docs: {home / 'data_docs' / 'index.html'}" in result.output
    golden = home / "data" / "golden-before.jsonl"
    assert golden.is_file()  # benchmark prompts were built under SLM_HOME ...
    stamp = golden.stat().st_mtime_ns
    assert run(path).exit_code == 0
    assert golden.stat().st_mtime_ns == stamp  # ... and reused by the next run


def test_invalid_file_exits_1_with_a_table_of_failed_rules(home, tmp_path):
    rows = pairs(60)[:-2] + [Pair(prompt="mail me at jo@bank.com", completion="card_arrival"),
                             Pair(prompt="anything at all", completion="crypto_wallet")]
    result = run(write_jsonl(tmp_path / "bad.jsonl", rows))
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output
    for text in ("pii_email", "completion_allowed", "jo@bank.com", "crypto_wallet"):
        assert text in result.output


@pytest.mark.parametrize(("content", "message"), [
    (b'{"prompt": "a", "completion": "b"}\nnot json\n', "line 2 is not valid JSON"),
    (b"", "holds no rows"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_unreadable_file_exits_2_with_one_line(home, tmp_path, content, message):
    path = tmp_path / "broken.jsonl"
    path.write_bytes(content)
    result = run(path)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_task_file_exits_2(home, tmp_path):
    path = write_jsonl(tmp_path / "ok.jsonl", pairs(60))
    result = run(path, "--task", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "nope.yaml does not exist" in result.output and "Traceback" not in result.output


def test_missing_data_file_exits_2(home, tmp_path):
    result = run(tmp_path / "absent.jsonl")
    assert result.exit_code == 2 and "no such file" in result.output
