"""An automation templates "{{ event.payload.x }}" to "" when an older event has no x: the flows' parameters
take that blank as "not given" (the config's or the field's default), never as a path named ""."""

from lifecycle.config import RetrainParams
from tasks.rollout import RolloutParams


def test_a_blank_rollout_plan_is_the_default_plan():
    assert RolloutParams(version="m:v1", plan="").plan == "configs/rollout.yaml"
    assert RolloutParams(version="m:v1", plan="  ").plan == "configs/rollout.yaml"
    assert RolloutParams(version="m:v1", plan="configs/rollout-demo.yaml").plan == "configs/rollout-demo.yaml"


def test_blank_retrain_overrides_are_unset():
    params = RetrainParams(data="", gate=" ", rollout_plan="", benchmarks="")
    assert (params.data, params.gate, params.rollout_plan, params.benchmarks) == (None, None, None, None)
    assert RetrainParams(rollout_plan="configs/smoke/rollout.yaml").rollout_plan == "configs/smoke/rollout.yaml"


def test_a_run_for_another_model_than_the_config_retrains_is_refused_by_name(tmp_path):
    """The drift event names its model; a retrain config of another model must not retrain that one instead."""
    import pytest

    config = tmp_path / "retrain.yaml"
    config.write_text("model: support-bot\n")
    assert RetrainParams(config=str(config), model="support-bot").resolve(tmp_path).model == "support-bot"
    assert RetrainParams(config=str(config), model="").resolve(tmp_path).model == "support-bot"  # older events
    with pytest.raises(ValueError, match="this run is for intent-router, but .* retrains support-bot"):
        RetrainParams(config=str(config), model="intent-router").resolve(tmp_path)


def test_a_relative_drop_is_read_from_the_project_not_the_workers_directory(tmp_path, monkeypatch):
    """Every path of a run resolves against the project root; a worker runs flows from a directory of its own."""
    config = tmp_path / "retrain.yaml"
    config.write_text("model: support-bot\ndata: data/drop.jsonl\n")
    monkeypatch.chdir(tmp_path.parent)
    assert RetrainParams(config=str(config)).resolve(tmp_path).data == str(tmp_path / "data" / "drop.jsonl")
    assert RetrainParams(config=str(config), data="in/x@train").resolve(tmp_path).data == str(tmp_path / "in/x@train")
    assert RetrainParams(config=str(config), data="/abs/drop.jsonl").resolve(tmp_path).data == "/abs/drop.jsonl"
