"""The store's defences of what it records: an audit log edited past reading, truncated or wiped is reported, not
crashed on; records with non-finite floats or colliding audit keys are refused (or settled) before anything is
published; times are stored as the instant they name; the first-ever audit append cannot race."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from lifecycle.records import EvalReport, Lineage
from lifecycle.status import VersionStatus
from registry.store import RegistryStore, is_unreadable
from tests.unit import records_world

S = VersionStatus
NAN = float("nan")


def register(store, *, published=None, **kw):
    def publish(n):
        if published is not None:
            published.append(n)
        return f"local://models/router/v{n}", {"README.md": "0" * 64}

    kw = {"status": S.CANDIDATE} | kw
    return store.register_version("router", prompt_format="f", reason="test", actor="tester", publish=publish, **kw)


def lineage(**kw) -> Lineage:
    return records_world.lineage(prompt_format="f", **kw)


def report(**kw) -> EvalReport:
    return records_world.report(version="router:v1", **kw)


def history(store):
    """Three versions, v1 then v2 promoted: registrations, status changes and alias moves."""
    for _ in range(3):
        register(store)
    store.promote("router", 1, actor="a", reason="first")
    store.promote("router", 2, actor="a", reason="second")
    assert store.verify_audit().ok


# --- 1. an audit row edited past reading ------------------------------------------------------------------------

EDITED_PAYLOADS = {
    "nan": '{"k":NaN}',
    "infinity": '{"k":Infinity}',
    "overflowing_number": '{"k":1e999}',
    "lone_surrogate": '{"k":"\\ud800"}',
    "nested_too_deep": '{"k":' + "[" * 100_000 + "]" * 100_000 + "}",
}


@pytest.mark.parametrize("payload", list(EDITED_PAYLOADS.values()), ids=list(EDITED_PAYLOADS))
def test_a_payload_edited_past_hashing_is_reported_and_listed_as_unreadable(store, payload):
    history(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET payload = :p WHERE seq = 2"), {"p": payload})
    result = store.verify_audit()
    assert not result.ok and result.checked == len(store.audit_events())
    assert result.problems[0].startswith("event seq 2 (version.registered) was edited"), result.problems
    assert any("(seq 2) cannot even be read back" in p for p in result.problems), result.problems
    events = store.audit_events()
    assert is_unreadable(events[1]) and not any(is_unreadable(e) for e in events[:1] + events[2:])


# --- 2. a truncated or wiped log, head rewritten to match --------------------------------------------------------


def test_a_truncated_tail_with_a_rewritten_head_is_broken(store):
    """Cut the newest events and point the head at the new last one: the chain verifies, the registry does not."""
    history(store)
    with store.engine.begin() as conn:
        n = conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
        last = conn.execute(text("SELECT hash FROM audit_events WHERE seq = :s"), {"s": n - 3}).scalar_one()
        conn.execute(text("DELETE FROM audit_events WHERE seq > :s"), {"s": n - 3})
        conn.execute(text("UPDATE audit_head SET count = :c, last_hash = :h"), {"c": n - 3, "h": last})
    result = store.verify_audit()
    assert not result.ok, result
    assert any("alias moves but the log has" in p for p in result.problems), result.problems


def test_a_wiped_log_and_head_are_broken(store):
    """Delete every event and the head: an empty chain, beside a registry with versions and alias moves."""
    history(store)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events"))
        conn.execute(text("DELETE FROM audit_head"))
    result = store.verify_audit()
    assert not result.ok and result.checked == 0
    assert result.problems[0].startswith("the chain head is missing although the registry holds 3 versions")
    assert any("router:v1, router:v2, router:v3" in p for p in result.problems), result.problems


def test_a_version_deleted_behind_the_logs_back_is_named(store):
    history(store)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM status_history WHERE number = 3"))
        conn.execute(text("DELETE FROM versions WHERE number = 3"))
    problems = store.verify_audit().problems
    assert any("registering router:v3 but the registry has no such version" in p for p in problems), problems


# --- 3. non-finite floats: settled or refused before publishing -------------------------------------------------


def test_a_diverged_run_can_be_registered_as_rejected(store):
    """train_loss NaN: registered, as rejected, with the loss unknown (it crashed after publishing before)."""
    v1 = register(store, status=S.REJECTED, lineage=lineage(train_loss=NAN, recipe={"clip": float("inf")}))
    # A record changed without validation (model_copy) is validated again by the store.
    v2 = register(store, status=S.REJECTED, lineage=lineage().model_copy(update={"train_loss": NAN}))
    for version in (v1, v2):
        got = store.get_version("router", version.number)
        assert got.status is S.REJECTED and got.lineage.train_loss is None
    assert store.get_version("router", 1).lineage.recipe == {"clip": None}
    assert store.verify_audit().ok


@pytest.mark.parametrize(("kw", "field"), [
    ({"lineage": lineage().model_copy(update={"wall_time_s": float("inf")})}, "wall_time_s"),
    ({"evals": [report().model_copy(update={"exact_match": NAN})]}, "exact_match"),
    ({"evals": [report().model_copy(update={"per_route_accuracy": {"a": NAN}})]}, "per_route_accuracy"),
], ids=["lineage_wall_time", "eval_exact_match", "eval_route_accuracy"])
def test_a_required_non_finite_float_is_refused_by_name_before_publishing(store, kw, field):
    published = []
    with pytest.raises(ValueError, match=field):
        register(store, published=published, **kw)
    assert published == [] and store.list_versions() == []
    assert register(store).number == 1  # and nothing was left behind


def test_eval_reports_read_back_as_stored(store):
    register(store, evals=[report()])
    assert store.get_version("router", 1).evals == [report()]


# --- 5. the registration event's facts cannot be overwritten ---------------------------------------------------


def test_audit_payload_may_not_overwrite_the_recorded_facts(store):
    published = []
    with pytest.raises(ValueError, match="reason, status"):
        register(store, published=published, status=S.REJECTED,
                 audit_payload={"reason": "looks fine", "status": "candidate", "run": "r1"})
    assert published == [] and store.list_versions() == []
    register(store, status=S.REJECTED, audit_payload={"run": "r1", "gate": "fail"})
    payload = store.audit_events()[0].payload
    assert payload["status"] == "rejected" and payload["reason"] == "test"
    assert payload["run"] == "r1" and payload["gate"] == "fail"


# --- 6. clocks in another time zone ------------------------------------------------------------------------------


def test_a_clock_in_another_time_zone_is_stored_as_the_same_instant(db_url):
    """SQLite's DateTime drops the offset: 12:00+02:00 read back as 12:00Z before; it is 10:00Z."""
    noon_in_cairo = datetime(2026, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    store = RegistryStore.open(db_url, clock=lambda: noon_in_cairo)
    register(store)
    store.promote("router", 1, actor="a", reason="r")
    instant = datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert store.get_version("router", 1).created_at == instant
    assert store.get_version("router", 1).created_at.utcoffset() == timedelta(0)
    assert [h["at"] for h in store.status_history("router", 1)] == [instant, instant]
    assert store.alias_history("router", "champion")[0].moved_at == instant
    assert {e.ts for e in store.audit_events()} == {"2026-05-01T10:00:00+00:00"}
    store.close()


def test_a_clock_without_a_time_zone_is_refused(db_url):
    store = RegistryStore.open(db_url, clock=lambda: datetime(2026, 5, 1, 12))
    with pytest.raises(ValueError, match="without a time zone"):
        register(store)
    store.close()


# --- 7. the first-ever audit append, twice at once (PostgreSQL) ---------------------------------------------------


@pytest.mark.postgres
def test_two_first_ever_appends_at_once_both_land(pg_database_url):
    """With no head row yet, FOR UPDATE locked nothing: both took seq 1 and one failed (IntegrityError). Now the
    second waits for the first's head row, then follows it."""
    store = RegistryStore.open(pg_database_url)
    errors: list[BaseException] = []

    def second():
        try:
            store.append_audit(actor="b", action="note", subject="m", payload={"n": 2})
        except BaseException as exc:  # reported below
            errors.append(exc)

    with store._tx() as conn:  # the first append, held open while the second starts
        store._audit(conn, "a", "note", "m", {"n": 1})
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(1.0)  # the second is now waiting (on the head row; before, on the event's primary key)
    thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
    assert [(e.seq, e.actor) for e in store.audit_events()] == [(1, "a"), (2, "b")]
    assert store.verify_audit().ok
    store.close()
