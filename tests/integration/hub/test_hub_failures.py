"""Failed and flaky uploads against the Hub TEST DOUBLE (errors injected server-side), and the token's secrecy."""

from __future__ import annotations

import json
import logging

import pytest

from lifecycle.retention import RetentionPolicy
from registry import operations
from registry.retire import retire_version

pytestmark = pytest.mark.slow


@pytest.fixture
def first_version(kit, hub_registry, tiny_base_model, tiny_before_pairs, request):
    """(registry, model, lineage for an adapter): v1 of a model of the test's own published, so its repo has
    history to keep."""
    lineage = kit.base_lineage(hub_registry, tiny_base_model[0], tiny_before_pairs[:40])
    model = request.node.name.removeprefix("test_").replace("_", "-")[:60]
    kit.register(hub_registry, model, None, lineage)
    return hub_registry, model, lineage.model_copy(update={"parent": f"{model}:v1"})


def snapshot(hub, reg, model):
    git = hub.repo(f"acme/{model}")
    return {"tags": git.refs("tags"), "head": git.resolve("main"), "versions": reg.store.list_versions(model),
            "audit": len(reg.store.audit_events())}


def test_a_failed_upload_leaves_no_half_registered_version(hub, kit, first_version, hub_adapters):
    from huggingface_hub.errors import HfHubHTTPError

    reg, model, lineage = first_version
    before = snapshot(hub, reg, model)
    hub.faults.fail("commit", times=3)  # more than the 2 retries the store is given
    with pytest.raises(HfHubHTTPError, match="500"):
        kit.register(reg, model, hub_adapters["a"], lineage)
    assert snapshot(hub, reg, model) == before and not hub.faults.pending
    assert kit.register(reg, model, hub_adapters["a"], lineage).number == 2  # the number was never taken


def test_transient_errors_are_retried_and_a_lost_response_commits_once(hub, kit, first_version, hub_adapters):
    reg, model, lineage = first_version
    calls = hub.faults.calls["commit"]
    hub.faults.fail("commit", times=2)
    assert kit.register(reg, model, hub_adapters["a"], lineage).number == 2
    assert hub.faults.calls["commit"] == calls + 3
    hub.faults.fail("commit", after=True)  # the Hub commits, the answer is lost: the retry must not commit again
    assert kit.register(reg, model, hub_adapters["b"], lineage).number == 3
    titles = [c.title for c in hub.repo(f"acme/{model}").log("main")]
    assert titles == [f"{model}:v3", f"{model}:v2", f"{model}:v1", "initial commit"]


def test_a_failed_tag_reverts_the_commit_without_rewriting_history(hub, kit, first_version, hub_adapters):
    from huggingface_hub.errors import HfHubHTTPError

    reg, model, lineage = first_version
    before = snapshot(hub, reg, model)
    hub.faults.fail("tag", times=3)
    with pytest.raises(HfHubHTTPError):
        kit.register(reg, model, hub_adapters["a"], lineage)
    git, after = hub.repo(f"acme/{model}"), snapshot(hub, reg, model)
    assert after["tags"] == before["tags"] and after["versions"] == before["versions"]
    history = git.log("main")
    assert [c.title for c in history[:3]] == [f"revert {history[1].oid[:12]}: {model}:v2 was not published",
                                              f"{model}:v2", f"{model}:v1"]
    assert git.tree("main") == git.tree(before["head"])


def test_a_registration_dying_after_the_upload_is_unpublished(hub, kit, first_version, hub_adapters, monkeypatch):
    reg, model, lineage = first_version
    before = snapshot(hub, reg, model)
    real = reg.store._audit

    def audit(conn, actor, action, subject, payload):
        if action == "version.registered":
            raise RuntimeError("database went away")
        return real(conn, actor, action, subject, payload)

    monkeypatch.setattr(reg.store, "_audit", audit)
    with pytest.raises(RuntimeError, match="went away"):
        kit.register(reg, model, hub_adapters["a"], lineage)
    git = hub.repo(f"acme/{model}")
    assert snapshot(hub, reg, model)["tags"] == before["tags"] and reg.store.list_versions(model) == before["versions"]
    assert git.log("main")[0].title.endswith(f"{model}:v2 was not registered")
    assert git.tree("main") == git.tree(before["head"])


def test_the_token_never_reaches_logs_audit_or_files(hub, kit, first_version, hub_adapters, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    reg, model, lineage = first_version
    hub.faults.fail("commit")  # a retry, logged
    kit.register(reg, model, hub_adapters["a"], lineage)
    operations.promote(reg, model, 2, actor="op", reason="go")
    reg.version_dir(reg.store.get_version(model, 2))
    retire_version(reg, model, 1, policy=RetentionPolicy(keep_recent=0, retire_after_days=1, artifacts="delete"),
                   actor="decommission", reason="old")
    assert "retry 1 of 2" in caplog.text
    secret = kit.token
    assert secret not in caplog.text and secret not in repr(reg.artifacts) and secret not in repr(reg.artifacts.hub)
    assert secret not in json.dumps([e.model_dump(mode="json") for e in reg.store.audit_events()])
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    pushed = hub.repo(f"acme/{model}").git("log", "-p", "--all", "--format=%B")
    assert secret.encode() not in pushed
