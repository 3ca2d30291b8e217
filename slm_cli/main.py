"""The `slm` command line. Heavy libraries are imported inside commands, so `slm --help` stays fast."""

from __future__ import annotations

import typer

from slm_cli.decommission_cmd import decommission_cmd
from slm_cli.flows_cmd import bootstrap_cmd, demo_cmd, retrain_cmd
from slm_cli.monitor_cmd import monitor_cmd
from slm_cli.ops_cmd import promote_cmd, rollback_cmd, traffic_app
from slm_cli.registry_cmd import audit_app, registry_app
from slm_cli.report_cmd import report_cmd
from slm_cli.rollout_cmd import rollout_app
from slm_cli.rollout_run_cmd import run_cmd as _registers_rollout_commands  # noqa: F401
from slm_cli.serve_cmd import serve
from slm_cli.stack_cmd import down_cmd, up_cmd
from slm_cli.validate_cmd import validate

app = typer.Typer(help="slm-lifecycle: retrain, gate, roll out and govern a small language model.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(registry_app, name="registry")
app.add_typer(audit_app, name="audit")
app.add_typer(rollout_app, name="rollout")
app.add_typer(traffic_app, name="traffic")
app.command("promote")(promote_cmd)
app.command("rollback")(rollback_cmd)
app.command("bootstrap")(bootstrap_cmd)
app.command("retrain")(retrain_cmd)
app.command("demo")(demo_cmd)
app.command("validate")(validate)
app.command("serve")(serve)
app.command("decommission")(decommission_cmd)
app.command("monitor")(monitor_cmd)
app.command("report")(report_cmd)
app.command("up")(up_cmd)
app.command("down")(down_cmd)


if __name__ == "__main__":
    app()
