"""`slm rollout run|status|approve|reject|abort`: drive a rollout, see where it is, answer or stop it."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from slm_cli.console import make_console, print_error
from slm_cli.flows_cmd import prefect_env
from slm_cli.ops_cmd import Reason, _actor, _check
from slm_cli.registry_cmd import _registry
from slm_cli.rollout_cmd import rollout_app

console = make_console()
Ref = Annotated[str, typer.Argument(help="the candidate, MODEL:vN")]
Plan = Annotated[str, typer.Option(help="rollout plan (YAML)")]


@rollout_app.command("run")
def run_cmd(ref: Ref, plan: Plan = "configs/rollout.yaml",
            look_interval: Annotated[float | None, typer.Option(help="seconds between looks (default: the plan's)")]
            = None,
            settle: Annotated[float | None, typer.Option(help="seconds a new split needs to reach every gateway "
                                                              "(default: the plan's)")] = None,
            approval_timeout: Annotated[int, typer.Option(help="seconds a pause waits for a person")] = 86_400,
            ) -> None:
    """Run (or resume) the rollout flow of a candidate here, against the gateways that share the registry."""
    prefect_env()
    from flows.rollout import rollout
    from registry import rollout_exec
    from registry.store import NotFoundError
    from tasks.rollout import RolloutParams, read_plan

    try:  # what the flow would refuse, refused here in one line (the flow run would log tracebacks first)
        read_plan(plan)
        with _registry() as reg:
            refused = rollout_exec.refusal(reg.store, *reg.resolve(ref))
    except (ValueError, FileNotFoundError, NotFoundError) as exc:
        refused = str(exc)
    if refused is not None:
        print_error(refused)
        raise typer.Exit(2)
    outcome = rollout(RolloutParams(version=ref, plan=plan, look_interval_s=look_interval, settle_s=settle,
                                    approval_timeout_s=approval_timeout))
    colour = {"promoted": "green", "rolled_back": "red"}.get(outcome.phase, "yellow")
    console.print(f"[{colour}]{outcome.version}: {outcome.phase}[/{colour}] at stage {escape(outcome.stage)} "
                  f"(champion was {outcome.champion})")
    for reason in outcome.reasons:
        console.print(f"  {escape(reason)}")  # "[fail] ..." is text, not rich markup


@rollout_app.command("status")
def status_cmd(model: Annotated[str | None, typer.Option(help="model name")] = None,
               version: Annotated[str | None, typer.Option(help="MODEL:vN (default: the running rollout)")] = None,
               as_json: Annotated[bool, typer.Option("--json")] = False,
               look: Annotated[bool, typer.Option("--look", help=(
                   "also decide the running stage now, as its next look would, saving nothing: why a stage holds"))]
               = False,
               plan: Plan = "configs/rollout.yaml",
               settle: Annotated[float | None, typer.Option(help=(
                   "for --look: the settle time the rollout's run was given (`slm rollout run --settle`, the "
                   "deployment form), if not the plan's"))] = None,
               ) -> None:
    """Where a rollout is: phase, stage, history of decisions, pending effects; with --look, what it waits for."""
    state = _state(model, version)
    verdict, settle_s = _look(state, plan, settle) if look else (None, None)
    if as_json:
        out = state.model_dump(mode="json")
        if verdict is not None:
            out["look"] = {**verdict.model_dump(mode="json"), "settle_s": settle_s}
        print(json.dumps(out, indent=2))
        return
    console.print(f"{state.model}:v{state.candidate} vs champion v{state.champion}: [bold]{state.phase}[/bold] at "
                  f"stage {state.stage_index} (plan {escape(state.plan_name)} v{state.plan_version}), since "
                  f"{state.stage_started_at}" + (f"; {len(state.pending)} effects pending" if state.pending else ""))
    table = Table("at", "stage", "decision", "reasons")
    for h in state.history:
        table.add_row(h.at, escape(h.stage), h.action, escape("\n".join(h.reasons)))
    console.print(table)
    if verdict is not None:
        source = "given" if settle is not None else "the plan's"
        console.print(f"a look now at {escape(verdict.stage)} ({verdict.elapsed_s:.0f} s in; settle {settle_s:g} s, "
                      f"{source}): [bold]{verdict.action}[/bold]")
        for reason in verdict.reasons():
            console.print(f"  {escape(reason)}")


def _look(state, plan_file: str, settle_s: float | None):
    """The running stage's verdict now (``rollout_exec.preview``), with the plan the rollout runs by, and the settle
    time it used (``settle_s``, else the plan's)."""
    from lifecycle.config import load_yaml_config
    from lifecycle.rollout_plan import RolloutPlan
    from lifecycle.settings import in_project
    from registry import rollout_exec
    from registry.predictions import PredictionStore

    if state.phase != "running":
        print_error(f"{state.model}:v{state.candidate} is {state.phase}: no stage to look at")
        raise typer.Exit(1)
    if state.pending:
        # Its stage is already the decided one, its window still the old split's: a look would judge the wrong traffic.
        print_error(f"{state.model}:v{state.candidate} has {len(state.pending)} effects of its last "
                    "decision pending (its run stopped midway): `slm rollout run` carries them out first")
        raise typer.Exit(1)
    try:
        plan = load_yaml_config(RolloutPlan, in_project(plan_file))  # as tasks.rollout.read_plan, without Prefect
    except (ValueError, FileNotFoundError) as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    if (plan.name, plan.version) != (state.plan_name, state.plan_version):
        print_error(f"{plan_file} is plan {plan.name} v{plan.version}; the rollout runs by "
                    f"{state.plan_name} v{state.plan_version}: pass its file with --plan")
        raise typer.Exit(2)
    settle_s = plan.settle_s if settle_s is None else settle_s
    with _registry() as reg:
        verdict, _ = rollout_exec.preview(PredictionStore(reg.store.engine), state, plan, reg.store.clock(), settle_s)
    return verdict, settle_s


def _state(model: str | None, version: str | None):
    from registry.rollouts import active_rollout, get_rollout

    with _registry() as reg:
        if version:
            name, number = reg.resolve(version)
            state = get_rollout(reg.store, name, number)
        else:
            name = model or reg.default_model
            state = active_rollout(reg.store, name)
    if state is None:
        print_error(f"no {'rollout of ' + version if version else 'running rollout of ' + name}")
        raise typer.Exit(1)
    return state


def _answer(ref: str | None, model: str | None, approve: bool, reviewer: str | None, comment: str,
            plan: str) -> None:
    prefect_env()
    import getpass

    from tasks.rollout import Approval, read_plan, send_answer

    state = _state(model, ref)
    answer = Approval(approve=approve, reviewer=reviewer or getpass.getuser(), comment=comment)
    try:
        done = send_answer(state.model, state.candidate, answer, read_plan(plan))
    except FileNotFoundError as exc:
        print_error(f"{exc}; this rollout runs plan {state.plan_name!r} v{state.plan_version}: "
                    "pass that file with --plan")
        raise typer.Exit(1) from None
    except ValueError as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    console.print(f"[green]✓[/green] {'approved' if approve else 'rejected'} {state.model}:v{state.candidate}: {done}")


Reviewer = Annotated[str | None, typer.Option(help="who decides (default: your user name)")]
Comment = Annotated[str, typer.Option(help="why: recorded in the audit log")]
Version = Annotated[str | None, typer.Argument(help="MODEL:vN (default: the model's running rollout)")]
Model = Annotated[str | None, typer.Option(help="model name")]


@rollout_app.command("approve")
def approve_cmd(ref: Version = None, model: Model = None, reviewer: Reviewer = None, comment: Comment = "",
                plan: Plan = "configs/rollout.yaml") -> None:
    """Approve a rollout waiting for a person: go to the last stage, or resume a paused stage."""
    _answer(ref, model, True, reviewer, comment, plan)


@rollout_app.command("reject")
def reject_cmd(ref: Version = None, model: Model = None, reviewer: Reviewer = None, comment: Comment = "",
               plan: Plan = "configs/rollout.yaml") -> None:
    """Reject a rollout waiting for a person: the champion gets all traffic back, the candidate is rolled back."""
    _answer(ref, model, False, reviewer, comment, plan)


@rollout_app.command("abort")
def abort_cmd(reason: Reason, ref: Version = None, model: Model = None,
              plan: Annotated[str | None, typer.Option(help="the rollout's plan (YAML), only to name its stage "
                                                        "in the record; not needed")] = None) -> None:
    """Stop a rollout now: all traffic back to the champion; the candidate stays a candidate."""
    _check(reason)
    prefect_env()
    from registry import rollout_exec
    from tasks.rollout import emit_rollout_event, read_plan

    state = _state(model, ref)
    try:
        with _registry() as reg:
            state = rollout_exec.stop(reg.store, state, read_plan(plan) if plan else None, reason=reason,
                                      actor=_actor(), emit=emit_rollout_event)
    except (ValueError, FileNotFoundError) as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    console.print(f"[yellow]■[/yellow] rollout of {state.model}:v{state.candidate} {state.phase}; all traffic to "
                  f"v{state.champion}")
