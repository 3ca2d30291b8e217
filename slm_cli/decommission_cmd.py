"""`slm decommission`: run the decommission flow locally (ephemeral Prefect unless PREFECT_API_URL is set)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from slm_cli.console import make_console, print_error

console = make_console()
_COLOUR = {"retired": "red", "retire": "yellow", "would retire": "yellow", "refused": "magenta", "keep": "green",
           "done": "dim"}


def decommission_cmd(
    model: Annotated[str | None, typer.Option(help="model name (default: SLM_MODEL_NAME)")] = None,
    policy: Annotated[str, typer.Option(help="retention policy YAML")] = "configs/retention.yaml",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="plan and report only; change nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    monitor_policy: Annotated[str, typer.Option(help="drift monitor policy YAML: the log purge keeps its pinned "
                                                     "reference window; '' for none")] = "configs/monitor.yaml",
) -> None:
    """Retire versions by the retention policy: unload, archive or delete weights, keep a tombstone.

    Never retires a version with an alias, traffic, or a part in a running rollout.
    """
    from slm_cli.flows_cmd import prefect_env

    prefect_env()
    from flows.decommission import decommission
    from lifecycle.config import load_yaml_config
    from lifecycle.retention import RetentionPolicy
    from lifecycle.settings import in_project
    from registry.store import NotFoundError
    from slm_cli.monitor_cmd import check_policy
    from tasks.decommission import purge_line, report_rows

    for what, path in (("policy", policy), ("monitor policy", monitor_policy)):
        if path and not in_project(path).is_file():
            print_error(f"{what} {path} does not exist")
            raise typer.Exit(2)
    try:  # the policies read before the flow run, which would log tracebacks before this one line
        load_yaml_config(RetentionPolicy, in_project(policy))
        if monitor_policy:
            check_policy(monitor_policy)
    except (FileNotFoundError, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    try:
        outcome = decommission(model=model, policy_path=policy, dry_run=dry_run, monitor_policy=monitor_policy or None)
    except (NotFoundError, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps({**outcome.model_dump(mode="json"), "retired": outcome.retired,
                          "refused": outcome.refused}, indent=2))
        return
    rows = report_rows(outcome.decisions, outcome.outcomes, dry_run)
    table = Table("version", "status", "action", "reasons")
    for r in rows:
        colour = _COLOUR.get(r["action"], "white")
        table.add_row(r["version"], r["status"], f"[{colour}]{r['action']}[/{colour}]", escape(r["reasons"]))
    console.print(table)
    if dry_run:
        console.print(f"{outcome.model}: dry run, would retire {sum(r['action'] == 'would retire' for r in rows)}")
    else:
        console.print(f"{outcome.model}: retired {len(outcome.retired)}, refused {len(outcome.refused)}")
    console.print(purge_line(outcome.log_plan, outcome.log_rows_due, outcome.log_purge))
