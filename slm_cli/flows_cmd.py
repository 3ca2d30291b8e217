"""`slm bootstrap`, `slm retrain`, `slm demo`: run the flows locally (ephemeral Prefect unless
PREFECT_API_URL points at a server)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


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


def run_bootstrap(model: str | None = None) -> str:
    prefect_env()
    from flows.bootstrap import BootstrapParams, bootstrap
    from lifecycle.settings import get_settings

    start = time.perf_counter()
    outcome = bootstrap(BootstrapParams(model=model or get_settings().model_name))
    verb = "built and promoted" if outcome.created else "already bootstrapped:"
    console.print(f"[green]✓[/green] bootstrap {verb} {outcome.champion} as champion "
                  f"({time.perf_counter() - start:.0f} s)")
    return outcome.champion


def bootstrap_cmd() -> None:
    """Build the offline base model and register it as version 1, the first champion (cached)."""
    run_bootstrap()


def run_retrain(params) -> object:
    prefect_env()
    from flows.retrain import retrain
    from tasks.data import DataRejected

    start = time.perf_counter()
    try:
        outcome = retrain(params)
    except DataRejected as exc:
        console.print(f"[red]✗ data rejected[/red]: {exc}")
        raise typer.Exit(1) from None
    colour = "green" if outcome.status == "candidate" else "yellow"
    console.print(f"[{colour}]●[/{colour}] {outcome.version} registered as [bold]{outcome.status}[/bold] "
                  f"(gate {outcome.verdict} vs {outcome.champion}, {time.perf_counter() - start:.0f} s)")
    for reason in outcome.reasons:
        console.print(f"    {reason}")
    return outcome


def retrain_cmd(
    config: Annotated[str, typer.Option(help="retrain config YAML")] = "configs/retrain.yaml",
    data: Annotated[str | None, typer.Option(help="labelled data drop (JSONL, Parquet, saved datasets folder)")]
    = None,
    replay_rows: Annotated[int | None, typer.Option(help="rows of the champion's data to replay")] = None,
    benchmarks: Annotated[str | None, typer.Option(help="comma-separated golden sets")] = None,
    reason: Annotated[str, typer.Option(help="why: recorded in lineage and audit")] = "manual",
) -> None:
    """Validate data, fine-tune a LoRA challenger, benchmark it against the champion, gate, register."""
    from lifecycle.config import RetrainParams
    from lifecycle.settings import project_root

    if not (project_root() / config).is_file():  # an absolute path stays itself under `/`
        console.print(f"[red]error:[/red] config {config} does not exist")
        raise typer.Exit(2)
    run_retrain(RetrainParams(config=config, data=data, replay_rows=replay_rows, benchmarks=benchmarks,
                              reason=reason))


def demo_cmd() -> None:
    """The main job, on embedded defaults: bootstrap, a retrain that becomes champion through a rollout on
    live traffic, and a forgetful retrain that slips past a blind offline gate and is rolled back live."""
    from lifecycle.config import RetrainParams
    from lifecycle.data import read_pairs
    from lifecycle.settings import get_settings

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    console.rule("[bold]slm-lifecycle demo[/bold]")
    console.print("1. bootstrap: the offline base model becomes champion v1 (cached after the first run)")
    champion = run_bootstrap()
    console.print("2. retrain on the drifted world's labelled drop + 3000 replayed old rows")
    good = run_retrain(RetrainParams(reason="demo: drifted drop with replay"))
    from slm_cli import live

    settings = get_settings()
    prompts = read_pairs(settings.home / "data" / "golden-before.jsonl")
    rollouts: dict[str, dict] = {}
    with live.gateway() as url:
        console.print(f"   gateway on {url}/v1; 2,000 simulated users ask the old intents and say whether the "
                      "route was right")
        if good.status == "candidate":
            console.print(f"3. roll out {good.version} on live traffic (configs/rollout-demo.yaml): shadow, "
                          "10 %, 50 %, 100 %")
            rollouts[good.version] = _live_rollout(live, url, prompts, settings.model_name, good.version, seed=0)
        console.print("4. retrain on the drifted drop alone, judged by a gate that looks at the new intents only "
                      "(configs/gate-drifted-only.yaml): it forgets the old intents, and that gate cannot see it")
        bad = run_retrain(RetrainParams(replay_rows=0, gate="configs/gate-drifted-only.yaml",
                                        reason="demo: drifted drop alone, blind gate"))
        if bad.status == "candidate":
            console.print(f"5. roll out {bad.version}: live traffic has to catch what the offline gate missed")
            rollouts[bad.version] = _live_rollout(live, url, prompts, settings.model_name, bad.version, seed=1)
    _summary(champion, [good, bad], rollouts)


def _live_rollout(live, url: str, prompts, model: str, version: str, seed: int) -> dict:
    load = live.users(url, prompts, model=model, seed=seed)
    try:
        result = live.roll(version, "configs/rollout-demo.yaml", look_s=2.0, settle_s=1.0)
    finally:
        load.stop()
    colour = "green" if result["phase"] == "promoted" else "red"
    last = result["history"][-1] if result["history"] else {"failed": []}
    console.print(f"   [{colour}]{version} {result['phase']}[/{colour}] at {result['stage']} after "
                  f"{result['seconds']:.0f} s, {load.counts['requests']} requests")
    for reason in last["failed"]:
        console.print(f"     {reason}")
    return result


def _summary(champion: str, outcomes: list, rollouts: dict[str, dict] | None = None) -> None:
    from registry.service import open_registry

    rollouts = rollouts or {}
    table = Table("version", "status", "before", "drifted", "gate", "rollout", title="golden-set exact match")
    with open_registry() as registry:
        for ref, verdict in [(champion, "—")] + [(o.version, o.verdict) for o in outcomes]:
            version = registry.get(ref)
            scores = {r.benchmark: f"{r.exact_match:.3f}" for r in version.evals}
            rolled = rollouts.get(ref)
            table.add_row(ref, version.status.value, scores.get("golden-before", "—"),
                          scores.get("golden-drifted", "—"), verdict,
                          f"{rolled['phase']} ({rolled['stage']})" if rolled else "—")
        audit = registry.store.verify_audit()
    console.print(table)
    console.print(f"audit chain: {'intact' if audit.ok else 'BROKEN'} ({audit.checked} events). "
                  "Next: `slm registry list`, `slm registry show intent-router:v2`, `slm audit verify`.")
