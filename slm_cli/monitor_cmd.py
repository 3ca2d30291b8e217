"""``slm monitor``: run the drift monitor flow once, locally (ephemeral Prefect unless PREFECT_API_URL points
at a server), on the last ``--hours`` of the prediction log or on ``--since``/``--until``.

Exit status: 0 the window was checked (drift or not: the verdict is printed, and an event emitted when the
storm rule allows: never without a Prefect server, where no automation would hear it), 2 the run could not start
(no champion, a bad policy or window, a missing or altered reference snapshot).

Registered on the CLI app with ``app.command("monitor")(monitor_cmd)``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape


def monitor_cmd(
    model: Annotated[str | None, typer.Option(help="registry model; default SLM_MODEL_NAME")] = None,
    hours: Annotated[float, typer.Option(help="window: the last HOURS up to --until (or now)")] = 24.0,
    since: Annotated[datetime | None, typer.Option(help="window start, UTC (overrides --hours)")] = None,
    until: Annotated[datetime | None, typer.Option(help="window end, UTC, exclusive; default now")] = None,
    policy: Annotated[str, typer.Option(help="drift policy YAML")] = "configs/monitor.yaml",
    data: Annotated[str | None, typer.Option(help="labelled data drop to name in the drift event")] = None,
) -> None:
    """Check the prediction log for drift against the champion's reference; on drift, call for a retrain."""
    from datetime import UTC

    from slm_cli.console import make_console, print_error
    from slm_cli.flows_cmd import prefect_env

    console = make_console()
    prefect_env()
    from flows.monitor import monitor
    from lifecycle.drift_policy import MonitorParams
    from registry.artifacts import ArtifactIntegrityError
    from registry.store import NotFoundError

    # typer parses ISO dates without a zone: they are read as UTC, the zone of every timestamp in the log.
    since, until = (None if t is None else t if t.tzinfo else t.replace(tzinfo=UTC) for t in (since, until))
    try:
        params = MonitorParams(model=model, hours=hours, since=since, until=until, policy=policy, data=data)
        params.window(datetime.now(UTC))
        check_policy(policy)  # before the flow run, which would log tracebacks before this one line
        outcome = monitor(params)
    except (NotFoundError, FileNotFoundError, ValueError, ArtifactIntegrityError) as exc:
        # ArtifactIntegrityError: the champion's training snapshot (the reference) is missing or was altered.
        print_error(exc)
        raise typer.Exit(2) from None
    colour = {"pass": "green", "fail": "red"}.get(outcome.verdict, "yellow")
    console.print(f"[{colour}]●[/{colour}] {outcome.model} (champion {outcome.champion}): drift verdict "
                  f"[bold]{outcome.verdict}[/bold]; {outcome.action}")
    for reason in outcome.reasons:
        console.print(f"    {escape(reason)}")  # "[fail] ..." is text, not rich markup
    if outcome.report:
        console.print(f"    report: {escape(str(outcome.report))}")
    for reason in outcome.handoff:
        console.print(f"    hand-off: {escape(reason)}")


def check_policy(path: str) -> None:
    """Read a drift policy as the monitor will (FileNotFoundError / ValueError name what is wrong)."""
    from lifecycle.config import load_yaml_config
    from lifecycle.drift_policy import DriftPolicy
    from lifecycle.settings import in_project

    load_yaml_config(DriftPolicy, in_project(path))
