"""Publishing to the Hub and back, through the real client, against the Hub TEST DOUBLE: tags, the champion
branch, the model card, PeftModel loading from a cleared cache, decommissioning, and failed uploads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lifecycle.retention import RetentionPolicy
from lifecycle.status import Alias
from registry import operations
from registry.retire import VersionDecommissioned, retire_version

pytestmark = pytest.mark.slow
DELETE = RetentionPolicy(keep_recent=0, retire_after_days=30, artifacts="delete")
ARCHIVE = DELETE.model_copy(update={"artifacts": "archive"})
LOAD = r"""
import json, sys
import torch
from peft import PeftModel, get_peft_model_state_dict
from transformers import AutoModelForCausalLM
torch.set_num_threads(1)
base_repo, base_revision, repo = sys.argv[1:4]
sums = {}
for revision in sys.argv[4:]:
    base = AutoModelForCausalLM.from_pretrained(base_repo, revision=base_revision)
    model = PeftModel.from_pretrained(base, repo, revision=revision)
    weights = get_peft_model_state_dict(model, save_embedding_layers=False)
    sums[revision] = {k: float(v.double().sum()) for k, v in weights.items()}
print(json.dumps(sums))
"""


def weight_sums(adapter_dir) -> dict[str, float]:
    from safetensors.torch import load_file

    return {k: float(v.double().sum()) for k, v in load_file(adapter_dir / "adapter_model.safetensors").items()}


def peft_load(hub, kit, tmp_path, base, repo: str, revisions: list[str]) -> dict[str, dict[str, float]]:
    """``PeftModel.from_pretrained(base, repo, revision=...)`` as a user runs it: a fresh process, HF_ENDPOINT set
    before huggingface_hub is imported, an empty cache."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "fresh-hf-home"), "HF_TOKEN": kit.token,
           "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, "-c", LOAD, base.model_id, base.revision, repo, *revisions], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_publish_promote_load_rollback_decommission(hub, kit, hub_registry, hub_adapters, tiny_base_model,
                                                    tiny_before_pairs, tmp_path):
    from huggingface_hub import HfApi, ModelCard, hf_hub_download, metadata_load

    reg = hub_registry
    lineage = kit.base_lineage(reg, tiny_base_model[0], tiny_before_pairs[:40])
    adapter = lineage.model_copy(update={"parent": "router:v1"})
    v1 = kit.register(reg, "router", None, lineage)
    v2 = kit.register(reg, "router", hub_adapters["a"], adapter, em=0.81)
    v3 = kit.register(reg, "router", hub_adapters["b"], adapter, em=0.83)

    # One commit per version on main, tagged v<N>; each commit's tree is exactly that version's files.
    git = hub.repo("acme/router")
    tags = git.refs("tags")
    assert set(tags) == {"v1", "v2", "v3"}
    assert [c.title for c in git.log("main")] == ["router:v3", "router:v2", "router:v1", "initial commit"]
    assert {e.path for e in git.tree(tags["v2"])} == {".gitattributes", "README.md", "lineage.json", "eval.json",
                                                      "adapter_config.json", "adapter_model.safetensors"}
    assert {e.path for e in git.tree(tags["v1"])} == {".gitattributes", "README.md", "lineage.json", "eval.json"}
    assert v2.artifact_uri == f"hf://acme/router@{tags['v2']}"
    assert reg.version_dir(v2).joinpath("adapter_model.safetensors").is_file()
    assert HfApi(endpoint=hub.url, token=kit.token).model_info("acme/router").private is True
    base = lineage.base_model  # the same base again: no new commit, the same pin
    assert reg.artifacts.put_base("tiny", tiny_base_model[0]) == (base.model_id, base.revision)
    assert reg.snapshot_dataset("train", tiny_before_pairs[:40], "again") == lineage.datasets[0].model_copy(
        update={"source": "again"})

    # The model card, parsed by huggingface_hub itself: a valid model-index, the base pinned, the data named.
    card_path = hf_hub_download("acme/router", "README.md", revision="v3", endpoint=hub.url, token=kit.token,
                                cache_dir=tmp_path / "card-cache")
    card = ModelCard.load(card_path)
    assert card.data.library_name == "peft" and card.data.base_model == "acme/tiny-base"
    assert card.data.base_model_revision == lineage.base_model.revision
    assert hub.repo("acme/tiny-base").resolve(lineage.base_model.revision) == lineage.base_model.revision
    assert lineage.base_model.revision in card.text
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("golden-before", "exact_match", 0.83), ("golden-drifted", "exact_match", 0.83)]
    assert metadata_load(card_path)["model-index"][0]["name"] == "router:v3"
    train = lineage.datasets[0]
    assert card.data.datasets == ["acme/router-data"] and train.snapshot.startswith("hf://datasets/acme/router-data@")
    assert len(reg.artifacts.dataset_path(train.snapshot).read_text().splitlines()) == 40
    assert "train.jsonl" in {e.path for e in hub.repo("acme/router-data", "datasets").tree("main")}

    # Promotions move the champion branch to the champion's commit; a rollback moves it back.
    operations.promote(reg, "router", 2, actor="op", reason="first adapter")
    assert git.refs("heads")["champion"] == tags["v2"]
    operations.promote(reg, "router", 3, actor="op", reason="better")
    assert git.refs("heads")["champion"] == tags["v3"]
    operations.rollback(reg, "router", actor="op", reason="3 a.m.")
    assert git.refs("heads")["champion"] == tags["v2"] and reg.store.get_alias("router", Alias.CHAMPION) == 2
    moves = [e for e in reg.store.audit_events() if e.action == "artifacts.champion.moved"]
    assert [m.payload["to_commit"] for m in moves] == [tags["v2"], tags["v3"], tags["v2"]]
    assert reg.sync_champion("router", actor="op") is None  # already there: nothing moves, nothing audited

    # What a user of the Hub gets: the champion branch is v2's weights, the v3 tag v3's.
    sums = peft_load(hub, kit, tmp_path, lineage.base_model, "acme/router", ["champion", "v3"])
    assert sums["champion"] == pytest.approx(weight_sums(hub_adapters["a"]))
    assert sums["v3"] == pytest.approx(weight_sums(hub_adapters["b"]))

    # Decommissioning deletes the tag (archive: renames it); history stays, the tombstone keeps the card.
    done = retire_version(reg, "router", 3, policy=DELETE, actor="decommission", reason="rolled back, old")
    assert "v3" not in git.refs("tags") and tags["v3"] in {c.oid for c in git.log("main")}
    stone = tmp_path / "artifacts" / "tombstones" / "router" / "v3"
    assert "router:v3" in (stone / "README.md").read_text()
    assert json.loads((stone / "tombstone.json").read_text())["state"] == "decommissioned"
    assert done.archive_uri is None and "weights deleted" in done.steps
    # v3 was the last one published, so main showed it: a download naming no revision got the retired weights.
    # Main now shows the champion's tree (v2's files, blob for blob), in a commit of its own.
    assert git.log("main")[0].title == "router:v3 retired: main shows the champion, v2"
    assert sorted((e.path, e.oid) for e in git.tree("main")) == sorted((e.path, e.oid) for e in git.tree(tags["v2"]))
    with pytest.raises(VersionDecommissioned):
        reg.version_dir(reg.store.get_version("router", 3))
    archived = retire_version(reg, "router", 1, policy=ARCHIVE, actor="decommission", reason="old")
    assert archived.archive_uri == "hf://acme/router@archived-v1"
    assert git.refs("tags") == {"v2": tags["v2"], "archived-v1": v1.artifact_uri.rsplit("@", 1)[1]}
    assert git.log("main")[0].title == "router:v3 retired: main shows the champion, v2"  # v1 was not on main
    assert retire_version(reg, "router", 3, policy=DELETE, actor="decommission", reason="again").steps == []
    assert v3.number == 3


