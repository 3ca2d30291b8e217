"""Flows run under one Prefect test harness per session, each session with its own PREFECT_HOME and SLM_HOME.

The harness boots a temporary Prefect server (11-30 s here). A fresh PREFECT_HOME keeps persisted task
results of earlier runs from turning into Cached states.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def slm_project(tmp_path_factory, prefect_harness):
    """SLM_HOME and tiny configs: a 1-layer base model and a short LoRA, so a flow runs in seconds."""
    root = tmp_path_factory.mktemp("slm")
    old = os.environ.get("SLM_HOME")
    os.environ["SLM_HOME"] = str(root / "home")
    configs = root / "configs"
    configs.mkdir()
    task = yaml.safe_load((REPO / "configs/task.yaml").read_text())
    task.update(data_dir=str(REPO / "data/banking77"), golden_before_size=60, golden_drifted_size=60, min_train_rows=20)
    files = {
        "task.yaml": task,
        "base_model.yaml": {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64, "num_layers": 1,
                            "num_heads": 2, "max_steps": 40, "max_seconds": None, "batch_size": 32,
                            "log_every": 10},
        "recipe_lora.yaml": {"r": 4, "alpha": 8, "max_steps": 20, "batch_size": 16, "log_every": 5},
        "gate.yaml": yaml.safe_load((REPO / "configs/gate.yaml").read_text()),
    }
    for name, content in files.items():
        (configs / name).write_text(yaml.safe_dump(content))
    retrain = {"model": "router", "task": str(configs / "task.yaml"), "recipe": str(configs / "recipe_lora.yaml"),
               "gate": str(configs / "gate.yaml"), "replay_rows": 200, "benchmark_batch_size": 32}
    (configs / "retrain.yaml").write_text(yaml.safe_dump(retrain))
    yield configs
    if old is None:
        os.environ.pop("SLM_HOME", None)
    else:
        os.environ["SLM_HOME"] = old
