"""`slm demo --smoke`: the README's main job, end to end, on every change — the same story as `make demo`
(the real `slm up` stack, the monitor deployment, the automations, the worker, the gateway and simulated users,
the same model and retrains) with a quarter of the traffic and a smaller rollout plan. Run as a user runs it: the
CLI in its own process.

What must have happened, read back from the demo's registry: the drift event started the retrain (nothing in
the demo calls the flow), the candidate event started the rollout, v2 became champion on live traffic, the
forgetful v3 passed its blind gate and was rolled back live with the champion untouched, decommissioning
retired it, and the audit chain holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lifecycle.settings import project_root

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

MODEL = "intent-router"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run `slm demo --smoke --keep`; the stack it leaves up is looked at in the browser, then stopped."""
    home = tmp_path_factory.mktemp("demo-smoke")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SLM_"))}
    env.update({"SLM_HOME": str(home), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                # The built base model is keyed by its config and data hashes: share `make demo`'s cache.
                "SLM_CACHE_DIR": os.environ.get("SLM_CACHE_DIR", str(project_root() / ".slm" / "cache"))})
    try:
        done = subprocess.run([sys.executable, "-m", "slm_cli.main", "demo", "--smoke", "--keep"],
                              cwd=project_root(), env=env, capture_output=True, text=True, timeout=1800)
        print(done.stdout[-6000:])
        assert done.returncode == 0, f"slm demo --smoke failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        yield home / "demo", done.stdout
    finally:  # the demo's own home: `slm down` stops exactly what the demo started
        subprocess.run([sys.executable, "-m", "slm_cli.main", "down"], cwd=project_root(),
                       env={**env, "SLM_HOME": str(home / "demo")}, capture_output=True, timeout=120)


@pytest.fixture
def registry(smoke, monkeypatch):
    from registry.service import open_registry

    monkeypatch.setenv("SLM_HOME", str(smoke[0]))
    with open_registry() as reg:
        yield reg


def test_the_story_ends_with_v2_champion_and_the_forgetful_v3_rolled_back_and_retired(registry):
    versions = {v.number: v for v in registry.store.list_versions(MODEL)}
    assert sorted(versions) == [1, 2, 3]
    assert registry.store.get_alias(MODEL, "champion") == 2
    assert registry.store.get_alias(MODEL, "previous") == 1
    assert versions[2].status.value == "promoted"
    assert versions[3].status.value == "decommissioned"  # rolled back, then retired: weights archived, tombstone
    from registry.traffic import get_split

    split = get_split(registry.store, MODEL)
    assert (split.champion, split.challenger, split.shadow) == (2, None, None)


def test_the_forgetful_v3_passed_shadow_and_the_canary_rolled_it_back(registry):
    """The story's step 7: shadow rules out a broken model only, so the candidate that forgot the old intents goes
    live, and the canary's users (their feedback, its garbled labels) roll it back."""
    from registry.rollouts import get_rollout

    state = get_rollout(registry.store, MODEL, 3)
    decided = [(h.stage, h.action) for h in state.history if h.action in ("advance", "rollback")]
    assert state.phase == "rolled_back"
    assert decided[0] == ("shadow", "advance"), state.history
    assert decided[-1][1] == "rollback" and decided[-1][0].startswith("canary"), state.history
    assert any(r.startswith("[fail]") for r in state.history[-1].reasons), state.history[-1]


def test_events_not_the_demo_started_the_retrain_and_the_rollouts(registry):
    events = registry.store.audit_events()
    seq = {}
    for e in events:
        seq.setdefault((e.action, e.subject), e.seq)
    v2 = registry.store.get_version(MODEL, 2)
    assert v2.lineage.trigger.startswith("drift"), v2.lineage.trigger  # the drift event's reason, templated
    assert seq[("slm.drift.detected", MODEL)] < seq[("version.registered", f"{MODEL}:v2")]
    moves = [(e.subject, e.payload["to"], e.actor) for e in events if e.action == "version.status"]
    # decided by the rollout flow, which the candidate events started on the worker
    assert (f"{MODEL}:v2", "promoted", "flow:rollout") in moves
    assert (f"{MODEL}:v3", "rolled_back", "flow:rollout") in moves
    assert (f"{MODEL}:v3", "archived", "decommission-flow") in moves


def test_the_audit_chain_holds_and_the_summary_says_so(registry, smoke):
    audit = registry.store.verify_audit()
    assert audit.ok and audit.checked > 20
    assert "audit chain intact" in smoke[1]
    assert "0 failed" in smoke[1]  # no simulated user saw an error, through every split change


def test_the_prefect_ui_shows_the_story(smoke, tmp_path):
    """What a person opening the UI after `make demo --keep` sees: the deployments, the runs the story made
    (monitor, the retrain the automation started, the rollouts the candidate events started, decommission) and
    the lifecycle report's artifact."""
    import httpx

    from tests.integration.ui import check_ui, find_chromium

    find_chromium()
    record = json.loads((smoke[0] / "run" / "stack.json").read_text())
    runs = httpx.post(f"{record['api_url']}/flow_runs/filter", json={"limit": 50}, timeout=30).json()
    by_deployment = httpx.post(f"{record['api_url']}/deployments/filter", json={}, timeout=30).json()
    names = {d["id"]: d["name"] for d in by_deployment}
    story = [(names.get(r["deployment_id"]), r["name"]) for r in runs if r["state_type"] == "COMPLETED"]
    made = sorted(d for d, _ in story if d)
    assert made == ["decommission", "monitor", "retrain", "retrain", "rollout", "rollout"], made
    check_ui(record["ui_url"], ["retrain", "rollout", "monitor", "decommission", "bootstrap"],
             expect_flow_run_names=[name for d, name in story if d in ("retrain", "rollout")],
             expect_artifact_keys=["lifecycle-report-intent-router"], screenshot_dir=tmp_path / "screenshots",
             ui_prefix="/v2")
