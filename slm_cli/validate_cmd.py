"""``slm validate PATH [--task FILE]``: check a training-data file against the task's data contract.

Runs the Great Expectations suite of :mod:`data_checks.validation` on PATH (a .jsonl/.json/.parquet
file or a datasets ``save_to_disk`` folder), with the task's intents as the allowed completions and both
golden sets as the prompts training data must not contain. The golden sets live under
``$SLM_HOME/data``, built there (deterministically) when missing or stale; Data Docs HTML goes to
``$SLM_HOME/data_docs``.

Exit status: 0 the data passes, 1 it breaks at least one rule, 2 it could not be read (or the task
config could not be). Errors are one line, never a traceback.

Registered on the CLI app with ``app.command("validate")(validate)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.table import Table

    from data_checks.validation import ValidationReport
    from lifecycle.task import TaskSpec

EXIT_VALID, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


def validate(
    path: Annotated[str, typer.Argument(help="data to check: .jsonl, .json, .parquet, or a save_to_disk folder "
                                             "(FOLDER@SPLIT for one split)")],
    task: Annotated[Path | None, typer.Option("--task", help="task config; default configs/task.yaml of "
                                                             "the project", dir_okay=False)] = None,
) -> None:
    """Validate training data (prompt/completion pairs) before it may be used to fine-tune."""
    # Heavy imports (pandas, Great Expectations) happen here, so `slm --help` stays fast.
    from pydantic import ValidationError
    from rich.text import Text

    from data_checks.readers import DataFileError
    from data_checks.validation import validate_file
    from lifecycle.settings import Settings
    from slm_cli.console import describe_error, make_console
    from training.task_data import ensure_task_data, golden_prompts

    out, err = make_console(), make_console(stderr=True)
    try:
        settings = Settings()
    except ValidationError as error:  # the SLM_* settings
        err.print(Text.assemble(("error: ", "bold red"), describe_error(error)), soft_wrap=True)
        raise typer.Exit(EXIT_UNREADABLE) from None
    try:
        spec = _load_spec(task)
        golden = golden_prompts(ensure_task_data(spec, settings.home / "data"))
        report = validate_file(path, spec, golden, settings.home / "data_docs")
    except (DataFileError, TaskConfigError, OSError) as error:
        err.print(Text.assemble(("error: ", "bold red"), _one_line(error)), soft_wrap=True)
        raise typer.Exit(EXIT_UNREADABLE) from None
    if report.success:
        out.print(Text.assemble(("PASS ", "bold green"), f"{path}: {report.rows} rows meet the data contract"),
                  soft_wrap=True)
    else:
        out.print(Text.assemble(("FAIL ", "bold red"),
                                f"{path}: {len(report.failures)} rule(s) broken in {report.rows} rows"),
                  soft_wrap=True)
        out.print(_failure_table(report))
    for note in report.skipped:
        out.print(f"skipped: {note}", soft_wrap=True, highlight=False, markup=False)
    if report.data_docs:
        out.print(f"Data Docs: {report.data_docs}", soft_wrap=True, highlight=False, markup=False)
    raise typer.Exit(EXIT_VALID if report.success else EXIT_INVALID)


class TaskConfigError(ValueError):
    """The task config is missing or invalid (a cause for exit status 2, like unreadable data)."""


def _load_spec(task: Path | None) -> TaskSpec:
    import yaml

    from lifecycle.settings import project_root
    from lifecycle.task import load_task

    root = project_root()
    path = task or root / "configs" / "task.yaml"
    try:
        return load_task(path, root)
    except (FileNotFoundError, ValueError, yaml.YAMLError) as error:
        # pydantic's ValidationError is a ValueError: a field out of range reads like a missing file.
        message = _one_line(error)
        raise TaskConfigError(message if str(path) in message else f"task config {path}: {message}") from None


def _failure_table(report: ValidationReport) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=False)
    for heading in ("rule", "column", "rows", "examples"):
        table.add_column(heading, overflow="fold")
    for failure in report.failures:
        count = "" if failure.unexpected_count is None else str(failure.unexpected_count)
        examples = "\n".join(_clip(e) for e in failure.examples) or failure.message
        # Text(...) so that data such as "[red]" or "[/]" is printed, not parsed as rich markup.
        table.add_row(Text(failure.rule), Text(failure.column or ""), Text(count), Text(examples))
    return table


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split()) or text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(error).__name__
