"""Bad training data is refused by name, and leaves nothing behind but its audit record.

Each row of the table is a good labelled drop with one defect. It goes through the bodies of the retrain
flow's own tasks (``plan-retrain`` then ``validate-data``: the same registry, Data Docs, artifact and event),
called without Prefect's task engine, which would add about a second a case; a few rows go through the whole
``retrain`` flow as well. Every rejection must:

* raise :class:`tasks.data.DataRejected` whose message names the broken rule;
* train nothing and publish nothing: no new version, no new artifact folder or data snapshot, no adapter;
* append exactly one ``slm.data.rejected`` audit event naming the data and the rule, chain intact.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lifecycle.config import RetrainParams
from tests.reliability.helpers import MODEL, banking_rows, write_golden_sets

pytestmark = [pytest.mark.prefect,
              # Tasks called outside a flow run cannot ship their logs to the API; that is expected here.
              pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning")]

GOOD = [p.model_dump() for p in banking_rows(("top_up_failed", "getting_virtual_card", "card_arrival"), 20, "train")]
GOLDEN_PROMPT = banking_rows(("card_arrival",), 1, "test")[0].prompt


def jsonl(rows: list[object]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def good_with(index: int, **fields: object) -> bytes:
    """The good drop with row ``index`` changed."""
    rows = [dict(r) for r in GOOD]
    rows[index].update(fields)
    return jsonl(rows)


def renamed(old: str, new: str) -> bytes:
    return jsonl([{(new if k == old else k): v for k, v in r.items()} for r in GOOD])


def parquet_bytes(frame_columns: dict[str, list[object]]) -> bytes:
    import io

    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame(frame_columns).to_parquet(buffer)
    return buffer.getvalue()


# (case id, file name, content: bytes or a function of the folder that writes and returns the path, rule)
Content = bytes | Callable[[Path], Path]
CASES: list[tuple[str, str, Content, str]] = [
    ("missing_prompt_column", "drop.jsonl", renamed("prompt", "text"), "required_column"),
    ("missing_completion_column", "drop.jsonl", renamed("completion", "label"), "required_column"),
    ("objects_without_fields", "drop.jsonl", jsonl([{}] * 30), "required_column"),
    ("extra_column", "drop.jsonl", jsonl([{**r, "template": "### User: {prompt}"} for r in GOOD]),
     "pair_columns_only"),
    ("empty_prompt", "drop.jsonl", good_with(3, prompt=""), "not_blank"),
    ("whitespace_only_prompt", "drop.jsonl", good_with(3, prompt=" \t  "), "not_blank"),
    ("invisible_prompt", "drop.jsonl", good_with(3, prompt="\u200b\u200b\ufeff"), "not_blank"),
    ("empty_completion", "drop.jsonl", good_with(4, completion=""), "not_blank"),
    ("null_prompt", "drop.jsonl", good_with(5, prompt=None), "not_null"),
    ("nan_prompt", "drop.jsonl", good_with(5, prompt=float("nan")), "not_null"),
    ("numeric_prompt", "drop.jsonl", good_with(6, prompt=12345), "text_type"),
    ("boolean_completion", "drop.jsonl", good_with(6, completion=True), "text_type"),
    ("mixed_type_column", "drop.jsonl",
     jsonl([{**r, "prompt": i} if i % 2 else r for i, r in enumerate(GOOD)]), "text_type"),
    ("nested_object_prompt", "drop.jsonl", good_with(7, prompt={"text": "where is my card"}), "text_type"),
    ("list_completion", "drop.jsonl", good_with(7, completion=["card_arrival"]), "text_type"),
    ("exact_duplicate", "drop.jsonl", jsonl(GOOD + GOOD[:1]), "duplicate_pairs"),
    ("normalized_duplicate", "drop.jsonl", jsonl(GOOD + [{**GOOD[0], "prompt": GOOD[0]["prompt"].upper() + "!!"}]),
     "duplicate_pairs"),
    ("contradictory_labels", "drop.jsonl", jsonl(GOOD + [{**GOOD[0], "prompt": GOOD[0]["prompt"] + "?",
                                                         "completion": "getting_virtual_card"
                                                         if GOOD[0]["completion"] != "getting_virtual_card"
                                                         else "card_arrival"}]), "conflicting_labels"),
    ("pii_email", "drop.jsonl", good_with(8, prompt="my top up failed, write to jane.doe@example.co.uk"),
     "pii_email"),
    ("pii_phone", "drop.jsonl", good_with(8, prompt="top up failed, call me on +44 20 7946 0958"), "pii_phone"),
    ("pii_card_number", "drop.jsonl", good_with(8, prompt="my card 4111-1111-1111-1111 never arrived"),
     "pii_card_number"),
    ("label_outside_task", "drop.jsonl", good_with(9, completion="crypto_wallet"), "completion_allowed"),
    ("label_wrong_case", "drop.jsonl", good_with(9, completion="Card_Arrival"), "completion_allowed"),
    ("benchmark_overlap", "drop.jsonl", good_with(10, prompt="  " + GOLDEN_PROMPT.upper() + " "),
     "benchmark_overlap"),
    ("huge_row", "drop.jsonl", good_with(11, prompt="why " * 25_000), "prompt_length"),
    ("too_few_rows", "drop.jsonl", jsonl(GOOD[:5]), "min_rows"),
    ("zero_rows", "drop.jsonl", b"", "min_rows"),
    ("blank_lines_only", "drop.jsonl", b"\n \n\t\n", "min_rows"),
    ("null_byte_in_prompt", "drop.jsonl", good_with(12, prompt="where is my card\u0000"), "no_control_chars"),
    ("terminal_escape_in_prompt", "drop.jsonl", good_with(12, prompt="\u001b[31mmy top up failed"),
     "no_control_chars"),
    ("lone_surrogate", "drop.jsonl",
     jsonl(GOOD[:13]).rstrip(b"\n") + b'\n{"prompt": "top up \\ud800 failed", "completion": "top_up_failed"}\n'
     + jsonl(GOOD[13:]), "valid_unicode"),
    ("truncated_file", "drop.jsonl", jsonl(GOOD)[:-25], "json_syntax"),
    ("raw_null_bytes_in_file", "drop.jsonl", jsonl(GOOD[:20]) + b"\x00\x00\x00\n" + jsonl(GOOD[20:]), "json_syntax"),
    ("bom_in_the_middle", "drop.jsonl",
     b"\xef\xbb\xbf" + jsonl(GOOD[:20]) + b"\xef\xbb\xbf" + jsonl(GOOD[20:]), "json_syntax"),
    ("latin1_bytes", "drop.jsonl", jsonl(GOOD).replace(b"}\n", b', "note": "caf\xe9"}\n', 1), "utf8_text"),
    ("utf16_file", "drop.jsonl", jsonl(GOOD).decode("utf-8").encode("utf-16"), "utf8_text"),
    ("binary_garbage", "drop.jsonl", bytes(range(256)) * 4, "utf8_text"),
    ("csv_extension", "drop.csv", b"prompt,completion\nwhere is my card,card_arrival\n", "file_type"),
    ("jsonl_as_txt", "drop.txt", jsonl(GOOD), "file_type"),
    ("json_arrays_not_objects", "drop.jsonl", jsonl([[r["prompt"], r["completion"]] for r in GOOD]), "json_objects"),
    ("json_strings_not_objects", "drop.jsonl", jsonl([r["prompt"] for r in GOOD]), "json_objects"),
    ("json_array_of_numbers", "drop.json", json.dumps([1, 2, 3]).encode(), "json_objects"),
    ("broken_parquet", "drop.parquet", b"PAR1 not really parquet PAR1", "parquet_format"),
    ("parquet_numeric_completion", "drop.parquet",
     parquet_bytes({"prompt": [r["prompt"] for r in GOOD], "completion": list(range(len(GOOD)))}), "text_type"),
    ("missing_file", "drop.jsonl", lambda folder: folder / "never-written.jsonl", "file_exists"),
    ("folder_not_a_dataset", "drop", lambda folder: (folder / "drop").mkdir() or folder / "drop", "dataset_folder"),
]


@pytest.fixture(scope="module")
def project(weightless_champion, prefect_harness, write_tiny_configs, tmp_path_factory) -> Path:
    """Tiny configs for MODEL, the golden sets, and a champion: all plan_retrain needs."""
    write_golden_sets(weightless_champion)
    configs = write_tiny_configs(tmp_path_factory.mktemp("configs"), model=MODEL)
    return configs / "retrain.yaml"


def write_case(folder: Path, name: str, content: Content) -> Path:
    if callable(content):
        return content(folder)
    path = folder / name
    path.write_bytes(content)
    return path


def snapshot() -> dict[str, object]:
    """Everything a rejected drop must leave as it was, plus the audit chain's length."""
    from lifecycle.settings import get_settings
    from registry.service import open_registry

    home = get_settings().home
    with open_registry() as reg:
        versions = [v.ref for v in reg.store.list_versions(MODEL)]
        audit = len(reg.store.audit_events())
    artifacts = sorted(str(p.relative_to(home)) for p in (home / "artifacts").rglob("*"))
    adapters = sorted(str(p) for p in (home / "runs").glob("*/adapter"))
    return {"versions": versions, "artifacts": artifacts, "adapters": adapters, "audit": audit}


