import hashlib

import pytest

from lifecycle.files import hash_tree
from registry.artifacts import ArtifactIntegrityError, LocalArtifactStore


@pytest.fixture
def staged(tmp_path):
    folder = tmp_path / "staged"
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    return folder


def test_publish_records_hashes_and_verifies_on_load(tmp_path, staged):
    store = LocalArtifactStore(tmp_path / "artifacts")
    uri, files = store.publish_version("router", 3, staged)
    assert uri == "local://models/router/v3"
    assert files == hash_tree(staged) and set(files) == {"adapter_config.json", "sub/weights.bin"}
    folder = store.version_dir("router", 3, files)
    assert (folder / "sub" / "weights.bin").read_bytes() == b"\x00\x01"
    (folder / "sub" / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(ArtifactIntegrityError, match="sub/weights.bin has sha256"):
        store.version_dir("router", 3, files)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(ArtifactIntegrityError, match="adapter_config.json is missing"):
        store.version_dir("router", 3, files)


def test_a_published_version_is_never_overwritten(tmp_path, staged):
    store = LocalArtifactStore(tmp_path / "a")
    store.publish_version("router", 1, staged)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        store.publish_version("router", 1, staged)
    store.unpublish_version("router", 1)
    store.publish_version("router", 1, staged)


def test_base_models_are_content_addressed(tmp_path, staged):
    store = LocalArtifactStore(tmp_path / "a")
    uri1, rev1 = store.put_base("tiny", staged)
    uri2, rev2 = store.put_base("tiny", staged)
    assert (uri1, rev1) == (uri2, rev2) and uri1.startswith("local://base/tiny-")
    assert store.base_dir(uri1).is_dir()
    with pytest.raises(ValueError, match="not a local base"):
        store.base_dir("hf://x")


def test_dataset_snapshots_are_content_addressed_and_checked(tmp_path):
    store = LocalArtifactStore(tmp_path / "a")
    content = b'{"completion":"a","prompt":"b"}\n'
    sha = hashlib.sha256(content).hexdigest()
    uri = store.put_dataset(sha, content)
    assert store.dataset_path(uri).read_bytes() == content
    with pytest.raises(ValueError, match="does not match"):
        store.put_dataset("0" * 64, content)
    store.dataset_path(uri).write_bytes(b"changed")
    with pytest.raises(ArtifactIntegrityError, match="no longer matches"):
        store.dataset_path(uri)
