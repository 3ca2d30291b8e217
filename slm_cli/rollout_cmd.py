"""`slm rollout ...`: the canary statistics, offline."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

rollout_app = typer.Typer(help="Rollouts: shadow, canary stages, promotion or rollback.", no_args_is_help=True)
console = Console()


@rollout_app.command("simulate")
def simulate_cmd(
    runs: Annotated[int, typer.Option(help="simulated rollouts per scenario")] = 1000,
    p_champion: Annotated[float, typer.Option(help="champion error rate")] = 0.01,
    p_challenger: Annotated[float, typer.Option(help="regressed challenger error rate")] = 0.05,
    batch: Annotated[int, typer.Option(help="requests per arm between looks")] = 50,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Replay synthetic traffic against the rollout's rate test: A/A false rollbacks, detection of a
    regression and requests to rollback, beside a fixed-horizon test and naive repeated z-tests."""
    from lifecycle.simulate import Scenario, simulate

    try:
        scenario = Scenario(runs=runs, p_champion=p_champion, p_challenger=p_challenger, batch=batch, seed=seed)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    report = simulate(scenario)
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    table = Table("rule", "A/A false rollbacks", "regression detected", "requests per arm to rollback")
    mean = report.regression.mean_requests_per_arm
    table.add_row("mSPRT, a look every batch (the rollout's)", f"{report.aa.false_rollback_rate:.1%}",
                  f"{report.regression.detection_rate:.1%}", f"{mean:.0f}" if mean else "—")
    fixed = report.fixed_horizon
    table.add_row("fixed horizon, one look", f"{fixed.false_rollback_rate:.1%}", f"{fixed.detection_rate:.1%}",
                  str(fixed.requests_per_arm))
    naive = report.naive_repeated_z
    table.add_row("naive z-test every batch", f"{naive.false_rollback_rate:.1%}", f"{naive.detection_rate:.1%}",
                  f"{naive.mean_requests_per_arm:.0f}" if naive.mean_requests_per_arm else "—")
    console.print(f"{runs} runs each; error rate {p_champion:.1%} vs {p_challenger:.1%}, a look every {batch} "
                  "requests per arm")
    console.print(table)
