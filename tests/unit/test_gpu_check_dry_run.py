"""bench/gpu_check.sh is run in ONE call whenever a GPU machine is lent (the developers' guide; none has been yet),
so it must not rot between loans: its CPU dry run takes the same code paths at a tiny size, with the web, Prefect
and database packages made unimportable as on that machine (bench/noweb.py), and must end with its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_the_cpu_at_a_tiny_size(tmp_path):
    # TMPDIR: the benches' scratch folders (models, adapters) land here too, whatever happens to the run.
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path)}
    (tmp_path / "out").mkdir()
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu-dry-run"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout[done.stdout.index("== gpu_check summary"):]
    assert "project trainer" in summary and "naive Trainer + peft" in summary
    assert "two versions vs one merged" in summary and "auto_50_50" in summary
    reports = sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".json" and p.stat().st_size)
    assert len(reports) >= 2, reports  # the training and the serving reports, for the results to be recorded from
