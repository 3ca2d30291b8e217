"""`slm registry ...` and `slm audit ...`: read the registry from the terminal (and `slm registry sync-champion`:
catch the Hub's champion branch up with it)."""

from __future__ import annotations

import json
from contextlib import contextmanager

import typer
from rich.markup import escape
from rich.table import Table

from slm_cli.console import describe_error, make_console, print_error

registry_app = typer.Typer(help="Versions, aliases and lineage in the registry.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log of every decision.", no_args_is_help=True)
console = make_console()


@contextmanager
def _registry():
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from registry.artifacts import ArtifactIntegrityError
    from registry.operations import ChampionPointerBehind
    from registry.service import open_registry
    from registry.store import NotFoundError

    try:
        reg = open_registry()
    except (ValidationError, SQLAlchemyError, OSError, ValueError) as exc:
        print_error(f"cannot open the registry: {describe_error(exc)}")
        raise typer.Exit(2) from None
    try:
        yield reg
    except ChampionPointerBehind as exc:  # the action is done; the Hub's branch needs catching up: exit 1, not 2
        print_error(str(exc))
        raise typer.Exit(1) from None
    except (NotFoundError, ValueError, ArtifactIntegrityError, OverflowError, SQLAlchemyError, OSError) as exc:
        print_error(describe_error(exc))  # nothing was changed (an action whose Hub step failed after it: exit 1 above)
        raise typer.Exit(2) from None
    finally:
        reg.close()


def _known(reg, model: str) -> None:
    """A model the registry has versions of (NotFoundError, naming the ones it has, otherwise)."""
    from registry.store import NotFoundError

    models = reg.store.models()
    if models and model not in models:
        raise NotFoundError(f"no model {model!r} in the registry; models there: {', '.join(models)}")


