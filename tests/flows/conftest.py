"""Flows run under the session's Prefect test harness (tests/conftest.py), with their own SLM_HOME and tiny configs."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def slm_project(tmp_path_factory, prefect_harness, write_tiny_configs):
    """SLM_HOME and tiny configs: a 1-layer base model and a short LoRA, so a flow runs in seconds."""
    root = tmp_path_factory.mktemp("slm")
    old = os.environ.get("SLM_HOME")
    os.environ["SLM_HOME"] = str(root / "home")
    configs = write_tiny_configs(root / "configs", model="router")
    yield configs
    if old is None:
        os.environ.pop("SLM_HOME", None)
    else:
        os.environ["SLM_HOME"] = old
