"""`slm serve`: the OpenAI-compatible gateway on the registry's champion (and the split's other versions)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from slm_cli.console import make_console, print_error

console = make_console()


def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    config: Annotated[Path | None, typer.Option(help="serve config YAML (default configs/serve.yaml)")] = None,
) -> None:
    """Start the gateway. Clients: `openai.OpenAI(base_url="http://HOST:PORT/v1", api_key="-")`."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import uvicorn

    from registry.store import NotFoundError
    from serving.app import build_app, load_serve_config

    try:
        app, state = build_app(load_serve_config(config))
    except (NotFoundError, FileNotFoundError, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    split = state.live.split
    console.print(f"serving {state.model} (split revision {split.revision}: champion v{split.champion}"
                  + (f", challenger v{split.challenger} {split.challenger_percent:g} %" if split.challenger else "")
                  + f") on http://{host}:{port}/v1 — admin API {'on' if state.admin_token else 'off'}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
