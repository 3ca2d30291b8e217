"""The rollout on live traffic: a real gateway on loopback serving tiny models, simulated users sending
requests through the real ``openai`` client and feedback on each answer, and the rollout flow deciding
from the prediction log that the gateway writes.

A candidate trained on the same intents as the champion walks shadow → 20 % → 50 % → 100 % and becomes
champion. Two bad candidates are rolled back with the champion back at 100 %:

* trained on mislabelled rows, it answers valid routes that are wrong: only users notice, so the canary
  catches it on feedback;
* trained only on the drifted intents: the tiny base's tokenizer never saw those labels, so it writes
  routes that are not labels at all — model errors, caught already in shadow, before any user sees one.
  (At demo scale the same recipe writes valid drifted routes and is caught by the canary; see the demo.)
"""

from __future__ import annotations

import pytest
import yaml

from lifecycle.status import VersionStatus

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

GUARD = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.3},
         {"metric": "infra_error_rate", "direction": "lower_is_better", "regression": 0.3},
         {"metric": "feedback_success_rate", "direction": "higher_is_better", "regression": 0.3}]


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    plan = {"name": "live-test", "version": 1, "approval_before_last_stage": False,
            "stage_defaults": {"min_requests_per_arm": 40, "max_duration_s": 300, "guardrails": GUARD},
            "stages": [{"name": "shadow", "share": 0, "guardrails": GUARD[:2]},
                       {"name": "canary-20", "share": 20, "on_inconclusive": "rollback"},
                       {"name": "canary-50", "share": 50}, {"name": "full", "share": 100}]}
    path = tmp_path_factory.mktemp("plan") / "rollout.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


@pytest.fixture(scope="module")
def candidates(tiny_registry, tiny_before_pairs, tiny_drifted_pairs, tmp_path_factory):
    """v3: retrained on the champion's intents (good); v4: mislabelled (wrong); v5: drifted intents only."""
    from lifecycle.records import Lineage
    from registry.service import open_registry
    from training.lora import LoraRecipe, train_lora

    numbers = {}
    with open_registry() as reg:
        v1 = reg.store.get_version("intent-router", 1)
        labels = sorted({p.completion for p in tiny_before_pairs})
        rotated = {a: b for a, b in zip(labels, labels[1:] + labels[:1], strict=True)}
        wrong = [p.model_copy(update={"completion": rotated[p.completion]}) for p in tiny_before_pairs]
        for name, pairs in (("good", tiny_before_pairs), ("wrong", wrong), ("drifted", tiny_drifted_pairs)):
            adapter = tmp_path_factory.mktemp(f"adapter-{name}") / "a"
            train_lora(reg.base_dir(v1), pairs, LoraRecipe(r=4, alpha=8, max_steps=120, batch_size=16, log_every=40),
                       adapter, threads=1)
            lineage = Lineage.model_validate({**v1.lineage.model_dump(), "parent": "intent-router:v1"})
            numbers[name] = reg.register("intent-router", staged=adapter, status=VersionStatus.CANDIDATE,
                                         reason=f"{name} candidate", actor="test", lineage=lineage, evals=[],
                                         task="banking77").number
    return numbers


def run_rollout(version: int, plan_file) -> dict:
    """The same path `slm demo` takes (slm_cli.live.roll): the rollout flow, a reviewer standing by."""
    from slm_cli.live import roll

    return roll(f"intent-router:v{version}", str(plan_file), look_s=1.0, settle_s=0.5)


def failures(outcome: dict) -> set[str]:
    return {r.split(":")[0].removeprefix("[fail] ") for r in outcome["history"][-1]["failed"]}


def test_good_candidate_is_promoted_and_bad_one_rolled_back_on_live_traffic(
        prefect_harness, candidates, plan_file, tiny_before_pairs, launch_gateway):
    from registry.service import open_registry
    from registry.traffic import get_split
    from serving.loadgen import LoadGenerator

    good, wrong, drifted = candidates["good"], candidates["wrong"], candidates["drifted"]
    with launch_gateway(max_wait_ms=2.0, split_poll_s=0.1) as gateway, \
            LoadGenerator(gateway.url, tiny_before_pairs, model="intent-router", threads=3) as users:
        promoted = run_rollout(good, plan_file)
        with open_registry() as reg:
            assert reg.store.aliases("intent-router")["champion"] == good
        caught_by_users = run_rollout(wrong, plan_file)
        caught_in_shadow = run_rollout(drifted, plan_file)
    assert promoted["phase"] == "promoted", promoted["history"]
    assert users.counts["requests"] > 200 and users.counts["errors"] == 0
    assert (caught_by_users["phase"], caught_by_users["stage"]) == ("rolled_back", "canary-20"), caught_by_users
    assert failures(caught_by_users) == {"feedback_success_rate"}  # valid routes, wrong ones: users noticed
    assert (caught_in_shadow["phase"], caught_in_shadow["stage"]) == ("rolled_back", "shadow"), caught_in_shadow
    assert failures(caught_in_shadow) == {"model_error_rate"}
    with open_registry() as reg:
        assert reg.store.aliases("intent-router") == {"champion": good, "previous": 1}
        assert get_split(reg.store, "intent-router").live_versions == [good]
        for bad in (wrong, drifted):
            assert reg.store.get_version("intent-router", bad).status is VersionStatus.ROLLED_BACK
        assert reg.store.get_version("intent-router", good).status is VersionStatus.PROMOTED
        assert reg.store.verify_audit().ok
