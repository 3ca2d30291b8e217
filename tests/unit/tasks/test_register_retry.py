"""A retry of a retrain flow run (Prefect's Retry keeps the run's id) after its version was registered: the register
step finds that version instead of registering a second, and announces it if the attempt before died first."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, Lineage
from lifecycle.verdict import Verdict
from registry.artifacts import LocalArtifactStore
from registry.service import Registry
from registry.store import RegistryStore

LINEAGE = Lineage(base_model=BaseModelRef(model_id="local://base/x", revision="0" * 64),
                  prompt_format=INTENT_V1.identity)


def gate(verdict: Verdict) -> SimpleNamespace:
    """What the register step reads of a GateDecision."""
    return SimpleNamespace(verdict=verdict, passed=verdict is Verdict.PASS, findings=[], reasons=lambda: [])


@pytest.fixture
def world(tmp_path, monkeypatch):
    import tasks.events
    import tasks.register

    reg = Registry(RegistryStore.open(f"sqlite:///{tmp_path / 'registry.db'}"),
                   LocalArtifactStore(tmp_path / "artifacts"), "router")
    emitted: list[str] = []
    monkeypatch.setattr(tasks.register, "open_registry", lambda: contextlib.nullcontext(reg))
    monkeypatch.setattr(tasks.register, "build_lineage", lambda plan, data, trained: LINEAGE)
    monkeypatch.setattr(tasks.events, "emit_event", lambda event, resource, payload: emitted.append(event))
    adapter = tmp_path / "runs" / "run-7" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 4}')
    plan = SimpleNamespace(config=SimpleNamespace(model="router", actor="retrain-flow", rollout_plan="p.yaml"),
                           champion=SimpleNamespace(ref="router:v1"), run_dir=adapter.parent,
                           task=SimpleNamespace(name="banking77"))
    yield reg, plan, SimpleNamespace(adapter_dir=adapter), emitted
    reg.close()


def test_a_retried_run_registers_once_and_announces_once(world):
    from tasks.register import register

    reg, plan, trained, emitted = world
    passed = gate(Verdict.PASS)
    first = register.fn(plan, None, trained, SimpleNamespace(challenger=[]), passed)
    assert (first.version.number, emitted) == (1, ["slm.candidate.published"])
    # The retry trains again (a new adapter) and, this time, its gate fails: the version registered stands.
    trained.adapter_dir.mkdir(parents=True)
    (trained.adapter_dir / "adapter_config.json").write_text('{"r": 4}')
    failed = gate(Verdict.FAIL)
    again = register.fn(plan, None, trained, SimpleNamespace(challenger=[]), failed)
    assert again.version.number == 1 and [v.number for v in reg.store.list_versions("router")] == [1]
    assert emitted == ["slm.candidate.published"]  # announced once


def test_a_retry_announces_what_the_attempt_before_registered_but_never_announced(world, monkeypatch):
    import tasks.register
    from tasks.register import register

    reg, plan, trained, emitted = world
    real, calls = tasks.register.announce, []

    def killed_once(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 1:
            raise KeyboardInterrupt("killed between registering and announcing")
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks.register, "announce", killed_once)
    with pytest.raises(KeyboardInterrupt):
        register.fn(plan, None, trained, SimpleNamespace(challenger=[]), gate(Verdict.PASS))
    assert [v.number for v in reg.store.list_versions("router")] == [1] and emitted == []
    version = register.fn(plan, None, trained, SimpleNamespace(challenger=[]), gate(Verdict.PASS))
    assert version.version.number == 1 and emitted == ["slm.candidate.published"]
    assert reg.store.has_event("slm.candidate.published", "router:v1")


def test_a_candidate_gated_against_a_champion_that_moved_meanwhile_is_registered_rejected(world):
    """A rollout promoted another version while this run trained: its gate compared it with a version that is no
    longer the champion, so it is kept as rejected, saying so, and announced as such (nothing rolls it out)."""
    from tasks.register import register

    reg, plan, trained, emitted = world
    first = register.fn(plan, None, trained, SimpleNamespace(challenger=[]), gate(Verdict.PASS))
    reg.store.move_alias("router", "champion", first.version.number, actor="test", reason="promoted meanwhile")
    trained.adapter_dir.mkdir(parents=True)
    (trained.adapter_dir / "adapter_config.json").write_text('{"r": 4}')
    stale = SimpleNamespace(**{**vars(plan), "champion": SimpleNamespace(ref="router:v9"),
                               "run_dir": plan.run_dir.with_name("run-8")})
    done = register.fn(stale, None, trained, SimpleNamespace(challenger=[]), gate(Verdict.PASS))
    assert done.version.number == 2 and done.version.status.value == "rejected" and done.verdict == "fail"
    assert any("champion replaced" in r and "router:v9" in r and "router:v1 now" in r for r in done.reasons)
    assert done.version.reason.endswith("but the champion was replaced since: not published")
    assert emitted == ["slm.candidate.published", "slm.gate.failed"]
    # The champion it was gated against still the champion: a candidate, as before.
    trained.adapter_dir.mkdir(parents=True)
    (trained.adapter_dir / "adapter_config.json").write_text('{"r": 4}')
    fresh = SimpleNamespace(**{**vars(plan), "champion": SimpleNamespace(ref="router:v1"),
                               "run_dir": plan.run_dir.with_name("run-9")})
    assert register.fn(fresh, None, trained, SimpleNamespace(challenger=[]), gate(Verdict.PASS)).verdict == "pass"


def test_a_retry_of_a_run_that_registered_starts_nothing_again(world):
    """The Retry of a run whose report step failed: its version and verdict as registered, nothing re-validated
    (its drop may be gone), and its reasons as the first attempt announced them."""
    from tasks.register import register, registered_already

    reg, plan, trained, emitted = world
    assert registered_already.fn(plan) is None
    decided = SimpleNamespace(verdict=Verdict.PASS, passed=True, findings=[], reasons=lambda: ["[pass] first"])
    first = register.fn(plan, None, trained, SimpleNamespace(challenger=[]), decided)
    again = registered_already.fn(plan)
    assert again.version.ref == first.version.ref == "router:v1"
    assert (again.verdict, again.reasons, again.champion) == ("pass", ["[pass] first"], "router:v1")
    assert emitted == ["slm.candidate.published"]


def test_a_retry_long_after_announces_nothing_new_whatever_the_status_now(world):
    """The version was announced as a candidate, then promoted; a Retry of its run must not announce it again, nor
    as a failed gate because it is no longer a candidate."""
    from tasks.register import registered_already

    reg, plan, trained, emitted = world
    from tasks.register import register

    register.fn(plan, None, trained, SimpleNamespace(challenger=[]), gate(Verdict.PASS))
    reg.store.promote("router", 1, actor="test", reason="rolled out", expected_champion=None)
    again = registered_already.fn(plan)
    assert again.published and again.verdict == "pass" and again.version.status.value == "promoted"
    assert emitted == ["slm.candidate.published"]
    assert not reg.store.has_event("slm.gate.failed", "router:v1")


def test_a_retry_does_not_publish_a_candidate_whose_champion_was_replaced_before_its_announcement(world, monkeypatch):
    """Its first attempt registered it against v1 and died before announcing; meanwhile v3 became the champion.
    Announcing it now would roll it out against a champion no gate compared it with."""
    import tasks.register
    from tasks.register import register, registered_already

    reg, plan, trained, emitted = world

    def again_for(run: str) -> SimpleNamespace:
        trained.adapter_dir.mkdir(parents=True, exist_ok=True)
        (trained.adapter_dir / "adapter_config.json").write_text('{"r": 4}')
        return SimpleNamespace(**{**vars(plan), "run_dir": plan.run_dir.with_name(run)})

    register.fn(again_for("run-0"), None, trained, SimpleNamespace(challenger=[]), gate(Verdict.PASS))  # v1
    reg.store.move_alias("router", "champion", 1, actor="test", reason="v1 is the champion")
    real = tasks.register.announce

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between registering and announcing")

    monkeypatch.setattr(tasks.register, "announce", killed)
    with pytest.raises(KeyboardInterrupt):  # v2, gated against v1
        register.fn(again_for("run-7"), None, trained, SimpleNamespace(challenger=[]), gate(Verdict.PASS))
    monkeypatch.setattr(tasks.register, "announce", real)
    third = SimpleNamespace(**{**vars(again_for("run-1")), "champion": SimpleNamespace(ref="router:v1")})
    register.fn(third, None, trained, SimpleNamespace(challenger=[]), gate(Verdict.PASS))  # v3
    reg.store.move_alias("router", "champion", 3, actor="test", reason="v3 rolled out")
    emitted.clear()
    again = registered_already.fn(again_for("run-7"))
    assert again.version.number == 2 and again.published and again.champion == "router:v1"
    assert any("router:v3 now" in r and "router:v2 was not announced" in r for r in again.reasons)
    assert emitted == [] and not reg.store.has_event("slm.candidate.published", "router:v2")


def test_a_promotion_between_the_check_and_the_record_still_keeps_the_candidate_unpublished(world, monkeypatch):
    """The champion is checked again where the version is recorded, under the model's lock: a promotion that came
    after the task's own check (it said "not moved") still turns the candidate into a rejected version."""
    import tasks.register
    from tasks.register import register

    reg, plan, trained, emitted = world
    register.fn(SimpleNamespace(**{**vars(plan), "run_dir": plan.run_dir.with_name("run-0")}), None, trained,
                SimpleNamespace(challenger=[]), gate(Verdict.PASS))  # v1
    reg.store.move_alias("router", "champion", 1, actor="test", reason="v1 is the champion")
    trained.adapter_dir.mkdir(parents=True)
    (trained.adapter_dir / "adapter_config.json").write_text('{"r": 4}')
    real, checks = tasks.register.champion_moved, []

    def late(*args):  # the first check runs before the promotion lands
        checks.append(args)
        return None if len(checks) == 1 else real(*args)

    monkeypatch.setattr(tasks.register, "champion_moved", late)
    stale = SimpleNamespace(**{**vars(plan), "champion": SimpleNamespace(ref="router:v9")})
    done = register.fn(stale, None, trained, SimpleNamespace(challenger=[]), gate(Verdict.PASS))
    assert len(checks) == 2 and done.version.number == 2 and done.version.status.value == "rejected"
    assert [v.number for v in reg.store.list_versions("router")] == [1, 2]  # the refused record left no number
    assert any("champion replaced" in r for r in done.reasons)