def test_main_never_shows_a_retired_version_even_by_its_files(hub, kit, hub_registry, hub_adapters, tiny_base_model,
                                                                tiny_before_pairs):
    """v3 retired while main showed it: main shows the champion v2's files (a commit of its own). Rolled back to v1,
    v2 is retired later: main's head is not v2's commit, but it shows v2's files, so it moves on to v1's."""
    reg = hub_registry
    lineage = kit.base_lineage(reg, tiny_base_model[0], tiny_before_pairs[:40])
    adapter = lineage.model_copy(update={"parent": "mainline:v1"})
    kit.register(reg, "mainline", None, lineage)
    kit.register(reg, "mainline", hub_adapters["a"], adapter)
    operations.promote(reg, "mainline", 1, actor="op", reason="first")
    operations.promote(reg, "mainline", 2, actor="op", reason="adapter")
    kit.register(reg, "mainline", hub_adapters["b"], adapter)  # a candidate: main shows it
    git = hub.repo("acme/mainline")
    tags = git.refs("tags")

    def files(revision):
        return sorted((e.path, e.oid) for e in git.tree(revision))

    retire_version(reg, "mainline", 3, policy=DELETE, actor="decommission", reason="never promoted")
    assert files("main") == files(tags["v2"]) and git.resolve("main") != tags["v2"]
    operations.rollback(reg, "mainline", actor="op", reason="v2 misbehaves")
    retire_version(reg, "mainline", 2, policy=ARCHIVE, actor="decommission", reason="rolled back")
    assert git.log("main")[0].title == "mainline:v2 retired: main shows the champion, v1"
    assert files("main") == files(tags["v1"])
    assert git.refs("heads")["champion"] == tags["v1"]


