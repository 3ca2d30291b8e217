"""Reading and writing prompt/completion data, with errors a person can act on.

:func:`load_pairs` accepts exactly three kinds of source, chosen by what the path is:

* a ``.jsonl`` file (or ``.json`` holding JSON lines, or one JSON array of objects): one object per row;
* a ``.parquet`` file;
* a folder written by ``datasets.Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``; name the split
  as ``FOLDER@SPLIT`` when the folder holds more than one).

It returns every column as found — extra columns and wrong types included — because judging the data is
the validation suite's job, not the reader's. Anything that stops the file being read at all (missing,
unsupported suffix, not UTF-8, a bad JSON line, a lone surrogate escape, a broken parquet file, zero rows)
raises :class:`DataFileError` naming the file, the problem and the broken rule.

:func:`write_jsonl` (from :mod:`lifecycle.data`) writes the project's own data files: canonical JSON lines,
so a file's sha256 equals :func:`lifecycle.data.fingerprint` of its rows, written atomically.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from lifecycle.data import Pair

if TYPE_CHECKING:  # pandas costs ~0.4 s to import: only the functions that read tables load it
    import pandas

JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
PAIR_COLUMNS = ("prompt", "completion")
_LINE_END = re.compile(r"\r\n|\r|\n")
# A JSON escape of a UTF-16 surrogate: only lines holding one can decode to a lone surrogate (fast path).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB]")


class DataFileError(ValueError):
    """The data could not be read at all. The message names the file and what is wrong; ``rule`` names the
    part of the data contract that was broken (``file_exists``, ``file_type``, ``utf8_text``, ``json_syntax``,
    ``json_objects``, ``valid_unicode``, ``parquet_format``, ``dataset_folder``, ``min_rows``), so a rejection
    can be reported, audited and tested by the same rule names as the Great Expectations suite's."""

    def __init__(self, message: str, rule: str = "readable_file") -> None:
        super().__init__(message)
        self.rule = rule


def load_pairs(source: str | Path) -> pandas.DataFrame:
    """Load a data file or ``save_to_disk`` folder into a DataFrame, keeping every column as found."""
    path, split = _split_spec(source)
    if path.is_dir():
        frame = _read_saved_dataset(path, split)
    elif not path.exists():
        raise DataFileError(f"{path}: no such file or folder", "file_exists")
    elif split is not None:
        raise DataFileError(f"{source}: '@{split}' names a split, but only a save_to_disk folder has splits",
                            "file_type")
    elif path.suffix.lower() in JSON_SUFFIXES:
        frame = _read_json_lines(path)
    elif path.suffix.lower() in PARQUET_SUFFIXES:
        frame = _read_parquet(path)
    else:
        raise DataFileError(f"{path}: unsupported file type '{path.suffix or '(none)'}'; expected "
                            f"{', '.join(JSON_SUFFIXES + PARQUET_SUFFIXES)} or a datasets save_to_disk folder",
                            "file_type")
    if len(frame) == 0:
        raise DataFileError(f"{path}: the file holds no rows", "min_rows")
    return frame


def read_jsonl(path: str | Path) -> list[Pair]:
    """Read a pairs file (any format :func:`load_pairs` takes). Extra columns are ignored."""
    frame = load_pairs(path)
    missing = [c for c in PAIR_COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns))
        raise DataFileError(f"{path}: missing column(s) {', '.join(missing)}; found {found}", "required_column")
    pairs: list[Pair] = []
    for row, (prompt, completion) in enumerate(zip(frame["prompt"], frame["completion"], strict=True), start=1):
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise DataFileError(f"{path}: row {row}: prompt and completion must both be text, got "
                                f"{type(prompt).__name__} and {type(completion).__name__}", "text_type")
        pairs.append(Pair(prompt=prompt, completion=completion))
    return pairs


