"""Hub repos pinned by commit (lifecycle.hub_refs) and a task whose data is a Hub dataset (lifecycle.task)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lifecycle.hub_refs import hub_cache_dir, parse_pinned, snapshot_folder
from lifecycle.task import load_task
from tests.env import environment

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(("text", "uri"), [(f"HuggingFaceTB/SmolLM2-135M@{SHA}", "hf://HuggingFaceTB/SmolLM2-135M"),
                                           (f"hf://acme/m@{SHA}", "hf://acme/m")])
def test_a_full_commit_sha_is_accepted(text, uri):
    ref = parse_pinned(text)
    assert ref.uri == uri and ref.revision == SHA and str(ref) == f"{uri.removeprefix('hf://')}@{SHA}"
    assert parse_pinned(f"acme/d@{SHA}", "dataset").uri == "hf://datasets/acme/d"


@pytest.mark.parametrize(("text", "message"), [
    ("acme/m@main", "branch or tag"), ("acme/m@v1.0", "branch or tag"), ("acme/m@0123abc", "short sha"),
    ("acme/m", "not pinned"), (f"acme@{SHA}", "OWNER/NAME"), (f"acme/m@{SHA.upper()}", "40-hex commit"),
])
def test_anything_but_a_full_commit_sha_is_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_pinned(text)


def test_the_cache_folder_follows_the_clients_rules(tmp_path):
    with environment(HF_HUB_CACHE=None, HUGGINGFACE_HUB_CACHE=None, HF_HOME=str(tmp_path / "home"),
                     XDG_CACHE_HOME=None):
        assert hub_cache_dir() == tmp_path / "home" / "hub"
    with environment(HF_HUB_CACHE=str(tmp_path / "c"), HF_HOME=str(tmp_path / "home")):
        assert hub_cache_dir() == tmp_path / "c"
        ref = parse_pinned(f"acme/d@{SHA}", "dataset")
        assert snapshot_folder(ref) == tmp_path / "c" / "datasets--acme--d" / "snapshots" / SHA


def _task(tmp_path: Path, **fields) -> Path:
    raw = {"name": "t", "drift_keywords": ["virtual"], "golden_before_size": 20, "golden_drifted_size": 20, **fields}
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _snapshot(folder: Path, header: str = "text,category", categories: list[str] | None = None) -> Path:
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        (folder / f"{split}.csv").write_text(f"{header}\nhello,card_arrival\nvirtual?,getting_virtual_card\n")
    if categories is not None:
        (folder / "categories.json").write_text(json.dumps(categories))
    return folder


def test_a_hub_task_reads_the_cached_snapshot_and_derives_its_labels(tmp_path):
    with environment(HF_HUB_CACHE=str(tmp_path / "cache")):
        path = _task(tmp_path, hub_dataset=f"acme/d@{SHA}")
        with pytest.raises(FileNotFoundError, match="is not downloaded"):
            load_task(path, tmp_path)
        _snapshot(snapshot_folder(parse_pinned(f"acme/d@{SHA}", "dataset")))
        spec = load_task(path, tmp_path)
    assert spec.labels == ["card_arrival", "getting_virtual_card"] and spec.drifted_labels == ["getting_virtual_card"]
    assert spec.data_source == f"hf://datasets/acme/d@{SHA}"


def test_a_hub_task_with_the_wrong_layout_or_both_sources_is_refused(tmp_path):
    path = _task(tmp_path, hub_dataset=f"acme/d@{SHA}")
    with pytest.raises(ValueError, match="no column 'category'"):
        load_task(path, tmp_path, hub_snapshot=_snapshot(tmp_path / "a", header="text,label"))
    bare = tmp_path / "b"
    bare.mkdir()
    (bare / "data.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=r"lacks train.csv, test.csv at its root \(it has: data.parquet\)"):
        load_task(path, tmp_path, hub_snapshot=bare)
    with pytest.raises(ValueError, match="both data_dir and hub_dataset"):
        load_task(_task(tmp_path, hub_dataset=f"acme/d@{SHA}", data_dir="x"), tmp_path)
    with pytest.raises(ValueError, match="branch or tag"):
        load_task(_task(tmp_path, hub_dataset="acme/d@main"), tmp_path)
    with pytest.raises(ValueError, match="set data_dir"):
        load_task(_task(tmp_path), tmp_path)
