"""Report tasks: publish the lifecycle report as a Prefect link artifact, and record each drift check for it.

``publish_report`` is a courtesy at the end of a flow, so it never fails the flow: any error is logged as a
warning and the task returns None. ``record_drift_check`` is part of the monitor's record and fails like any
other audit write.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from data_checks.drift import DriftReport
from lifecycle.drift_policy import DriftDecision
from lifecycle.settings import get_settings
from reporting.drift import DRIFT_CHECKED, drift_check
from reporting.page import summary_markdown
from reporting.publish import default_path, write_report
from tasks.connect import open_registry
from tasks.monitor import ACTOR as MONITOR_ACTOR
from tasks.monitor import MonitorPlan


def artifact_key(model: str) -> str:
    """``lifecycle-report-<model>``: Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "lifecycle-report-" + re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")


def _logger() -> logging.Logger | logging.LoggerAdapter:
    # Inside a flow run the run logger sends the warning to the Prefect UI; called as a plain function, stdlib.
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_report(model: str) -> Path | None:
    """Write ``SLM_HOME/reports/<model>.html`` and link it as the artifact ``lifecycle-report-<model>``."""
    try:
        path = default_path(get_settings().home, model)
        with open_registry() as registry:
            report = write_report(registry.store, model, path)
        create_link_artifact(key=artifact_key(model), link=path.as_uri(), link_text=path.name,
                             description=summary_markdown(report))
        return path
    except Exception as exc:  # the report must never fail the flow that publishes it
        _logger().warning("lifecycle report of %s not published: %s: %s", model, type(exc).__name__, exc)
        return None


@task(name="record-drift-check", cache_policy=NO_CACHE)
def record_drift_check(plan: MonitorPlan, report: DriftReport, decision: DriftDecision) -> None:
    """Audit this monitor run's scores as ``drift.checked``, whatever the verdict, for the report's drift plot."""
    check = drift_check(model=plan.model, champion=plan.champion.ref, since=plan.since, until=plan.until,
                        rows=report.rows_for_decision, decision=decision, columns=report.columns,
                        monitor_run=plan.run_id)
    with open_registry() as registry:
        registry.store.append_audit(actor=MONITOR_ACTOR, action=DRIFT_CHECKED, subject=plan.model,
                                    payload=check.model_dump(mode="json"))
