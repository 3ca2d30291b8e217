"""Tampering is detected: audit rows edited, deleted, inserted or reordered by hand; artifact files changed.

The audit cases change a copy of a real SQLite registry with plain SQL, as someone with the database file
would, then run ``slm audit verify`` on it: it must exit 1 and its first finding must name the first bad row.
The artifact cases change a published version's files and load it the ways the product does: the registry,
the serving loader, the gateway's admin API and the gateway's start.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lifecycle.audit import event_hash
from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, Lineage
from tests.env import environment
from tests.reliability.helpers import MODEL, register_base_version, start_gateway

# --- the audit chain ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audited_db(tmp_path_factory) -> Path:
    """A registry database holding a few dozen real events: registrations, promotions, alias moves, notes."""
    from registry.service import open_registry

    home = tmp_path_factory.mktemp("audited")
    lineage = Lineage(base_model=BaseModelRef(model_id="local://base/x", revision="0" * 64),
                      prompt_format=INTENT_V1.identity)
    with environment(SLM_HOME=str(home), SLM_DATABASE_URL=None), open_registry() as reg:
        for _ in range(3):
            register_base_version(reg, MODEL, lineage, "tamper test")
        reg.store.promote(MODEL, 1, actor="test", reason="first champion")
        reg.store.promote(MODEL, 2, actor="test", reason="second champion")
        reg.store.append_audit(actor="test", action="note", subject=MODEL, payload={"n": 1, "text": "ünïcode"})
        assert len(reg.store.audit_events()) >= 8 and reg.store.verify_audit().ok
    return home / "registry.db"


def rows(db: sqlite3.Connection) -> list[dict]:
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM audit_events ORDER BY seq")]


def rehash(row: dict) -> str:
    """What a forger who knows the algorithm computes (without the head, which lives in another table)."""
    return event_hash(seq=row["seq"], ts=row["ts"], actor=row["actor"], action=row["action"],
                      subject=row["subject"], payload=json.loads(row["payload"]), prev_hash=row["prev_hash"])


def edit(column: str, value: object, seq: int = 3) -> Callable[[sqlite3.Connection], None]:
    return lambda db: db.execute(f"UPDATE audit_events SET {column} = ? WHERE seq = ?", (value, seq))


def swap_content(a: int, b: int) -> Callable[[sqlite3.Connection], None]:
    """Rows a and b exchange everything but their sequence numbers."""
    def apply(db):
        by_seq = {r["seq"]: r for r in rows(db)}
        for target, source in ((a, by_seq[b]), (b, by_seq[a])):
            db.execute("UPDATE audit_events SET ts=?, actor=?, action=?, subject=?, payload=?, prev_hash=?, hash=? "
                       "WHERE seq=?", (source["ts"], source["actor"], source["action"], source["subject"],
                                       source["payload"], source["prev_hash"], source["hash"], target))
    return apply


def swap_seq(a: int, b: int) -> Callable[[sqlite3.Connection], None]:
    def apply(db):
        db.execute("UPDATE audit_events SET seq = -1 WHERE seq = ?", (a,))
        db.execute("UPDATE audit_events SET seq = ? WHERE seq = ?", (a, b))
        db.execute("UPDATE audit_events SET seq = ? WHERE seq = -1", (b,))
    return apply


def forge_after(seq: int) -> dict:
    """A well-formed event that links to ``seq`` (hash computed the product's way)."""
    return {"seq": seq + 1, "ts": "2026-01-01T00:00:00+00:00", "actor": "intruder", "action": "alias.moved",
            "subject": MODEL, "payload": json.dumps({"alias": "champion", "to": 3}), "prev_hash": None, "hash": None}


def insert(db: sqlite3.Connection, row: dict) -> None:
    db.execute("INSERT INTO audit_events (seq, ts, actor, action, subject, payload, prev_hash, hash) "
               "VALUES (:seq, :ts, :actor, :action, :subject, :payload, :prev_hash, :hash)", row)


def append_forged(db):
    last = rows(db)[-1]
    row = forge_after(last["seq"]) | {"prev_hash": last["hash"]}
    insert(db, row | {"hash": rehash(row)})


def insert_forged_in_the_middle(db):
    """Make room after seq 3 (renumbering the rest), then insert a perfectly linked forged event there."""
    db.execute("UPDATE audit_events SET seq = -seq WHERE seq > 3")
    db.execute("UPDATE audit_events SET seq = 1 - seq WHERE seq < 0")
    third = next(r for r in rows(db) if r["seq"] == 3)
    row = forge_after(3) | {"prev_hash": third["hash"]}
    insert(db, row | {"hash": rehash(row)})


def edit_and_rehash(rest: bool) -> Callable[[sqlite3.Connection], None]:
    """Edit seq 3 and recompute its hash (and, with ``rest``, re-link every later event too)."""
    def apply(db):
        prev = None
        for row in rows(db):
            if row["seq"] < 3 or (row["seq"] > 3 and not rest):
                prev = row["hash"] if row["seq"] < 3 else prev
                continue
            if row["seq"] == 3:
                row["actor"] = "someone-else"
            row["prev_hash"] = prev
            row["hash"] = rehash(row)
            prev = row["hash"]
            db.execute("UPDATE audit_events SET actor=?, prev_hash=?, hash=? WHERE seq=?",
                       (row["actor"], row["prev_hash"], row["hash"], row["seq"]))
    return apply


def sql(statement: str) -> Callable[[sqlite3.Connection], None]:
    return lambda db: db.execute(statement)


def truncate_and_rewrite_the_head(keep: int) -> Callable[[sqlite3.Connection], None]:
    """Cut every event after ``keep`` and point the head at the new last one: the chain alone stays intact, but the
    registry's alias moves after it are no longer accounted for."""
    def apply(db):
        last = next(r for r in rows(db) if r["seq"] == keep)
        db.execute("DELETE FROM audit_events WHERE seq > ?", (keep,))
        db.execute("UPDATE audit_head SET count = ?, last_hash = ?", (keep, last["hash"]))
    return apply


# Payloads that Python's json reads but that could never have been written (no canonical JSON to hash): each must
# be reported as an edit, never crash the check.
UNHASHABLE_PAYLOADS = [
    ("payload_nan", '{"k":NaN}'),
    ("payload_infinity", '{"k":-Infinity}'),
    ("payload_overflowing_number", '{"k":1e999}'),
    ("payload_lone_surrogate", '{"k":"\\ud800"}'),
    ("payload_nested_too_deep", '{"k":' + "[" * 100_000 + "]" * 100_000 + "}"),
]


# (case, tampering, what the first finding must say)
AUDIT_CASES: list[tuple[str, Callable[[sqlite3.Connection], None], str]] = [
    ("edit_payload", edit("payload", json.dumps({"reason": "nothing to see"})), "event seq 3 "),
    ("edit_actor", edit("actor", "someone-else", seq=2), "event seq 2 "),
    ("edit_action", edit("action", "note", seq=4), "event seq 4 "),
    ("edit_subject", edit("subject", "other-model", seq=5), "event seq 5 "),
    ("edit_timestamp", edit("ts", "2020-01-01T00:00:00+00:00"), "event seq 3 "),
    ("edit_timestamp_to_a_number", edit("ts", 12345), "event seq 3 "),
    ("edit_hash", edit("hash", "f" * 64, seq=6), "event seq 6 "),
    ("edit_prev_hash", edit("prev_hash", "0" * 64, seq=4), "event seq 4 "),
    ("payload_not_json", edit("payload", "{not json"), "event seq 3 "),
    ("payload_not_an_object", edit("payload", "[1, 2]"), "event seq 3 "),
    ("edit_then_rehash_the_row", edit_and_rehash(rest=False), "event seq 4 does not link"),
    ("edit_then_rehash_the_chain", edit_and_rehash(rest=True), "the head's last hash differs"),
    ("delete_first", sql("DELETE FROM audit_events WHERE seq = 1"), "position 1 has seq 2"),
    ("delete_middle", sql("DELETE FROM audit_events WHERE seq = 4"), "position 4 has seq 5"),
    ("delete_last", sql("DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)"),
     "events but"),
    ("delete_all", sql("DELETE FROM audit_events"), "events but 0 were found"),
    ("delete_the_head", sql("DELETE FROM audit_head"), "chain head is missing"),
    ("append_forged", append_forged, "events but"),
    ("insert_forged_in_the_middle", insert_forged_in_the_middle, "event seq 5 "),
    ("swap_two_rows", swap_content(3, 4), "event seq 3 "),
    ("swap_sequence_numbers", swap_seq(3, 4), "event seq 3 "),
    ("move_row_to_the_end", sql("UPDATE audit_events SET seq = 100 WHERE seq = 2"), "position 2 has seq 3"),
    ("renumber_to_zero", sql("UPDATE audit_events SET seq = 0 WHERE seq = 1"), "position 1 has seq 0"),
    *[(case, edit("payload", payload), "event seq 3 ") for case, payload in UNHASHABLE_PAYLOADS],
    # The log's tail cut after the first promotion (registrations 1-3, its status change 4, its alias move 5).
    ("truncate_and_rewrite_the_head", truncate_and_rewrite_the_head(keep=5), "5 status changes but the log has 4"),
    ("wipe_the_log_and_its_head", lambda db: [db.execute(f"DELETE FROM {t}") for t in ("audit_events", "audit_head")],
     "chain head is missing although the registry holds 3 versions"),
]


def verify_cli(home: Path) -> tuple[int, list[str]]:
    """`slm audit verify` on the registry under ``home``: exit code and its findings (the "  - " lines)."""
    from slm_cli.main import app

    result = CliRunner().invoke(app, ["audit", "verify"], env={"SLM_HOME": str(home), "COLUMNS": "300"})
    findings = [line.strip()[2:] for line in result.output.splitlines() if line.startswith("  - ")]
    return result.exit_code, findings + ([result.output] if not findings else [])


def tampered_copy(audited_db: Path, folder: Path) -> Path:
    home = folder / "home"
    home.mkdir()
    source, target = sqlite3.connect(audited_db), sqlite3.connect(home / "registry.db")
    with target:
        source.backup(target)  # a consistent copy, WAL included
    source.close()
    target.close()
    return home


def test_the_untouched_chain_verifies(audited_db, tmp_path):
    """The control: the copy itself verifies, so every failure below is the tampering's doing."""
    code, findings = verify_cli(tampered_copy(audited_db, tmp_path))
    assert code == 0 and "intact" in findings[0], findings


@pytest.mark.parametrize(("tamper", "first"), [c[1:] for c in AUDIT_CASES], ids=[c[0] for c in AUDIT_CASES])
def test_tampering_is_detected_and_the_first_bad_row_named(audited_db, tmp_path, tamper, first):
    home = tampered_copy(audited_db, tmp_path)
    db = sqlite3.connect(home / "registry.db")
    with db:
        tamper(db)
    db.close()
    code, findings = verify_cli(home)
    assert code == 1, findings
    assert first in findings[0], findings
    assert "Traceback" not in "".join(findings)


@pytest.mark.parametrize("payload", [c[1] for c in UNHASHABLE_PAYLOADS], ids=[c[0] for c in UNHASHABLE_PAYLOADS])
def test_the_log_lists_a_row_edited_past_reading_as_unreadable(audited_db, tmp_path, payload):
    from slm_cli.main import app

    home = tampered_copy(audited_db, tmp_path)
    db = sqlite3.connect(home / "registry.db")
    with db:
        edit("payload", payload)(db)
    db.close()
    result = CliRunner().invoke(app, ["audit", "log", "--limit", "100"], env={"SLM_HOME": str(home), "COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    third = next(line for line in result.output.splitlines() if line.strip("│ ").startswith("3 "))
    assert "unreadable: edited" in third, result.output


# --- artifacts ----------------------------------------------------------------------------------------------


@contextmanager
def tampered(path: Path, change: Callable[[Path], None]) -> Iterator[Path]:
    """Change a file (or plant one) for the block, then put everything back as it was."""
    original = path.read_bytes() if path.exists() else None
    change(path)
    try:
        yield path
    finally:
        if original is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(original)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


ARTIFACT_CASES = [
    ("edited_card", "README.md", flip_a_byte, "README.md has sha256"),
    ("edited_lineage", "lineage.json", lambda p: p.write_text(p.read_text().replace("v1", "v3")),
     "lineage.json has sha256"),
    ("deleted_evals", "eval.json", lambda p: p.unlink(), "eval.json is missing"),
    ("planted_adapter", "adapter_config.json", lambda p: p.write_text("{}"),
     "adapter_config.json was not recorded"),
]


@pytest.fixture(scope="module")
def served(tiny_registry):
    """A gateway serving v1; v2 (published, not loaded) is the version the tests tamper with."""
    with environment(SLM_ADMIN_TOKEN="tamper-admin-token"), start_gateway(split_poll_s=0.1) as gateway:
        yield gateway


def v2_folder() -> Path:
    from registry.service import open_registry

    with open_registry() as reg:
        return reg.artifacts.root / "models" / MODEL / "v2"


@pytest.mark.parametrize(("name", "change", "message"), [c[1:] for c in ARTIFACT_CASES],
                         ids=[c[0] for c in ARTIFACT_CASES])
def test_a_changed_artifact_is_refused_at_load_naming_the_file(served, name, change, message):
    import httpx

    from registry.artifacts import ArtifactIntegrityError
    from registry.service import open_registry
    from serving.loader import load_version

    admin = {"Authorization": "Bearer tamper-admin-token"}
    with tampered(v2_folder() / name, change):
        with open_registry() as reg, pytest.raises(ArtifactIntegrityError, match=message):
            load_version(served.state.live.backend, reg, reg.get(f"{MODEL}:v2"))
        refused = httpx.post(f"{served.url}/admin/versions/2/load", headers=admin, timeout=30)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "artifact_integrity" and message in refused.json()["error"]["message"]
        assert 2 not in served.state.live.live()
    # Put back, the same version loads: the refusal was the tampering's doing.
    loaded = httpx.post(f"{served.url}/admin/versions/2/load", headers=admin, timeout=30)
    assert loaded.status_code == 200, loaded.text
    unloaded = httpx.post(f"{served.url}/admin/versions/2/unload", headers=admin, timeout=30)
    assert unloaded.status_code == 200, unloaded.text


def test_a_gateway_will_not_start_on_a_changed_champion(served):
    from registry.artifacts import ArtifactIntegrityError
    from registry.service import open_registry
    from serving.app import build_state, load_serve_config
    from tests.reliability.helpers import REPO

    with open_registry() as reg:
        champion = reg.artifacts.root / "models" / MODEL / "v1" / "lineage.json"
    config = load_serve_config(REPO / "configs/serve.yaml")
    with tampered(champion, flip_a_byte), pytest.raises(ArtifactIntegrityError, match="lineage.json has sha256"):
        build_state(config)


def test_a_changed_base_model_is_refused(served):
    from registry.artifacts import ArtifactIntegrityError
    from registry.service import open_registry

    with open_registry() as reg:
        v2 = reg.get(f"{MODEL}:v2")
        weights = next(p for p in reg.base_dir(v2).iterdir() if p.suffix == ".safetensors")
        with tampered(weights, flip_a_byte), pytest.raises(ArtifactIntegrityError, match="no longer matches"):
            reg.base_dir(v2)


def test_a_changed_data_snapshot_is_refused(served):
    from lifecycle.data import Pair
    from registry.artifacts import ArtifactIntegrityError
    from registry.service import open_registry

    with open_registry() as reg:
        pairs = [Pair(prompt="where is my card", completion="card_arrival")]
        uri = reg.snapshot_dataset("train", pairs, "test").snapshot
        path = reg.artifacts.dataset_path(uri)
        with tampered(path, lambda p: p.write_text(p.read_text().replace("card_arrival", "exchange_rate"))), \
                pytest.raises(ArtifactIntegrityError, match=path.name):
            reg.artifacts.dataset_path(uri)
        assert reg.artifacts.dataset_path(uri) == path  # put back, it loads