@registry_app.command("list")
def list_versions(model: str | None = typer.Option(None, help="only this model"),
                  as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List every version with its status and the aliases pointing at it."""
    with _registry() as reg:
        if model is not None:
            _known(reg, model)
        versions = reg.store.list_versions(model)
        aliases = {m: reg.store.aliases(m) for m in {v.model for v in versions}}
        rows = [{"ref": v.ref, "model": v.model, "version": v.number, "status": v.status.value,
                 "aliases": sorted(a for a, n in aliases[v.model].items() if n == v.number),
                 "created_at": v.created_at.isoformat(), "reason": v.reason, "artifact_uri": v.artifact_uri}
                for v in versions]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("version", "status", "aliases", "created", "reason")
    for r in rows:
        table.add_row(r["ref"], r["status"], ", ".join(r["aliases"]), r["created_at"][:19], escape(r["reason"][:70]))
    console.print(table if rows else "no versions yet: run `slm bootstrap`")


@registry_app.command("show")
def show(ref: str = typer.Argument(..., help="MODEL:vN, vN, or an alias such as champion"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Show one version: status, lineage (data snapshots, base model, code, recipe) and evaluations."""
    with _registry() as reg:
        version = reg.get(ref)
        history = reg.store.status_history(version.model, version.number)
        where = {d.name: _snapshot_place(reg, d.snapshot) if d.snapshot else d.source
                 for d in (version.lineage.datasets if version.lineage else [])}
    if as_json:
        doc = version.model_dump(mode="json")
        for report in doc["evals"]:
            report.pop("items", None)
        doc["status_history"] = [{**h, "at": h["at"].isoformat()} for h in history]
        doc["dataset_paths"] = where
        print(json.dumps(doc, indent=2))
        return
    console.print(f"[bold]{version.ref}[/bold]  status [cyan]{version.status}[/cyan]  — {escape(version.reason)}")
    console.print(f"artifact: {escape(version.artifact_uri)}   prompt format: {version.prompt_format}")
    if version.lineage:
        lin = version.lineage
        console.print(f"base model: {escape(lin.base_model.model_id)} @ {lin.base_model.revision[:16]}")
        console.print(f"code: {lin.code_commit}{' (dirty)' if lin.code_dirty else ''}   "
                      f"trigger: {escape(lin.trigger)}")  # free text: the retrain's reason
        data = Table("data", "rows", "sha256", "snapshot: the exact rows, on disk")
        for d in lin.datasets:
            data.add_row(escape(d.name), str(d.rows), d.sha256[:16], escape(str(where[d.name])))
        console.print(data)
    evals = Table("golden set", "items", "exact match", "malformed", "p95 ms", "tokens/s")
    for r in version.evals:
        evals.add_row(r.benchmark, str(r.n_items), f"{r.exact_match:.3f}", f"{r.malformed_rate:.3f}",
                      f"{r.latency_p95_ms:.1f}", f"{r.tokens_per_s:.0f}")
    console.print(evals)
    for h in history:
        console.print(f"  {h['at']:%Y-%m-%d %H:%M:%S}  {h['from_status'] or '—'} → {h['to_status']}  "
                      f"by {escape(h['actor'])}: {escape(h['reason'])}")


def _snapshot_place(reg, uri: str) -> str:
    """Where a data snapshot is: its path when it is on this disk (checked against its hash), else its URI (a Hub
    snapshot is not downloaded to be shown); a missing or altered one is said so, and the version still shown."""
    from registry.artifacts import ArtifactIntegrityError

    if not uri.startswith("local://"):
        return uri
    try:
        return str(reg.artifacts.dataset_path(uri))
    except (ArtifactIntegrityError, OSError, ValueError) as exc:
        return f"{uri} (unreadable: {exc})"


@registry_app.command("history")
def history(alias: str = typer.Argument(..., help="champion, challenger or previous"),
            model: str | None = typer.Option(None, help="model name (default: SLM_MODEL_NAME)"),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Which version held an alias when, who moved it and why."""
    from lifecycle.status import Alias

    if alias not in set(Alias):
        print_error(f"unknown alias {alias!r}; aliases: {', '.join(a.value for a in Alias)}")
        raise typer.Exit(2)
    with _registry() as reg:
        _known(reg, model or reg.default_model)
        moves = reg.store.alias_history(model or reg.default_model, alias)
    if as_json:
        print(json.dumps([m.model_dump(mode="json") for m in moves], indent=2))
        return
    table = Table("when", "from", "to", "by", "why")
    for m in moves:
        table.add_row(f"{m.moved_at:%Y-%m-%d %H:%M:%S}", _v(m.previous_version), _v(m.version), escape(m.actor),
                      escape(m.reason))
    console.print(table if moves else f"{alias} has never been set")


def _v(number: int | None) -> str:
    return "—" if number is None else f"v{number}"


@registry_app.command("sync-champion")
def sync_champion_cmd(model: str | None = typer.Option(None, help="model name"),
                      as_json: bool = typer.Option(False, "--json")) -> None:
    """Point the artifact store's champion (the Hub's `champion` branch) at the registry's champion: catches the
    Hub up after a promote or rollback whose Hub call failed. Idempotent; audited when the branch moves."""
    from registry.hub_client import hub_failures
    from slm_cli.ops_cmd import _actor  # here: ops_cmd imports this module

    with _registry() as reg:
        name = model or reg.default_model
        _known(reg, name)
        champion = reg.store.get_alias(name, "champion")
        try:
            moved = reg.sync_champion(name, actor=_actor())
        except hub_failures() as exc:
            print_error(f"the Hub failed, nothing moved: {type(exc).__name__}: {exc}; run this again once it answers")
            raise typer.Exit(1) from None
        hub = getattr(reg.artifacts, "scheme", None) == "hub"
    if as_json:
        print(json.dumps({"model": name, "champion": champion, "moved": moved}, indent=2))
    elif moved is not None:
        console.print(f"[green]✓[/green] {escape(str(moved['repo']))} branch champion moved to "
                      f"{_v(moved['version'])} ({moved['to_commit'] or 'removed'})")
    elif hub:
        console.print(f"the Hub's champion branch already points at {name}'s champion ({_v(champion)}): nothing moved")
    else:
        console.print(f"{name}'s champion is {_v(champion)}; the local artifact store keeps no champion pointer")


@audit_app.command("verify")
def verify(as_json: bool = typer.Option(False, "--json")) -> None:
    """Recompute the hash chain; exit 1 if any event was edited, deleted, inserted or reordered, or if the registry
    holds versions, status changes or alias moves that the log does not account for (a cut or wiped log)."""
    with _registry() as reg:
        result = reg.store.verify_audit()
    if as_json:
        print(result.model_dump_json(indent=2))
    elif result.ok:
        console.print(f"[green]audit chain intact[/green]: {result.checked} events verified")
    else:
        console.print(f"[red]audit chain BROKEN[/red] ({result.checked} events checked):")
        for problem in result.problems:
            console.print(f"  - {escape(problem)}")
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("log")
def log(limit: int = typer.Option(20, min=1, help="newest N events"),
        as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the newest audit events."""
    with _registry() as reg:
        events = reg.store.audit_events()[-limit:]
    if as_json:
        print(json.dumps([e.model_dump() for e in events], indent=2))
        return

    from registry.store import is_unreadable

    table = Table("seq", "when", "actor", "action", "subject", "payload")
    for e in events:
        payload = (f"[red]unreadable: edited[/red] {escape(e.payload['unreadable'][:60])}" if is_unreadable(e)
                   else escape(json.dumps(e.payload)[:80]))
        table.add_row(escape(str(e.seq)), escape(e.ts[:19]), escape(e.actor), escape(e.action), escape(e.subject),
                      payload)
    console.print(table)
