"""`slm rollout ...`: the canary statistics, offline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from slm_cli.console import make_console, print_error

rollout_app = typer.Typer(help="Rollouts: shadow, canary stages, promotion or rollback.", no_args_is_help=True)
console = make_console()


def _n(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _simulated(scenario: Callable[[], Any], simulate: Callable[[Any], Any], as_json: bool) -> Any:
    """Build the scenario (a bad option: its error, exit 2), simulate it; printed here and None with --json."""
    try:
        built = scenario()
    except ValueError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    report = simulate(built)
    if as_json:
        print(report.model_dump_json(indent=2))
        return None
    return report


@rollout_app.command("simulate")
def simulate_cmd(
    runs: Annotated[int, typer.Option(help="simulated rollouts per scenario")] = 1000,
    p_champion: Annotated[float, typer.Option(help="champion rate (an error rate; a success rate with --harmful "
                                              "lower)")] = 0.01,
    p_challenger: Annotated[float, typer.Option(help="regressed challenger rate")] = 0.05,
    harmful: Annotated[Literal["higher", "lower"], typer.Option(
        help="higher: the rate is an error rate; lower: a success rate, e.g. --p-champion 0.85 --p-challenger 0.80",
    )] = "higher",
    batch: Annotated[int, typer.Option(help="requests per arm between looks")] = 50,
    max_per_arm: Annotated[int, typer.Option(help="the mSPRT stops looking here")] = 2000,
    alpha: Annotated[float, typer.Option(help="one-sided error rate of every rule")] = 0.05,
    tau: Annotated[float, typer.Option(help="the regression worth catching: where the mSPRT's mixing law is "
                                       "centred")] = 0.04,
    looks: Annotated[int, typer.Option(help="planned looks of the group-sequential baselines")] = 5,
    design_p_challenger: Annotated[float | None, typer.Option(
        help="challenger rate the fixed and group-sequential baselines are sized for (default: --p-challenger)",
    )] = None,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Replay synthetic traffic against the rollout's rate test: A/A false rollbacks, detection of a
    regression and requests to rollback, beside fixed-horizon, group-sequential and naive repeated z-tests; then
    the pass side: requests to pass on A/A and passes of the regressed challenger, beside the previous rule."""
    from lifecycle.simulate import Scenario, simulate

    report = _simulated(lambda: Scenario(
        runs=runs, p_champion=p_champion, p_challenger=p_challenger, harmful=harmful, batch=batch,
        max_per_arm=max_per_arm, alpha=alpha, tau=tau, looks=looks, design_p_challenger=design_p_challenger,
        seed=seed), simulate, as_json)
    if report is None:
        return
    table = Table("rule", "A/A rolled back", "regression caught", "mean n to rollback", "max n")
    table.add_row(f"mSPRT, every {batch} (rollout)", f"{report.aa.false_rollback_rate:.1%}",
                  f"{report.regression.detection_rate:.1%}", _n(report.regression.mean_requests_per_arm),
                  str(max_per_arm))
    prev = report.previous_msprt
    table.add_row(f"previous mSPRT, N(0, tau^2), every {batch}", f"{prev.false_rollback_rate:.1%}",
                  f"{prev.detection_rate:.1%}", _n(prev.mean_requests_per_arm), str(max_per_arm))
    fixed = report.fixed_horizon
    table.add_row("fixed horizon", f"{fixed.false_rollback_rate:.1%}", f"{fixed.detection_rate:.1%}",
                  str(fixed.requests_per_arm), str(fixed.requests_per_arm))
    for gs in (report.group_sequential, report.group_sequential_pocock):
        name = "OBF" if gs.spending == "obrien_fleming" else "Pocock"
        table.add_row(f"group seq. {name}, {gs.looks} looks",
                      f"{gs.false_rollback_rate:.1%}", f"{gs.detection_rate:.1%}", _n(gs.mean_requests_per_arm),
                      str(gs.max_requests_per_arm))
    naive = report.naive_repeated_z
    table.add_row(f"naive z, every {batch}", f"{naive.false_rollback_rate:.1%}", f"{naive.detection_rate:.1%}",
                  _n(naive.mean_requests_per_arm), str(max_per_arm))
    designed = "" if design_p_challenger is None else f" (baselines sized for {design_p_challenger:.1%})"
    rate = "error rate" if harmful == "higher" else "success rate"
    console.print(f"{runs} runs each; {rate} {p_champion:.1%} vs {p_challenger:.1%}{designed}, tau {tau}, "
                  f"one-sided alpha {alpha}; n: requests per arm")
    console.print(table)
    passes = Table("pass rule", "A/A passed", "mean n to pass (A/A)", "regression passed (false if >= tau)")
    for name, r in ((f"no-regression test from its floor, every {batch} (rollout)", report.passing),
                    (f"interval's bound below tau, every {batch} (until 2026-11-28)", report.previous_passing)):
        passes.add_row(name, f"{r.aa_pass_rate:.1%}", _n(r.mean_requests_per_arm), f"{r.regression_pass_rate:.1%}")
    console.print(passes)


