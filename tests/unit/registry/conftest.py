"""Registry tests run against SQLite and, when SLM_TEST_POSTGRES_URL is set (CI sets it), PostgreSQL.

Each PostgreSQL test gets its own database, created and dropped here.
"""

from __future__ import annotations

import pytest

from registry.store import RegistryStore


@pytest.fixture
def pg_database_url(pg_database):
    with pg_database() as url:
        yield url


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