def test_a_retired_version_leaves_the_champion_branch_that_lagged_on_it(hub, kit, hub_registry, hub_adapters,
                                                                        tiny_base_model, tiny_before_pairs):
    """A rollback whose Hub step failed leaves branch champion on the rolled-back version (until sync-champion);
    retiring that version moves the branch to the registry's champion before its tag goes, so
    ``revision="champion"`` never serves retired weights."""
    reg = hub_registry
    lineage = kit.base_lineage(reg, tiny_base_model[0], tiny_before_pairs[:40])
    kit.register(reg, "lagging", None, lineage)
    kit.register(reg, "lagging", hub_adapters["a"], lineage.model_copy(update={"parent": "lagging:v1"}))
    operations.promote(reg, "lagging", 1, actor="op", reason="first")
    operations.promote(reg, "lagging", 2, actor="op", reason="adapter")
    git = hub.repo("acme/lagging")
    tags = git.refs("tags")
    operations.rollback(reg, "lagging", actor="op", reason="v2 misbehaves")
    git.set_ref("refs/heads/champion", tags["v2"])  # as if the rollback's Hub step had failed, never synced since
    retire_version(reg, "lagging", 2, policy=DELETE, actor="decommission", reason="rolled back")
    assert "v2" not in git.refs("tags") and git.refs("heads")["champion"] == tags["v1"]


def test_a_replayed_rollout_promote_moves_the_branch_once(hub, kit, hub_registry, hub_adapters, tiny_base_model,
                                                          tiny_before_pairs):
    from lifecycle.rollout_state import Promote, RolloutState
    from registry import rollout_exec

    reg = hub_registry
    lineage = kit.base_lineage(reg, tiny_base_model[0], tiny_before_pairs[:40])
    kit.register(reg, "rolled", None, lineage)
    kit.register(reg, "rolled", hub_adapters["a"], lineage.model_copy(update={"parent": "rolled:v1"}))
    operations.promote(reg, "rolled", 1, actor="op", reason="first")
    now = reg.store.clock().isoformat()
    state = RolloutState(model="rolled", candidate=2, champion=1, plan_name="p", plan_version=1, stage_index=3,
                         stage_started_at=now, started_at=now)
    effect = Promote(model="rolled", version=2, expected_champion=1)
    for _ in range(2):  # the effect replayed after a crash: harmless
        rollout_exec._carry_out(reg.store, state, effect, 0, actor="rollout", emit=lambda *a: None)
    tags = hub.repo("acme/rolled").refs("tags")
    assert hub.repo("acme/rolled").refs("heads")["champion"] == tags["v2"]
    moves = [e.payload["version"] for e in reg.store.audit_events() if e.action == "artifacts.champion.moved"]
    assert moves == [1, 2]


