"""``slm report``: write the lifecycle report of a model as one self-contained HTML file and print its path.

Exit status: 0 written; 2 nothing to report (the model has no version) or the file could not be written.

Registered on the CLI app with ``app.command("report")(report_cmd)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_cmd(
    model: Annotated[str | None, typer.Option(help="registry model; default SLM_MODEL_NAME")] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file to write; default SLM_HOME/reports/<model>.html")] = None,
) -> None:
    """Versions, traffic share over time, rollout stages with intervals, drift, gates, rollbacks, audit chain."""
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from lifecycle.settings import get_settings
    from registry.service import open_registry
    from reporting.gather import NothingToReport
    from reporting.publish import default_path, write_report
    from slm_cli.console import describe_error, print_error

    try:
        settings = get_settings()
        model = model or settings.model_name
        path = (out or default_path(settings.home, model)).expanduser().resolve()
        with open_registry(settings) as registry:
            write_report(registry.store, model, path)
    except (NothingToReport, OSError, ValidationError, SQLAlchemyError, ValueError) as exc:
        print_error(describe_error(exc))
        raise typer.Exit(2) from None
    print(path)
