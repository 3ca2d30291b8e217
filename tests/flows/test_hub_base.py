"""Bootstrap from a Hub base model and a Hub dataset, both pinned by commit, served by the Hub TEST DOUBLE
(tests/hub_double, loopback) through the real client: v1's lineage pins them, the gateway answers with v1, and a
retrain on top works. Nothing comes from the real Hub; the Hub cache is a temporary folder.

The uploaded model is the session's tiny base made to look like SmolLM2 where it matters: bf16 weights, and a
tokenizer without a pad token."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi

from lifecycle.config import RetrainParams
from lifecycle.data import read_pairs, write_jsonl
from lifecycle.records import BaseModelRef
from lifecycle.settings import get_settings
from tests.conftest import BEFORE_INTENTS, DRIFTED_INTENTS
from tests.env import environment
from tests.flows.conftest import ask_gateway
from tests.hub_double import HubDouble

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TOKEN = "hf_hub_base_double_token"
MODEL_REPO, DATA_REPO = "tiny-org/tiny-lm", "tiny-org/bank-csv"


def _smollm_like(base: Path, out: Path) -> Path:
    """The tiny base with bf16 weights and no pad token, as SmolLM2-135M ships."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(out)
    return out


def _csv_subset(out: Path) -> Path:
    """train.csv / test.csv of six BANKING77 intents (four old, two new), no categories.json."""
    keep = set(BEFORE_INTENTS) | set(DRIFTED_INTENTS)
    out.mkdir(parents=True)
    for split in ("train", "test"):
        with (REPO / "data/banking77" / f"{split}.csv").open(newline="") as src, \
                (out / f"{split}.csv").open("w", newline="") as dst:
            writer = csv.DictWriter(dst, fieldnames=["text", "category"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "category": r["category"]} for r in csv.DictReader(src)
                             if r["category"] in keep)
    return out


@pytest.fixture(scope="module")
def hub_world(slm_project, tiny_base_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-base")
    with HubDouble(root / "hub", token=TOKEN) as hub:
        env = {"SLM_HOME": str(root / "home"), "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN,
               "HF_HUB_CACHE": str(root / "hf-cache"), "HF_HUB_OFFLINE": None, "SLM_ARTIFACT_STORE": None}
        with environment(**env):
            api = HfApi(endpoint=hub.url, token=TOKEN)
            api.create_repo(MODEL_REPO)
            model_sha = api.upload_folder(repo_id=MODEL_REPO, folder_path=_smollm_like(
                tiny_base_model[0], root / "model")).oid
            api.create_repo(DATA_REPO, repo_type="dataset")
            data_sha = api.upload_folder(repo_id=DATA_REPO, repo_type="dataset",
                                         folder_path=_csv_subset(root / "data")).oid
            configs = root / "configs"
            shutil.copytree(slm_project, configs)
            task = yaml.safe_load((configs / "task.yaml").read_text())
            task.pop("data_dir")
            task.update(name="bank-hub", hub_dataset=f"{DATA_REPO}@{data_sha}", golden_before_size=40,
                        golden_drifted_size=30)
            (configs / "task.yaml").write_text(yaml.safe_dump(task))
            retrain = yaml.safe_load((configs / "retrain.yaml").read_text())
            retrain.update(model="hubrouter", task=str(configs / "task.yaml"), replay_rows=100)
            (configs / "retrain.yaml").write_text(yaml.safe_dump(retrain))
            yield {"hub": hub, "configs": configs, "model_sha": model_sha, "data_sha": data_sha, "root": root}


def _bootstrap(world, hub_base: str, model: str = "hubrouter"):
    from flows.bootstrap import BootstrapParams, bootstrap

    configs = world["configs"]
    return bootstrap(BootstrapParams(model=model, task=str(configs / "task.yaml"),
                                     base_model=str(configs / "base_model.yaml"), hub_base=hub_base))


def _versions(model: str) -> list:
    from registry.service import open_registry

    with open_registry() as reg:
        return reg.store.list_versions(model)


def test_bootstrap_pins_hub_base_and_dataset_serves_and_retrains(hub_world, tmp_path):
    from flows.retrain import retrain
    from registry.service import open_registry
    from serving.app import load_serve_config

    sha, data_sha = hub_world["model_sha"], hub_world["data_sha"]
    assert _bootstrap(hub_world, f"{MODEL_REPO}@{sha}").champion == "hubrouter:v1"
    with open_registry() as reg:
        v1 = reg.get("hubrouter:v1")
        assert v1.lineage.base_model == BaseModelRef(model_id=f"hf://{MODEL_REPO}", revision=sha)
        assert v1.lineage.recipe["pad_is_eos"] is True and v1.lineage.recipe["dtype"] == "bfloat16"
        sources = {d.name: d.source for d in v1.lineage.datasets}
        assert sources == {n: f"hf://datasets/{DATA_REPO}@{data_sha}#{n}"
                           for n in ("train", "golden-before", "golden-drifted")}
        before = next(r for r in v1.evals if r.benchmark == "golden-before")
        assert before.n_items == 40 and before.exact_match > 0.25  # the tiny base knows the four old intents
        assert reg.base_dir(v1).parent.name == "snapshots" and reg.base_dir(v1).name == sha  # the Hub cache

    drop = write_jsonl(tmp_path / "drop.jsonl",
                       read_pairs(get_settings().home / "data" / "drifted-labelled.jsonl"))
    outcome = retrain(RetrainParams(config=str(hub_world["configs"] / "retrain.yaml"), data=str(drop),
                                    reason="hub base story"))
    assert outcome.version == "hubrouter:v2"
    with open_registry() as reg:
        v2 = reg.get("hubrouter:v2")
        assert v2.lineage.base_model == v1.lineage.base_model and v2.lineage.parent == "hubrouter:v1"
        assert "adapter_config.json" in v2.files

    config = load_serve_config(REPO / "configs/serve.yaml").model_copy(update={
        "model": "hubrouter", "task": hub_world["configs"] / "task.yaml", "max_wait_ms": 2.0})
    answer = ask_gateway(config, "card lost")
    assert answer.status_code == 200 and answer.json()["model"] == "hubrouter:v1", answer.text


def test_a_branch_instead_of_a_commit_is_refused_and_nothing_registered(hub_world):
    with pytest.raises(ValueError, match="branch or tag") as err:
        _bootstrap(hub_world, f"{MODEL_REPO}@main", model="branchy")
    assert "40-hex commit" in str(err.value)
    assert _versions("branchy") == []


@pytest.mark.parametrize("which", ["repo", "revision"])
def test_a_missing_repo_or_revision_is_a_clear_error_and_nothing_registered(hub_world, which):
    from registry.hub_models import HubSourceError

    target = f"tiny-org/absent@{hub_world['model_sha']}" if which == "repo" else f"{MODEL_REPO}@{'0' * 40}"
    with pytest.raises(HubSourceError, match="was not found" if which == "repo" else "has no commit"):
        _bootstrap(hub_world, target, model=f"missing-{which}")
    assert _versions(f"missing-{which}") == []
