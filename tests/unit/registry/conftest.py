"""Registry tests run against SQLite and, when SLM_TEST_POSTGRES_URL is set (CI sets it), PostgreSQL.

Each PostgreSQL test gets its own database, created and dropped here.
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from registry.store import RegistryStore

PG_URL = os.environ.get("SLM_TEST_POSTGRES_URL")


@pytest.fixture
def pg_database_url():
    if not PG_URL:
        pytest.skip("SLM_TEST_POSTGRES_URL is not set (CI sets it)")
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"slm_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("pg_database_url")


@pytest.fixture
def store(db_url):
    s = RegistryStore.open(db_url)
    yield s
    s.close()
