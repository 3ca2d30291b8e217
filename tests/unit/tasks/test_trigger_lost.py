"""When the monitor's last drift trigger counts as lost (the Prefect server never received its event): only one
that could hold the next off, announced to this server, past the grace, and missing from the server's events by
its own monitor run; a server that cannot be read keeps the cooldown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from lifecycle.audit import AuditEvent

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SERVER = "http://127.0.0.1:4200/api"


@pytest.fixture
def server(monkeypatch):
    import tasks.monitor

    facts = SimpleNamespace(held=set(), asked=[], api=SERVER)

    def has_event(event, model, since, **match):
        facts.asked.append((event, model, since, match))
        if facts.held == "down":
            raise ConnectionError("server gone")
        return match["monitor_run"] in facts.held

    monkeypatch.setattr(tasks.monitor, "server_has_event", has_event)
    monkeypatch.setattr(tasks.monitor, "prefect_api", lambda: facts.api)
    return facts


def trigger(minutes_ago: float, run: str | None = "run-1", api: str | None = SERVER) -> AuditEvent:
    payload = {k: v for k, v in {"monitor_run": run, "prefect_api": api}.items() if v is not None}
    return AuditEvent(seq=7, ts=(NOW - timedelta(minutes=minutes_ago)).isoformat(), actor="monitor-flow",
                      action="slm.drift.detected", subject="router", payload=payload, prev_hash="0" * 64,
                      hash="1" * 64)


def lost(event) -> bool:
    from tasks.monitor import trigger_lost

    plan = SimpleNamespace(model="router", policy=SimpleNamespace(trigger_grace_minutes=30,
                                                                  cooldown=timedelta(hours=6)))
    return trigger_lost(plan, event, NOW)


def test_a_trigger_missing_from_the_server_by_its_own_run_is_lost(server):
    server.held = {"another-run"}  # the server holds a drift event of the model, but another run's
    assert lost(trigger(60))
    [(event, model, since, match)] = server.asked
    assert (event, model, match) == ("slm.drift.detected", "router", {"monitor_run": "run-1"})
    assert since == NOW - timedelta(minutes=60)


def test_a_received_trigger_and_its_replacement_are_not_lost(server):
    server.held = {"run-1", "run-2"}
    assert not lost(trigger(60)) and not lost(trigger(45, run="run-2"))  # no firing again on every run


@pytest.mark.parametrize(("event", "why"), [
    (None, "no trigger at all"),
    (trigger(10), "within the grace: its event may still be on its way"),
    (trigger(7 * 60), "past the cooldown: it holds nothing off anyway"),
    (trigger(60, api="http://127.0.0.1:4300/api"), "announced to another server"),
    (trigger(60, api=None), "announced to no server (a temporary one)"),
    (trigger(60, run=None), "no monitor run to match on"),
])
def test_only_a_trigger_that_could_hold_the_next_off_and_could_be_checked_is_asked_about(server, event, why):
    assert not lost(event), why
    assert server.asked == []


def test_a_server_that_cannot_be_read_keeps_the_cooldown(server):
    server.held = "down"
    assert not lost(trigger(60))


def test_the_recorded_server_carries_no_credentials():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.events import prefect_api

    with temporary_settings(updates={PREFECT_API_URL: "https://ops:s3cret@prefect.example.com:4200/api"}):
        assert prefect_api() == "https://prefect.example.com:4200/api"  # it goes into the audit log for good
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert prefect_api() is None
