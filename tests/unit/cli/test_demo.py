"""`slm demo`'s two scales: every config they name loads, and the traffic sizes meet the policies they feed."""

import pytest

from lifecycle.config import RetrainParams, load_yaml_config
from lifecycle.drift_policy import DriftPolicy
from lifecycle.gate import GatePolicy
from lifecycle.retention import RetentionPolicy
from lifecycle.settings import project_root
from slm_cli.demo import FULL, SMOKE
from training.lora import LoraRecipe

ROOT = project_root()


@pytest.mark.parametrize("scale", [FULL, SMOKE], ids=lambda s: s.name)
def test_the_monitor_sees_enough_rows_when_its_run_is_started(scale):
    policy = load_yaml_config(DriftPolicy, ROOT / scale.monitor)
    assert scale.before_requests + scale.drift_requests >= policy.min_rows


@pytest.mark.parametrize("scale", [FULL, SMOKE], ids=lambda s: s.name)
def test_the_forgetful_retrain_is_a_quick_experiment_of_the_same_recipe(scale):
    full = load_yaml_config(LoraRecipe, ROOT / RetrainParams().resolve(ROOT).recipe)
    quick = load_yaml_config(LoraRecipe, ROOT / scale.quick_recipe)
    assert quick.max_steps < full.max_steps
    # only the step budget differs: it is the same recipe, tried for less long
    assert quick.model_copy(update={"max_steps": full.max_steps}) == full
    load_yaml_config(GatePolicy, ROOT / scale.blind_gate)
    assert load_yaml_config(RetentionPolicy, ROOT / scale.retention).retire_after_days > 0
