"""Fixtures: the lifecycle registry of world.py, built once per session; each test gets its own copy of the
database under its own ``SLM_HOME``, so tampering in one test stays there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from registry.store import RegistryStore
from tests.unit.reporting.world import build_world


@pytest.fixture(scope="session")
def world_db(tmp_path_factory, synthetic_traffic) -> Path:
    folder = tmp_path_factory.mktemp("report-world")
    build_world(folder / "registry.db", folder / "artifacts", synthetic_traffic)
    return folder / "registry.db"


@pytest.fixture
def home(tmp_path, monkeypatch, world_db) -> Path:
    """``SLM_HOME`` holding a private copy of the lifecycle registry."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(world_db, home / "registry.db")
    monkeypatch.setenv("SLM_HOME", str(home))
    for name in ("SLM_DATABASE_URL", "SLM_ARTIFACT_STORE", "SLM_MODEL_NAME"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def store(home):
    s = RegistryStore.open(f"sqlite:///{home / 'registry.db'}")
    yield s
    s.close()
