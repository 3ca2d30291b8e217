import pytest

from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, Lineage
from lifecycle.status import VersionStatus
from registry.artifacts import LocalArtifactStore
from registry.service import Registry
from registry.store import NotFoundError, RegistryStore

LINEAGE = Lineage(base_model=BaseModelRef(model_id="local://base/x", revision="0" * 64),
                  prompt_format=INTENT_V1.identity)


@pytest.fixture
def registry(db_url, tmp_path):
    reg = Registry(RegistryStore.open(db_url), LocalArtifactStore(tmp_path / "artifacts"), "router")
    yield reg
    reg.close()


def register(reg, staged=None):
    return reg.register("router", staged=staged, status=VersionStatus.CANDIDATE, reason="r", actor="t",
                        lineage=LINEAGE, evals=[], task="banking77")


def test_a_version_folder_is_a_hub_like_repo_and_verified(registry):
    v1 = register(registry)
    folder = registry.version_dir(v1)
    assert {"README.md", "lineage.json", "eval.json"} <= set(v1.files)
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card and "- slm-lifecycle" in card
    assert (folder / "lineage.json").read_text() == LINEAGE.model_dump_json(indent=2)


def test_an_orphan_folder_from_a_crashed_registration_is_replaced(registry, tmp_path):
    orphan = tmp_path / "artifacts" / "models" / "router" / "v1"
    orphan.mkdir(parents=True)
    (orphan / "stale.bin").write_bytes(b"half-written")
    v1 = register(registry)
    assert v1.number == 1 and "stale.bin" not in v1.files
    assert not (registry.version_dir(v1) / "stale.bin").exists()


def test_resolve_versions_and_aliases(registry):
    register(registry)
    registry.store.promote("router", 1, actor="t", reason="r")
    assert registry.resolve("champion") == ("router", 1)
    assert registry.resolve("router:v1") == ("router", 1)
    with pytest.raises(NotFoundError, match="no challenger"):
        registry.resolve("challenger")
    with pytest.raises(ValueError, match="unknown alias"):
        registry.resolve("king")
    with pytest.raises(ValueError, match="cannot read"):
        registry.resolve("router:3")
