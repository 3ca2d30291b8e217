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
    from tasks.data import DataRejected, assemble_training_data, content_digest

    drop = write_jsonl(tmp_path / "drop.jsonl", [Pair(prompt="where is my card", completion="card_arrival")])
    validated = ValidationReport(success=True, rows=1, content_sha256=content_digest(str(drop)))
    write_jsonl(drop, [Pair(prompt="where is my card", completion="card_arrival"),
                       Pair(prompt="what is 2 + 2", completion="card_arrival")])  # rewritten meanwhile
    monkeypatch.setattr(tasks.data, "open_registry", lambda: contextlib.nullcontext(None))
    plan = SimpleNamespace(data_source=str(drop))
    with pytest.raises(DataRejected, match="changed after it was validated"):
        assemble_training_data.fn(plan, validated)

    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "data.arrow").write_bytes(b"rows")
    before = content_digest(f"{folder}@train")
    assert before == content_digest(str(folder)) and before is not None
    (folder / "data.arrow").write_bytes(b"other rows")
    assert content_digest(str(folder)) != before
    assert content_digest(str(tmp_path / "missing.jsonl")) is None
