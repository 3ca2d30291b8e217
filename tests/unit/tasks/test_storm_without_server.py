"""Without a Prefect server, or with one where no enabled automation waits for ``slm.drift.detected``, the drift
event would start nothing: the monitor records the drift as suppressed, saying why and what to do, instead of a
trigger that would hold off the real monitor's for the whole cooldown."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.monitor import automations_listen, storm_check


def test_no_server_means_no_trigger_and_says_what_to_do():
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        decision = storm_check.fn(None)  # decided before the plan, the log or the API is read
    assert not decision.fire and "no Prefect server" in decision.reason and "slm up" in decision.reason


def test_a_server_counts_only_with_an_enabled_automation_that_waits_for_the_event(monkeypatch):
    import prefect.client.orchestration

    listed: list = []

    class Client:
        def read_automations(self):
            if listed == ["down"]:
                raise ConnectionError("server gone")
            return listed

    monkeypatch.setattr(prefect.client.orchestration, "get_client",
                        lambda sync_client: contextlib.nullcontext(Client()))

    def automation(expect: set[str], enabled: bool = True, compound: bool = False):
        trigger = SimpleNamespace(expect=expect)
        return SimpleNamespace(enabled=enabled, trigger=SimpleNamespace(triggers=[trigger]) if compound else trigger)

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert "no enabled automation" in automations_listen()  # a bare `prefect server start`
        listed[:] = [automation({"slm.candidate.published"}), automation({"slm.drift.detected"}, enabled=False)]
        assert "no enabled automation" in automations_listen()
        listed[:] = [automation({"slm.drift.detected"}, compound=True)]
        assert automations_listen() is None
        listed[:] = ["down"]
        assert automations_listen() is None  # cannot tell: the trigger stands, as before the check