def test_a_corrupted_download_is_refused(hub, kit, hub_registry, hub_adapters, tiny_base_model, tiny_before_pairs):
    from registry.artifacts import ArtifactIntegrityError

    reg = hub_registry
    lineage = kit.base_lineage(reg, tiny_base_model[0], tiny_before_pairs[:40])
    version = kit.register(reg, "tampered", hub_adapters["a"], lineage.model_copy(update={"parent": "x"}))
    folder = reg.version_dir(version)
    (folder / "adapter_config.json").resolve().write_text("{}")  # the cached blob behind the snapshot's link
    with pytest.raises(ArtifactIntegrityError, match="adapter_config.json"):
        reg.version_dir(version)
    base = reg.base_dir(version)
    (base / "config.json").resolve().write_text("{}")
    fresh = kit.store(reg.artifacts.root)  # a new process: nothing verified yet
    with pytest.raises(ArtifactIntegrityError, match="config.json"):
        fresh.base_dir(lineage.base_model.model_id, lineage.base_model.revision)


def test_weights_travel_as_git_lfs_and_a_damaged_hub_object_is_refused(hub, kit, hub_registry, hub_adapters,
                                                                       tiny_base_model, tiny_before_pairs, tmp_path):
    """As on the Hub, .safetensors files go through Git LFS: git keeps a pointer, the bytes go to storage through
    the batch API, and a download comes from a signed storage URL. The base's check reads the Hub's sha256 of an
    LFS file (its git oid is the pointer's); damaged storage bytes are refused, naming the file."""
    from lifecycle.files import sha256_file
    from registry.artifacts import ArtifactIntegrityError
    from tests.hub_double import LfsPointer

    reg = hub_registry
    lineage = kit.base_lineage(reg, tiny_base_model[0], tiny_before_pairs[:40])
    version = kit.register(reg, "weights", hub_adapters["b"], lineage.model_copy(update={"parent": "x"}))
    local = hub_adapters["b"] / "adapter_model.safetensors"
    tree = {e.path: e for e in hub.repo("acme/weights").tree("main")}
    assert {path for path, e in tree.items() if e.lfs} == {"adapter_model.safetensors"}  # JSON and card: regular
    assert tree["adapter_model.safetensors"].lfs == LfsPointer(sha256_file(local), local.stat().st_size)
    assert hub.lfs_object(tree["adapter_model.safetensors"].lfs.oid).read_bytes() == local.read_bytes()
    assert (reg.version_dir(version) / "adapter_model.safetensors").read_bytes() == local.read_bytes()

    base = {e.path: e for e in hub.repo(lineage.base_model.model_id).tree(lineage.base_model.revision)}
    weights = base["model.safetensors"].lfs
    assert weights is not None and weights.size == (tiny_base_model[0] / "model.safetensors").stat().st_size
    checked = kit.store(tmp_path / "checked")  # the undamaged base passes the same check
    assert (checked.base_dir(lineage.base_model.model_id, lineage.base_model.revision) / "model.safetensors"
            ).read_bytes() == (tiny_base_model[0] / "model.safetensors").read_bytes()
    stored = hub.lfs_object(weights.oid)
    original = stored.read_bytes()
    stored.write_bytes(bytes(len(original)))  # same size, other bytes: only the sha256 can tell
    try:
        fresh = kit.store(tmp_path / "fresh")
        with pytest.raises(ArtifactIntegrityError, match="model.safetensors differs from the Hub's"):
            fresh.base_dir(lineage.base_model.model_id, lineage.base_model.revision)
    finally:
        stored.write_bytes(original)  # the module's other tests publish the same base