def assert_refused_and_recorded(before: dict[str, object], data: Path, rule: str) -> None:
    from registry.service import open_registry

    after = snapshot()
    assert after["versions"] == before["versions"], "a rejected drop registered a version"
    assert after["artifacts"] == before["artifacts"], "a rejected drop left artifacts behind"
    assert after["adapters"] == [], "a rejected drop was trained"
    assert after["audit"] == before["audit"] + 1, "a rejection writes exactly one audit event"
    with open_registry() as reg:
        event = reg.store.audit_events()[-1]
        assert reg.store.verify_audit().ok
    assert event.action == "slm.data.rejected" and event.subject == MODEL
    assert event.payload["data"] == str(data)
    assert any(r.startswith(f"{rule}:") for r in event.payload["failed_rules"]), event.payload


def test_the_good_drop_passes(project, tmp_path):
    """The control: without its defect each case's drop is accepted, so each refusal is the defect's doing."""
    from tasks.data import validate_data
    from tasks.plan import plan_retrain

    data = write_case(tmp_path, "good.jsonl", jsonl(GOOD))
    plan = plan_retrain.fn(RetrainParams(config=str(project), data=str(data)), run_id="good")
    report = validate_data.fn(plan)
    assert report.success and report.rows == len(GOOD), report.summary_markdown()


