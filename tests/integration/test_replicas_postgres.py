"""Two gateway replicas sharing one PostgreSQL registry: a split change through either reaches the other."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.env import environment

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ADMIN = {"Authorization": "Bearer admin-secret-for-tests"}


@pytest.fixture(scope="module")
def slm_home(tmp_path_factory, pg_database):
    """Overrides the SQLite home of conftest: artifacts on disk, the registry in PostgreSQL."""
    home = str(tmp_path_factory.mktemp("slm-pg"))
    with pg_database() as url, environment(SLM_HOME=home, SLM_DATABASE_URL=url,
                                           SLM_ADMIN_TOKEN="admin-secret-for-tests"):
        yield home


def test_replicas_on_postgres_follow_each_other(tiny_registry, launch_gateway):
    with launch_gateway(split_poll_s=0.1) as a, launch_gateway(split_poll_s=0.1) as b:
        for source, target, percent in ((a, b, 20), (b, a, 70)):
            response = httpx.put(f"{source.url}/admin/split", headers=ADMIN,
                                 json={"challenger": 2, "challenger_percent": percent, "reason": "replica test"})
            assert response.status_code == 200, response.text
            revision = response.json()["revision"]
            deadline = time.monotonic() + 30  # that the change arrives, not how fast: the loop leaves when it has
            while target.state.live.split.revision != revision and time.monotonic() < deadline:
                time.sleep(0.02)
            assert target.state.live.split.revision == revision
            assert target.state.live.split.challenger_percent == percent
            served = httpx.post(f"{target.url}/v1/completions", json={"model": "intent-router", "prompt": "card"})
            assert served.status_code == 200
        assert a.state.registry.store.engine.dialect.name == "postgresql"
        assert a.state.registry.store.verify_audit().ok
