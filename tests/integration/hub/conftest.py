"""The Hub store end to end against the Hub TEST DOUBLE (tests/hub_double) on a loopback port.

The real ``huggingface_hub`` client talks to it: the store passes the double's URL as ``endpoint=`` to every call
(it does not rely on ``HF_ENDPOINT`` being set before ``huggingface_hub`` was imported — in a pytest session
other tests import it first); ``PeftModel.from_pretrained`` is run in a fresh process with ``HF_ENDPOINT`` set
and an empty cache, exactly as a user would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, EvalReport, Lineage
from lifecycle.status import VersionStatus
from registry.hub import HubArtifactStore
from registry.service import Registry
from registry.store import RegistryStore
from tests.hub_double import HubDouble

TOKEN = "hf_TESTDOUBLEtoken0123456789secret"
NS = "acme"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubDouble(tmp_path_factory.mktemp("hub"), token=TOKEN) as running:
        yield running


@pytest.fixture(scope="session")
def hub_adapters(tiny_base_model, tiny_before_pairs, tiny_drifted_pairs, tmp_path_factory) -> dict[str, Path]:
    """Two small LoRA adapters on the tiny base, with different weights."""
    from training.lora import LoraRecipe, train_lora

    root = tmp_path_factory.mktemp("hub-adapters")
    recipe = LoraRecipe(r=4, alpha=8, max_steps=8, batch_size=16, log_every=4)
    train_lora(tiny_base_model[0], tiny_drifted_pairs, recipe, root / "a", device="cpu")
    train_lora(tiny_base_model[0], tiny_drifted_pairs + tiny_before_pairs[:50], recipe.model_copy(update={"seed": 1}),
               root / "b", device="cpu")
    return {"a": root / "a", "b": root / "b"}


class Kit:
    """Helpers the hub tests share (a fixture, since test modules cannot import a conftest)."""

    token, namespace = TOKEN, NS

    def __init__(self, hub: HubDouble) -> None:
        self.hub = hub

    def store(self, root: Path, **overrides) -> HubArtifactStore:
        options = {"namespace": NS, "endpoint": self.hub.url, "token": lambda: TOKEN, "dataset_repo": "router-data",
                   "retries": 2, "retry_wait_s": 0.01, **overrides}
        return HubArtifactStore(root, **options)

    @staticmethod
    def report(version: str, benchmark: str, exact_match: float) -> EvalReport:
        return EvalReport(version=version, benchmark=benchmark, benchmark_sha256="b" * 64, n_items=60,
                          exact_match=exact_match, per_route_accuracy={}, malformed_rate=0.0, latency_p50_ms=3.0,
                          latency_p95_ms=5.0, latency_p99_ms=7.0, tokens_per_s=100.0, peak_memory_mb=10.0)

    @staticmethod
    def base_lineage(reg: Registry, base_dir: Path, train_pairs) -> Lineage:
        """Publish the tiny base to the Hub and snapshot its training data there: the lineage of version 1."""
        repo, commit = reg.artifacts.put_base("tiny", base_dir)
        train = reg.snapshot_dataset("train", train_pairs, "tests")
        return Lineage(base_model=BaseModelRef(model_id=repo, revision=commit), datasets=[train],
                       prompt_format=INTENT_V1.identity)

    def register(self, reg: Registry, model: str, staged: Path | None, lineage: Lineage, em: float = 0.8):
        evals = [self.report(f"{model}:new", "golden-before", em), self.report(f"{model}:new", "golden-drifted", em)]
        return reg.register(model, staged=staged, status=VersionStatus.CANDIDATE, reason="test", actor="test",
                            lineage=lineage, evals=evals, task="banking77")


@pytest.fixture(scope="module")
def kit(hub) -> Kit:
    return Kit(hub)


@pytest.fixture
def hub_registry(kit, tmp_path):
    reg = Registry(RegistryStore.open(f"sqlite:///{tmp_path / 'registry.db'}"), kit.store(tmp_path / "artifacts"),
                   "router")
    yield reg
    reg.close()
