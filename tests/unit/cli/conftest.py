"""CLI tests run commands in typer's CliRunner, which swaps in streams of its own and closes them after each call.

Prefect binds its log handlers to the streams of the moment it first sets logging up: were that inside CliRunner
(a command that emits a Prefect event or imports a flow), every later test's flow run would fail writing its logs
to a closed stream. So logging is set up here, once, before any command runs.
"""

from prefect.logging.configuration import ensure_logging_setup

ensure_logging_setup()
