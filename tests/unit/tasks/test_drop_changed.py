"""A labelled drop rewritten between its validation and the training-data step is refused: what is trained on is
always what was checked (an export rewriting the file meanwhile could bring golden-set prompts or personal data)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from data_checks.validation import ValidationReport
from lifecycle.data import Pair, write_jsonl


def test_a_drop_changed_after_validation_is_refused_and_folders_are_hashed_too(tmp_path, monkeypatch):
    import tasks.data
    import tasks.events
    from registry.artifacts import LocalArtifactStore
    from registry.service import Registry
    from registry.store import RegistryStore
    from tasks.data import DataRejected, assemble_training_data, content_digest

    drop = write_jsonl(tmp_path / "drop.jsonl", [Pair(prompt="where is my card", completion="card_arrival")])
    validated = ValidationReport(success=True, rows=1, content_sha256=content_digest(str(drop)))
    write_jsonl(drop, [Pair(prompt="where is my card", completion="card_arrival"),
                       Pair(prompt="what is 2 + 2", completion="card_arrival")])  # rewritten meanwhile
    reg = Registry(RegistryStore.open(f"sqlite:///{tmp_path / 'r.db'}"), LocalArtifactStore(tmp_path / "a"), "m")
    emitted = []
    monkeypatch.setattr(tasks.data, "open_registry", lambda: contextlib.nullcontext(reg))
    monkeypatch.setattr(tasks.events, "emit_event", lambda event, resource, payload: emitted.append(event))
    plan = SimpleNamespace(data_source=str(drop), config=SimpleNamespace(model="m", actor="retrain-flow"),
                           params=SimpleNamespace(reason="drift"))
    try:
        with pytest.raises(DataRejected, match="changed after it was validated"):
            assemble_training_data.fn(plan, validated)
        # Refused like a drop that broke a rule: audited and announced (the monitor counts it as a retrain done).
        assert emitted == ["slm.data.rejected"]
        event = reg.store.last_event(["slm.data.rejected"], "m")
        assert event.payload["failed_rules"] == ["unchanged_since_validated:-:None"]
    finally:
        reg.close()

    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "data.arrow").write_bytes(b"rows")
    before = content_digest(f"{folder}@train")
    assert before == content_digest(str(folder)) and before is not None
    (folder / "data.arrow").write_bytes(b"other rows")
    assert content_digest(str(folder)) != before
    assert content_digest(str(tmp_path / "missing.jsonl")) is None


def test_rows_of_the_drop_already_in_the_champions_data_are_not_replayed_on_top_of_it(tmp_path, monkeypatch):
    """The champion learnt from an earlier drop; the same rows come again (a cumulative export), one relabelled:
    replayed from its training data as well, they would be weighed twice, the relabelled one under both labels.
    Their prompts leave the pool, and the snapshot says how many rows went."""
    import tasks.data
    from registry.artifacts import LocalArtifactStore
    from registry.service import Registry
    from registry.store import RegistryStore
    from tasks.data import assemble_training_data

    old = [Pair(prompt=f"old question {k}", completion="card_arrival") for k in range(30)]
    again = [Pair(prompt=f"drifted question {k}", completion="top_up_failed") for k in range(10)]
    reg = Registry(RegistryStore.open(f"sqlite:///{tmp_path / 'r.db'}"), LocalArtifactStore(tmp_path / "a"), "m")
    try:
        relabelled = Pair(prompt="drifted question 0", completion="card_arrival")  # the drop says top_up_failed
        train = reg.snapshot_dataset("train", old + again + [relabelled], "v1 train")
        drop = write_jsonl(tmp_path / "drop.jsonl", again + [Pair(prompt="new one", completion="top_up_failed")])
        monkeypatch.setattr(tasks.data, "open_registry", lambda: contextlib.nullcontext(reg))
        plan = SimpleNamespace(data_source=str(drop), golden={}, config=SimpleNamespace(replay_rows=100),
                               task=SimpleNamespace(seed=0),
                               champion=SimpleNamespace(ref="m:v1", lineage=SimpleNamespace(datasets=[train])))
        data = assemble_training_data.fn(plan, None)
    finally:
        reg.close()
    keys = [(p.prompt, p.completion) for p in data.pairs]
    assert len(keys) == len(set(keys)) == 41  # the drop's 11 and the pool's 30 others, each once
    assert ("drifted question 0", "card_arrival") not in keys  # nor a prompt under the label the drop replaced
    mixed = next(d for d in data.datasets if d.name == "train")
    assert "30 replayed rows" in mixed.source and "11 rows also in the drop left out of the pool" in mixed.source


def test_a_drop_rewritten_while_it_is_validated_is_rejected(tmp_path, monkeypatch):
    """The hash is taken before the checks read the file and again after: a file an export is still writing fails
    validation (audited like any broken rule) rather than passing on content nobody checked."""
    import tasks.data
    from tasks.data import DataRejected, validate_data

    drop = write_jsonl(tmp_path / "drop.jsonl", [Pair(prompt="where is my card", completion="card_arrival")])

    def check_file(path, task, golden, data_docs_dir=None):
        write_jsonl(drop, [Pair(prompt="what is 2 + 2", completion="card_arrival")])  # written meanwhile
        return ValidationReport(success=True, rows=1)

    announced = []
    monkeypatch.setattr(tasks.data, "check_file", check_file)
    monkeypatch.setattr(tasks.data, "create_markdown_artifact", lambda **kwargs: None)
    monkeypatch.setattr(tasks.data, "open_registry", lambda: contextlib.nullcontext(None))
    monkeypatch.setattr(tasks.data, "announce", lambda registry, event, model, payload, **kw: announced.append(
        payload["failed_rules"]))
    plan = SimpleNamespace(data_source=str(drop), golden={}, task=None, run_dir=tmp_path,
                           config=SimpleNamespace(model="m", actor="a"), params=SimpleNamespace(reason="test"))
    with pytest.raises(DataRejected, match="changed while it was being validated"):
        validate_data.fn(plan)
    assert announced == [["unchanged_while_validated:-:None"]]
