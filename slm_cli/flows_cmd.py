"""`slm bootstrap`, `slm retrain`, `slm demo`: run the flows locally (ephemeral Prefect unless
PREFECT_API_URL points at a server)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from slm_cli.console import make_console, print_error

console = make_console()


def prefect_env() -> None:
    """Keep Prefect's local state under SLM_HOME unless the user configured Prefect themselves.

    Must run before prefect is imported: Prefect reads its settings at import.
    """
    from lifecycle.settings import get_settings

    home = get_settings().home
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect creates one level only
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars too


@contextlib.contextmanager
def _registration_refused() -> Iterator[None]:
    """A registration that could not take the model's lock (another one publishing for longer than the wait, or a
    file system without locks) is one line and exit 1: the flow run logged its traceback; nothing was registered."""
    from registry.locks import LockBusy, LockLost, LockUnavailable

    try:
        yield
    except (LockBusy, LockLost, LockUnavailable) as exc:
        make_console(stderr=True).print(f"[red]✗ not registered[/red]: {escape(str(exc))}")
        raise typer.Exit(1) from None


def run_bootstrap(model: str | None = None, *, task: str = "configs/task.yaml", hub_base: str | None = None) -> str:
    prefect_env()
    from flows.bootstrap import BootstrapParams, bootstrap
    from lifecycle.settings import get_settings

    start = time.perf_counter()
    try:
        params = BootstrapParams(model=model or get_settings().model_name, task=task, hub_base=hub_base)
    except ValueError as exc:  # pydantic's ValidationError: an unpinned Hub reference, before anything runs
        print_error(exc)
        raise typer.Exit(2) from None
    with _registration_refused():
        outcome = bootstrap(params)
    verb = "built and promoted" if outcome.created else "already bootstrapped:"
    console.print(f"[green]✓[/green] bootstrap {verb} {outcome.champion} as champion "
                  f"({time.perf_counter() - start:.0f} s)")
    if not outcome.created and (task != "configs/task.yaml" or hub_base):
        console.print("[yellow]note:[/yellow] the model has a champion, so --task/--hub-base were not used; "
                      "bootstrap makes a model's first version only (retrain makes the next)")
    return outcome.champion


def bootstrap_cmd(
    task: Annotated[str, typer.Option(help="task config YAML (its hub_dataset, if set, is downloaded pinned)")]
    = "configs/task.yaml",
    hub_base: Annotated[str | None, typer.Option(help="a Hub causal LM as v1's base, OWNER/NAME@<40-hex commit sha>"
                                                 " (downloaded into the Hub cache) instead of the offline base")]
    = None,
) -> None:
    """Build the offline base model (cached) — or take a pinned Hub model — and register it as version 1, the
    first champion."""
    run_bootstrap(task=task, hub_base=hub_base)


def run_retrain(params) -> object:
    prefect_env()
    from flows.retrain import retrain
    from tasks.data import DataRejected

    start = time.perf_counter()
    try:
        with _registration_refused():
            outcome = retrain(params)
    except DataRejected as exc:
        make_console(stderr=True).print(f"[red]✗ data rejected[/red]: {escape(str(exc))}")
        raise typer.Exit(1) from None
    colour = "green" if outcome.status == "candidate" else "yellow"
    console.print(f"[{colour}]●[/{colour}] {outcome.version} registered as [bold]{outcome.status}[/bold] "
                  f"(gate {outcome.verdict} vs {outcome.champion}, {time.perf_counter() - start:.0f} s)")
    for reason in outcome.reasons:
        console.print(f"    {escape(reason)}")  # "[fail] ..." is text, not rich markup
    return outcome


def retrain_cmd(
    config: Annotated[str, typer.Option(help="retrain config YAML")] = "configs/retrain.yaml",
    data: Annotated[str | None, typer.Option(help="labelled data drop (JSONL, Parquet, saved datasets folder)")]
    = None,
    replay_rows: Annotated[int | None, typer.Option(help="rows of the champion's replay pool to replay")] = None,
    benchmarks: Annotated[str | None, typer.Option(help="comma-separated golden sets")] = None,
    reason: Annotated[str, typer.Option(help="why: recorded in lineage and audit")] = "manual",
) -> None:
    """Validate data, fine-tune a LoRA challenger, benchmark it against the champion, gate, register."""
    prefect_env()
    from lifecycle.config import RetrainParams, load_yaml_config
    from registry.store import NotFoundError
    from tasks.plan import plan_retrain
    from tasks.rollout import read_plan
    from training.lora import LoraRecipe

    try:  # every config the run reads, read before it starts (its flow run would log tracebacks first)
        # A drop named on the command line is where the user stands; the flow reads relative paths from the project.
        params = RetrainParams(config=config, data=str(Path(data).absolute()) if data else data,
                               replay_rows=replay_rows, benchmarks=benchmarks, reason=reason)
        plan = plan_retrain.fn(params, "check")
        load_yaml_config(LoraRecipe, plan.config.recipe)
        read_plan(plan.config.rollout_plan)
    except (ValueError, FileNotFoundError, NotFoundError) as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    run_retrain(params)


def demo_cmd(
    smoke: Annotated[bool, typer.Option("--smoke", help="the same story with few requests and a small rollout plan "
                                        "(what the test suite runs)")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="leave the stack up at the end to look around")] = False,
) -> None:
    """The main job: the whole lifecycle on the local stack of `slm up` — drift seen by the monitor, a retrain
    started by the automation, a rollout on live traffic, a bad candidate rolled back, decommissioning."""
    import httpx

    from slm_cli.demo import FULL, SMOKE, DemoError, tell
    from slm_cli.stack import StackError

    try:
        result = tell(SMOKE if smoke else FULL, keep=keep, console=console)
    except (DemoError, StackError, httpx.HTTPError) as exc:  # the stack would not start, or an API call failed
        what = str(exc) if isinstance(exc, DemoError | StackError) else f"{type(exc).__name__}: {exc}"
        make_console(stderr=True).print(f"[red]✗ the story stopped:[/red] {escape(what)}")
        raise typer.Exit(1) from None
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in result.steps.items())
    console.print(f"time: {steps}")
