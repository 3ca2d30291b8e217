"""Readers: every supported source loads as found; every unreadable one is a DataFileError naming the problem."""

import hashlib

import pandas as pd
import pytest

from data_checks.readers import DataFileError, load_pairs, read_jsonl
from lifecycle.data import Pair, fingerprint, write_jsonl

PAIRS = [Pair(prompt="Where is my card?", completion="card_arrival"),
         Pair(prompt="Ünïcode ok — £20", completion="exchange_rate")]


def test_write_then_read_round_trip_and_canonical_bytes(tmp_path):
    path = write_jsonl(tmp_path / "sub" / "pairs.jsonl", PAIRS)
    assert read_jsonl(path) == PAIRS
    assert path.read_text(encoding="utf-8").splitlines()[0] == \
        '{"completion":"card_arrival","prompt":"Where is my card?"}'
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fingerprint(PAIRS)
    assert [p.name for p in path.parent.iterdir()] == ["pairs.jsonl"]  # no temp file left behind


def test_write_replaces_changed_content_and_keeps_identical(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    stamp = path.stat().st_mtime_ns
    write_jsonl(path, PAIRS)
    assert path.stat().st_mtime_ns == stamp
    write_jsonl(path, PAIRS[:1])
    assert read_jsonl(path) == PAIRS[:1]


def test_load_pairs_keeps_extra_columns_and_types(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text('{"prompt": 12, "completion": "x", "source": "crm"}\n\n{"prompt": "hi", "completion": null}\n')
    frame = load_pairs(path)
    assert list(frame.columns) == ["prompt", "completion", "source"]
    assert frame["prompt"].tolist() == [12, "hi"]
    with pytest.raises(DataFileError, match="row 1: prompt and completion must both be text"):
        read_jsonl(path)


def test_json_array_and_utf8_bom_are_accepted(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text('\ufeff[{"prompt": "a b", "completion": "c"}]', encoding="utf-8")
    assert read_jsonl(path) == [Pair(prompt="a b", completion="c")]


def test_parquet_round_trip(tmp_path):
    path = tmp_path / "pairs.parquet"
    pd.DataFrame([p.model_dump() for p in PAIRS]).to_parquet(path)
    assert read_jsonl(path) == PAIRS


def test_save_to_disk_folder_and_split(tmp_path):
    import datasets

    rows = {"prompt": [p.prompt for p in PAIRS], "completion": [p.completion for p in PAIRS]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "one"))
    assert read_jsonl(tmp_path / "one") == PAIRS
    both = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                                 "extra": datasets.Dataset.from_dict({k: v[:1] for k, v in rows.items()})})
    both.save_to_disk(str(tmp_path / "dict"))
    assert read_jsonl(f"{tmp_path / 'dict'}@extra") == PAIRS[:1]
    with pytest.raises(DataFileError, match="several splits; it holds train, extra"):
        load_pairs(tmp_path / "dict")
    with pytest.raises(DataFileError, match="no split 'test'"):
        load_pairs(f"{tmp_path / 'dict'}@test")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.jsonl", b'{"prompt": "a", "completion": "b"}\n{"prompt": "a",\n', "line 2 is not valid JSON"),
    ("list.jsonl", b'{"prompt": "a", "completion": "b"}\n["a", "b"]\n', "line 2 is a JSON array, expected an object"),
    ("empty.jsonl", b"", "holds no rows"),
    ("blank.jsonl", b"\n  \n", "holds no rows"),
    ("latin1.jsonl", '{"prompt": "caf\u00e9", "completion": "b"}\n'.encode("latin-1"), "not UTF-8 text .* line 1"),
    ("broken.parquet", b"PAR1 this is not parquet", "not a readable parquet file"),
    ("pairs.csv", b"prompt,completion\n", "unsupported file type '.csv'"),
    ("array.json", b'[{"prompt": "a"}, 3]', "item 2 of the array is a JSON number"),
])
def test_unreadable_files_raise_a_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=message) as caught:
        load_pairs(path)
    assert str(path) in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_missing_file_empty_parquet_and_non_dataset_folder(tmp_path):
    with pytest.raises(DataFileError, match="no such file"):
        load_pairs(tmp_path / "nope.jsonl")
    pd.DataFrame({"prompt": [], "completion": []}).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DataFileError, match="holds no rows"):
        load_pairs(tmp_path / "empty.parquet")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataFileError, match="not one written by datasets save_to_disk"):
        load_pairs(tmp_path / "folder")


def test_read_jsonl_names_missing_columns(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a", "completion": "b"}\n')
    with pytest.raises(DataFileError, match="missing column\\(s\\) prompt; found text, completion"):
        read_jsonl(path)


def test_unicode_line_breaks_inside_a_string_do_not_split_the_row(tmp_path):
    """JSON allows U+2028, U+2029 and U+0085 unescaped in strings, and write_jsonl writes them raw: a row
    holding one is one row, not two broken halves."""
    pairs = [Pair(prompt="line\u2028sep\u2029para\x85nel", completion="card_arrival")] + PAIRS
    path = write_jsonl(tmp_path / "breaks.jsonl", pairs)
    assert "\u2028".encode() in path.read_bytes()
    assert read_jsonl(path) == pairs
    (tmp_path / "crlf.jsonl").write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert read_jsonl(tmp_path / "crlf.jsonl") == pairs


@pytest.mark.parametrize(("content", "rule"), [
    (b'{"prompt": "top up \\ud800 failed", "completion": "b"}\n', "valid_unicode"),
    (b'{"prompt": "a", "completion": "b"}\n{"prompt": "a",\n', "json_syntax"),
    (b'"just a string"\n', "json_objects"),
    ("caf\u00e9".encode("latin-1"), "utf8_text"),
    (b"", "min_rows"),
])
def test_unreadable_files_name_the_broken_rule(tmp_path, content, rule):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataFileError) as caught:
        load_pairs(path)
    assert caught.value.rule == rule


def test_a_surrogate_pair_is_text_and_loads(tmp_path):
    path = tmp_path / "emoji.jsonl"
    path.write_bytes(b'{"prompt": "card \\ud83d\\ude00 lost", "completion": "lost_or_stolen_card"}\n')
    assert read_jsonl(path)[0].prompt == "card \U0001f600 lost"


def test_empty_objects_are_rows_without_columns_not_an_empty_file(tmp_path):
    path = tmp_path / "empty-objects.jsonl"
    path.write_bytes(b"{}\n{}\n{}\n")
    assert load_pairs(path).shape == (3, 0)