@rollout_app.command("simulate-callers")
def simulate_callers_cmd(
    runs: Annotated[int, typer.Option(help="simulated rollouts per scenario")] = 1000,
    p_champion: Annotated[float, typer.Option(help="mean error rate of the champion's callers")] = 0.05,
    p_challenger: Annotated[float, typer.Option(help="mean error rate of the regressed challenger's callers")] = 0.09,
    callers: Annotated[int, typer.Option(help="callers per run")] = 400,
    challenger_share: Annotated[float, typer.Option(help="each caller goes to the challenger with this "
                                                    "probability (the canary's share)")] = 0.5,
    volume_skew: Annotated[float, typer.Option(help="Zipf exponent of requests per caller (0: all equal)")] = 1.0,
    icc: Annotated[float, typer.Option(help="intra-caller correlation of errors (0: independent requests)")] = 0.05,
    batch: Annotated[int, typer.Option(help="requests (both arms) between looks")] = 50,
    max_requests: Annotated[int, typer.Option(help="requests per run (both arms)")] = 4000,
    alpha: Annotated[float, typer.Option(help="one-sided error rate")] = 0.05,
    tau: Annotated[float, typer.Option(help="the regression worth catching")] = 0.04,
    seed: Annotated[int, typer.Option()] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Replay traffic from sticky callers (a few busy ones, errors that come by caller) against the rollout's rate
    test, with the binomial variance and with the caller-clustered one the rollout uses."""
    from lifecycle.simulate_callers import CallerScenario, simulate_callers

    report = _simulated(lambda: CallerScenario(
        runs=runs, p_champion=p_champion, p_challenger=p_challenger, callers=callers,
        challenger_share=challenger_share, volume_skew=volume_skew,
        icc=icc, batch=batch, max_requests=max_requests, alpha=alpha, tau=tau, seed=seed), simulate_callers, as_json)
    if report is None:
        return
    table = Table("variance", "A/A rolled back", "regression caught", "mean challenger n to rollback")
    for name, rule in (("binomial (independent requests)", report.independent),
                       ("by caller (the rollout's)", report.by_caller)):
        table.add_row(name, f"{rule.false_rollback_rate:.1%}", f"{rule.detection_rate:.1%}",
                      _n(rule.mean_requests_per_arm))
    console.print(f"{runs} runs each; {callers} callers, {challenger_share:.0%} on the challenger (busiest: "
                  f"{report.top_caller_share:.1%} of requests), icc "
                  f"{icc}; error rate {p_champion:.1%} vs {p_challenger:.1%}, tau {tau}, one-sided alpha {alpha}, "
                  f"a look every {batch} requests up to {max_requests}")
    console.print(table)
