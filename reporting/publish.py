"""Gather, render and write the report in one call: what the CLI and the Prefect task both use."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from lifecycle.files import write_bytes_atomic
from registry.store import RegistryStore
from reporting.gather import gather
from reporting.page import render
from reporting.records import LifecycleReport


def default_path(home: Path, model: str) -> Path:
    """``SLM_HOME/reports/<model>.html``, beside the monitor's drift reports in ``SLM_HOME/reports/<model>/``."""
    return home / "reports" / f"{model}.html"


def write_report(store: RegistryStore, model: str, out: Path, *, now: datetime | None = None) -> LifecycleReport:
    """Write the report of ``model`` to ``out`` and return what it shows.

    Written to a temporary file beside ``out`` and renamed over it (``lifecycle.files.write_bytes_atomic``), so a
    reader — a browser refreshing, a Prefect artifact link — never sees half a page, and a failure leaves the last
    good report in place. Raises ``reporting.gather.NothingToReport`` when the model has no version.
    """
    report = gather(store, model, now=now)
    write_bytes_atomic(out, render(report).encode("utf-8"))
    return report