@pytest.mark.parametrize(("name", "content", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_drop_is_refused_by_the_named_rule(project, tmp_path, name, content, rule):
    from tasks.data import DataRejected, validate_data
    from tasks.plan import plan_retrain

    data = write_case(tmp_path, name, content)
    before = snapshot()
    plan = plan_retrain.fn(RetrainParams(config=str(project), data=str(data)), run_id=f"bad-{tmp_path.name}")
    with pytest.raises(DataRejected) as refused:
        validate_data.fn(plan)
    message = str(refused.value)
    assert f"{rule} on " in message, message
    assert "Traceback" not in message
    assert_refused_and_recorded(before, data, rule)


FLOW_CASES = ["pii_email", "lone_surrogate", "latin1_bytes", "benchmark_overlap", "null_byte_in_prompt"]


@pytest.mark.parametrize("case", FLOW_CASES)
def test_the_retrain_flow_refuses_before_training(project, tmp_path, case):
    """The whole flow, as `slm retrain` and the drift automation start it: it fails at validation."""
    from flows.retrain import retrain
    from tasks.data import DataRejected

    _id, name, content, rule = next(c for c in CASES if c[0] == case)
    data = write_case(tmp_path, name, content)
    before = snapshot()
    with pytest.raises(DataRejected, match=rf"\b{rule} on "):
        retrain(RetrainParams(config=str(project), data=str(data), reason="reliability"))
    assert_refused_and_recorded(before, data, rule)


def test_the_table_is_large_and_names_many_rules():
    """Issue #9 asks for at least 25 bad datasets; the rules they break should be most of the contract."""
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)
    assert len({c[3] for c in CASES}) >= 20
