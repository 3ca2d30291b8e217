"""Without a Prefect server the drift event reaches no automation: the monitor records the drift as suppressed,
saying why, instead of a trigger that would hold off the real monitor's for the whole cooldown."""

from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.monitor import automations_listen, storm_check


def test_no_server_means_no_trigger_and_says_what_to_do():
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not automations_listen()
        decision = storm_check.fn(None)  # decided before the plan, the log or the API is read
    assert not decision.fire and "no Prefect server" in decision.reason and "slm up" in decision.reason
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert automations_listen()
