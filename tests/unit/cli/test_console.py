"""The CLI's consoles keep a line a line where the output is piped or logged (rich would fold it at 80 columns)."""

import io

from slm_cli import console as cli_console


def test_piped_output_is_120_columns_and_columns_still_wins(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr("sys.stdout", io.StringIO())  # not a terminal, as in CI or `make demo > log`
    piped = cli_console.make_console()
    assert piped.width == cli_console.PIPED_WIDTH == 120
    piped.print("x" * 100)
    assert piped.file.getvalue() == "x" * 100 + "\n"  # one line, not folded at 80
    monkeypatch.setenv("COLUMNS", "90")
    assert cli_console.make_console().width == 90  # the user's setting
