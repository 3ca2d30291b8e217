"""The Hub token from a Prefect Secret block: tasks open the registry with it when SLM_HUB_TOKEN_BLOCK names one."""

from tasks import connect


def test_tasks_read_the_token_from_the_named_secret_block(monkeypatch):
    seen = {}

    def fake_open(settings, hub_token=None):
        seen["token"] = hub_token
        return "registry"

    monkeypatch.setattr(connect, "_open", fake_open)
    monkeypatch.delenv("SLM_HUB_TOKEN_BLOCK", raising=False)
    assert connect.open_registry() == "registry" and seen["token"] is None
    monkeypatch.setenv("SLM_HUB_TOKEN_BLOCK", "hf-token")
    loaded = {}

    class FakeSecret:
        @staticmethod
        def load(name):
            loaded["name"] = name
            return type("S", (), {"get": lambda self: "hf_secret_value"})()

    import prefect.blocks.system as system

    monkeypatch.setattr(system, "Secret", FakeSecret)
    connect.open_registry()
    assert seen["token"]() == "hf_secret_value" and loaded["name"] == "hf-token"
