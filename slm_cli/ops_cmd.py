"""`slm promote`, `slm rollback`, `slm traffic pin`: operator actions, each audited with who and why."""

from __future__ import annotations

import getpass
import os
from typing import Annotated

import typer

from slm_cli.console import make_console, print_error
from slm_cli.registry_cmd import _registry

console = make_console()
traffic_app = typer.Typer(help="The traffic split the gateways serve.", no_args_is_help=True)
Reason = Annotated[str, typer.Option("--reason", help="why: recorded in the audit log (required)")]


def _actor() -> str:
    return f"operator:{os.environ.get('SLM_OPERATOR') or getpass.getuser()}"


def _check(reason: str) -> None:
    if not reason.strip():
        print_error("--reason must say why")
        raise typer.Exit(2)


def promote_cmd(ref: Annotated[str, typer.Argument(help="MODEL:vN to make champion")], reason: Reason) -> None:
    """Make a version champion now (the old champion stays loadable as `previous`) and send it all traffic."""
    from registry import operations

    _check(reason)
    with _registry() as reg:
        model, number = reg.resolve(ref)
        split = operations.promote(reg, model, number, actor=_actor(), reason=reason)
    console.print(f"[green]✓[/green] {model}:v{number} is champion; all traffic to it (split revision "
                  f"{split.revision})")


def rollback_cmd(reason: Reason, model: Annotated[str | None, typer.Option(help="model name")] = None) -> None:
    """Instant rollback to the previous champion: traffic and aliases in one commit; a rollout in progress is
    aborted first."""
    from registry import operations
    from registry.rollouts import active_rollout

    _check(reason)
    with _registry() as reg:
        name = model or reg.default_model
        emit = operations._no_events
        if active_rollout(reg.store, name) is not None:  # its abort is announced as a Prefect event
            from slm_cli.flows_cmd import prefect_env

            prefect_env()
            from tasks.rollout import emit_rollout_event as emit
        restored, demoted = operations.rollback(reg, name, actor=_actor(), reason=reason, emit=emit)
    console.print(f"[yellow]↩[/yellow] v{restored} is champion again with all traffic; v{demoted} is rolled_back")


@traffic_app.command("pin")
def pin_cmd(reason: Reason, model: Annotated[str | None, typer.Option(help="model name")] = None) -> None:
    """All traffic to the champion: no challenger, no shadow; a running rollout pauses until a person
    resumes (`slm rollout approve`) or rejects it."""
    from slm_cli.flows_cmd import prefect_env

    _check(reason)
    prefect_env()
    from registry import operations
    from tasks.rollout import emit_rollout_event

    with _registry() as reg:
        split = operations.pin_champion(reg, model or reg.default_model, actor=_actor(), reason=reason,
                                        emit=emit_rollout_event)
    console.print(f"[green]✓[/green] all traffic pinned to v{split.champion} (split revision {split.revision})")
