"""The demo story with ``SLM_ARTIFACT_STORE=hub``: bootstrap and retrain publish to the Hub TEST DOUBLE
(tests/hub_double, loopback) through the real client, and the gateway loads the champion from there."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from lifecycle.config import RetrainParams
from lifecycle.data import read_pairs, write_jsonl
from lifecycle.settings import get_settings
from tests.env import environment
from tests.flows.conftest import ask_gateway
from tests.hub_double import HubDouble

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TOKEN = "hf_flows_double_token"


@pytest.fixture(scope="module")
def hub_project(slm_project, tmp_path_factory):
    """The tiny configs of tests/flows, but a registry of its own whose artifacts live on the Hub double."""
    root = tmp_path_factory.mktemp("hub-flows")
    with HubDouble(root / "hub", token=TOKEN) as hub:
        env = {"SLM_HOME": str(root / "home"), "SLM_ARTIFACT_STORE": "hub", "SLM_HUB_NAMESPACE": "acme",
               "SLM_HUB_RETRY_WAIT_S": "0.05", "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
        with environment(**env):
            yield slm_project, hub


def test_bootstrap_and_retrain_publish_to_the_hub_and_the_gateway_serves_from_it(hub_project, tmp_path):
    from flows.bootstrap import BootstrapParams, bootstrap
    from flows.retrain import retrain
    from registry.service import open_registry
    from serving.app import load_serve_config

    configs, hub = hub_project
    assert bootstrap(BootstrapParams(model="router", task=str(configs / "task.yaml"),
                                     base_model=str(configs / "base_model.yaml"))).champion == "router:v1"
    drop = write_jsonl(tmp_path / "drop.jsonl",
                       read_pairs(get_settings().home / "data" / "drifted-labelled.jsonl")[:200])
    outcome = retrain(RetrainParams(config=str(configs / "retrain.yaml"), data=str(drop), reason="hub story"))
    assert outcome.version == "router:v2"

    git = hub.repo("acme/router")
    assert set(git.refs("tags")) == {"v1", "v2"}
    with open_registry() as reg:
        v2 = reg.get("router:v2")
        card = ModelCard((reg.version_dir(v2) / "README.md").read_text())
        base = v2.lineage.base_model
        assert card.data.base_model == base.model_id and hub.repo(base.model_id).resolve(base.revision)
        assert card.data.datasets == ["acme/intent-router-data"] and card.data.eval_results  # default model-data
        train = next(d for d in v2.lineage.datasets if d.name == "train")
        assert train.snapshot.startswith("hf://datasets/acme/intent-router-data@")

    config = load_serve_config(REPO / "configs/serve.yaml").model_copy(update={"model": "router", "max_wait_ms": 2.0})
    answer = ask_gateway(config, "card lost")
    assert answer.status_code == 200 and answer.json()["model"] == "router:v1", answer.text
