"""`slm up` / `slm down`: the local stack (Prefect server, work pool, deployments, worker, gateway)."""

from __future__ import annotations

from typing import Annotated

import typer

from slm_cli.console import make_console, print_error

console = make_console()


def up_cmd(
    prefect_port: Annotated[int, typer.Option(help="Prefect server and UI port")] = 4200,
    gateway_port: Annotated[int, typer.Option(help="gateway port")] = 8000,
    gateway: Annotated[bool, typer.Option(help="start the gateway (needs a champion: `slm bootstrap`)")] = True,
    worker: Annotated[bool, typer.Option(help="start a worker on the slm-local pool")] = True,
    prefect_database_url: Annotated[str | None, typer.Option(
        help="Prefect server database, e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/prefect "
             "(default: SQLite under SLM_HOME/prefect)")] = None,
) -> None:
    """Start the local stack and print where the UI is. `slm down` stops it."""
    import httpx

    from slm_cli.stack import StackError, up

    try:
        record = up(prefect_port=prefect_port, gateway_port=gateway_port if gateway else None, worker=worker,
                    database_url=prefect_database_url, status=lambda m: console.print(f"[cyan]↑[/cyan] {m}"))
    except StackError as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:  # the new server refused a setup call (it was stopped again: `up` cleans up)
        print_error(f"the Prefect server refused a setup call: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    console.print(f"[green]✓[/green] up. Prefect UI: {record.ui_url}"
                  + (f" · gateway: {record.gateway_url}/v1" if record.gateway_url else "")
                  + f" · export PREFECT_API_URL={record.api_url} to run flows against it")


def down_cmd() -> None:
    """Stop what `slm up` started (by the pids it recorded)."""
    from slm_cli.stack import StackError, down

    try:
        stopped = down(status=lambda m: console.print(f"[yellow]↓[/yellow] {m}"))
    except StackError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    if not stopped:
        console.print("nothing recorded as running")
