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


def test_errors_are_printed_as_written_never_read_as_markup_on_standard_error(monkeypatch):
    import io

    from slm_cli.console import print_error

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    print_error(ValueError("[fail] gate: moved [/opt] files"))
    assert (out.getvalue(), err.getvalue()) == ("", "error: [fail] gate: moved [/opt] files\n")