def _split_spec(source: str | Path) -> tuple[Path, str | None]:
    """``FOLDER@SPLIT`` -> (FOLDER, SPLIT) when FOLDER is a folder; any other path is taken as is."""
    text = str(source)
    if "@" in text and not Path(text).exists():
        folder, _, split = text.rpartition("@")
        if folder and split and Path(folder).is_dir():
            return Path(folder), split
    return Path(text), None


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:  # a permission, or a file that vanished between the checks and the read
        raise DataFileError(f"{path}: cannot be read ({err.strerror or err})", "file_exists") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataFileError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); "
                            "re-save the file as UTF-8", "utf8_text") from None
    return text.removeprefix("\ufeff")  # a byte-order mark some editors add is not content


def _read_json_lines(path: Path) -> pandas.DataFrame:
    import pandas

    text = _read_text(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        rows = _json_array(path, text)
    else:
        # Lines end at \n, \r\n or \r only. str.splitlines() would also split at U+2028, U+0085 and other
        # Unicode line breaks, which JSON allows unescaped inside a string: a valid row would be cut in two.
        rows = [_json_object(path, number, line)
                for number, line in enumerate(_LINE_END.split(text), start=1) if line.strip()]
    # DataFrame(rows), not from_records: thirty empty objects are thirty rows without columns, not zero rows.
    return pandas.DataFrame(rows) if rows else pandas.DataFrame()


def _json_object(path: Path, number: int, line: str) -> dict[str, object]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFileError(f"{path}: line {number} is not valid JSON ({err.msg}, column {err.colno})",
                            "json_syntax") from None
    if not isinstance(value, dict):
        raise DataFileError(f"{path}: line {number} is a JSON {_json_kind(value)}, expected an object "
                            'such as {"prompt": "...", "completion": "..."}', "json_objects")
    if _SURROGATE_ESCAPE.search(line):
        _check_unicode(path, f"line {number}", value)
    return value


def _check_unicode(path: Path, where: str, value: object) -> None:
    """Refuse a lone surrogate (JSON ``"\\ud800"`` decodes to one): it is not text, cannot be written back as
    UTF-8, and would crash the suite's hashing and the data snapshot. Surrogate pairs (emoji) are fine."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataFileError(f"{path}: {where} holds invalid Unicode: a lone surrogate "
                            f"{err.object[err.start:err.end]!a} (an escape such as \\ud800 without its pair)",
                            "valid_unicode") from None


def _json_array(path: Path, text: str) -> list[dict[str, object]]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFileError(f"{path}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno})",
                            "json_syntax") from None
    for index, value in enumerate(values, start=1):
        if not isinstance(value, dict):
            raise DataFileError(f"{path}: item {index} of the array is a JSON {_json_kind(value)}, expected an object",
                                "json_objects")
    if _SURROGATE_ESCAPE.search(text):
        for index, value in enumerate(values, start=1):
            _check_unicode(path, f"item {index} of the array", value)
    return values


def _json_kind(value: object) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _read_parquet(path: Path) -> pandas.DataFrame:
    import pandas
    import pyarrow

    try:
        return pandas.read_parquet(path)
    except (pyarrow.ArrowException, OSError, ValueError) as err:
        raise DataFileError(f"{path}: not a readable parquet file ({_first_line(err)})", "parquet_format") from None


def _read_saved_dataset(path: Path, split: str | None) -> pandas.DataFrame:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataFileError(f"{path}: a folder, but not one written by datasets save_to_disk "
                            f"({_first_line(err)})", "dataset_folder") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if split is None and len(names) == 1:
            split = names[0]
        if split not in loaded:
            wanted = f"no split '{split}'" if split else "several splits"
            raise DataFileError(f"{path}: {wanted}; it holds {', '.join(names)} — name one as {path}@SPLIT",
                                "dataset_folder")
        loaded = loaded[split]
    elif split is not None:
        raise DataFileError(f"{path}: holds a single dataset without splits; drop '@{split}'", "dataset_folder")
    return loaded.to_pandas()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
