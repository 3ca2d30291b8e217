"""registry.hub_models against the Hub TEST DOUBLE (loopback, real client): pinned snapshots, offline, integrity."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi

from lifecycle.hub_refs import parse_pinned
from registry.artifacts import ArtifactIntegrityError, LocalArtifactStore
from registry.hub_models import BASE_MODEL_FILES, HubSourceError, fetch_snapshot
from tests.env import environment
from tests.hub_double import HubDouble

TOKEN = "hf_hub_models_token"


@pytest.fixture
def hub_repo(tmp_path):
    with HubDouble(tmp_path / "hub", token=TOKEN) as hub, environment(
            HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE=None):
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.create_repo("acme/m")
        api.upload_file(path_or_fileobj=b"weights", path_in_repo="model.bin", repo_id="acme/m")
        sha = api.upload_file(path_or_fileobj=b'{"model_type": "llama"}', path_in_repo="config.json",
                              repo_id="acme/m").oid
        api.upload_file(path_or_fileobj=b"later", path_in_repo="extra.json", repo_id="acme/m")
        yield hub, sha


def test_a_base_is_fetched_at_its_commit_then_served_offline_and_checked(hub_repo, tmp_path):
    hub, sha = hub_repo
    store = LocalArtifactStore(tmp_path / "artifacts")
    folder = store.base_dir("hf://acme/m", sha)
    # Only the model files at that commit: not main's later extra.json, nor the .bin copy of the weights.
    assert folder.name == sha and sorted(p.name for p in folder.iterdir()) == ["config.json"]
    with environment(HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9"):  # nothing listens there
        assert fetch_snapshot(parse_pinned(f"acme/m@{sha}"), BASE_MODEL_FILES) == folder
        with pytest.raises(HubSourceError, match="incomplete in the cache"):  # all files were asked, not all cached
            fetch_snapshot(parse_pinned(f"acme/m@{sha}"))
        with pytest.raises(HubSourceError, match="not in the cache .* HF_HUB_OFFLINE is set"):
            fetch_snapshot(parse_pinned(f"acme/other@{sha}"))
    blob = (folder / "config.json").resolve()
    blob.write_bytes(b'{"model_type": "gpt2"}')
    from registry.hub_models import verify_cached_snapshot

    with pytest.raises(ArtifactIntegrityError, match="config.json no longer matches"):
        verify_cached_snapshot(folder)


def test_a_moving_revision_is_refused_before_any_download(hub_repo, tmp_path):
    with pytest.raises(ValueError, match="branch or tag"):
        LocalArtifactStore(tmp_path / "artifacts").base_dir("hf://acme/m", "main")
    assert not (tmp_path / "cache").exists()
