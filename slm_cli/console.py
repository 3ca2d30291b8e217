"""The CLI's rich consoles: a terminal's own width, or 120 columns where the output is piped or logged.

Rich falls back to 80 columns when its output is not a terminal (CI logs, ``make demo > demo.log``, a pipe into
``less``), folding tables and long status lines; 120 keeps a registry listing or the demo's steps one line each.
``COLUMNS`` in the environment still wins, as rich reads it first.
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape

PIPED_WIDTH = 120


def make_console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(stderr=stderr, width=PIPED_WIDTH)


def print_error(message: object) -> None:
    """``error: <message>`` in red, on standard error (a command's ``--json`` output stays the only thing on
    standard output); the message printed as written (an exception's text, a reason someone typed), never read as
    rich markup: "[fail] ..." would vanish, and "[/opt]" raises MarkupError."""
    make_console(stderr=True).print(f"[red]error:[/red] {escape(str(message))}")


def describe_error(exc: BaseException) -> str:
    """One line (or a few) for an error a user can act on, without the traceback."""
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, ValidationError):  # the settings (SLM_* variables)
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or exc.title}: {e['msg']}" for e in exc.errors())
    if isinstance(exc, SQLAlchemyError):
        cause = getattr(exc, "orig", None) or exc
        return f"the registry database failed: {type(cause).__name__}: {str(cause).splitlines()[0]}"
    hub = type(exc).__module__.startswith("huggingface_hub")  # LocalEntryNotFoundError is a FileNotFoundError too
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError) and not hub:
        return str(exc)  # a file named on the command line or in a config (its message names it)
    if isinstance(exc, OSError):  # the artifact store: a file system, or the Hub (huggingface_hub's errors are too)
        text = str(exc).strip()
        return f"the artifact store failed: {type(exc).__name__}: {text.splitlines()[0] if text else exc!r}"
    return str(exc)
