"""The stack's Prefect API calls ride out the 503 a busy SQLite server answers, and give up on anything else."""

import httpx
import pytest

from slm_cli import stack


def client(statuses):
    seen = []

    def handler(request):
        seen.append(request.method)
        return httpx.Response(statuses[min(len(seen), len(statuses)) - 1], json={})

    return httpx.Client(base_url="http://prefect.test/api", transport=httpx.MockTransport(handler)), seen


def test_a_503_is_retried_until_the_write_goes_through(monkeypatch):
    monkeypatch.setattr(stack.time, "sleep", lambda _s: None)
    api, seen = client([503, 503, 200])
    assert stack._api(api, "PATCH", "/deployments/x/schedules/y", json={"active": False}).status_code == 200
    assert seen == ["PATCH"] * 3


def test_other_errors_and_a_lasting_503_raise(monkeypatch):
    monkeypatch.setattr(stack.time, "sleep", lambda _s: None)
    api, seen = client([404])
    with pytest.raises(httpx.HTTPStatusError):
        stack._api(api, "GET", "/deployments/name/a/b")
    assert seen == ["GET"]
    api, seen = client([503])
    with pytest.raises(httpx.HTTPStatusError):
        stack._api(api, "GET", "/deployments/name/a/b", attempts=3)
    assert len(seen) == 3
