from datetime import UTC, datetime

import pytest

from lifecycle.audit import GENESIS_HASH, ChainHead, RegistryRecords, next_event, parse_payload, verify


def chain(n: int):
    head = ChainHead(count=0, last_hash=GENESIS_HASH)
    events = []
    for i in range(n):
        e = next_event(head, ts=datetime(2026, 1, 1, tzinfo=UTC), actor="test", action=f"a{i}",
                       subject="m:v1", payload={"i": i, "x": [1.5, "é"]})
        events.append(e)
        head = ChainHead(count=e.seq, last_hash=e.hash)
    return events, head


def test_intact_chain_verifies():
    events, head = chain(5)
    result = verify(events, head)
    assert result.ok and result.checked == 5 and result.problems == []


def test_hash_is_stable_across_runs():
    a, _ = chain(3)
    b, _ = chain(3)
    assert [e.hash for e in a] == [e.hash for e in b]


@pytest.mark.parametrize(("tamper", "expected"), [
    ("edit", "was edited"),
    ("delete_middle", "deleted, inserted or reordered"),
    ("delete_newest", "head records 4 events but 3"),
    ("insert", "does not link"),
    ("reorder", "does not link"),
])
def test_tampering_is_detected(tamper, expected):
    events, head = chain(4)
    if tamper == "edit":
        events[1] = events[1].model_copy(update={"payload": {"i": 99}})
    elif tamper == "delete_middle":
        del events[1]
    elif tamper == "delete_newest":
        events = events[:-1]
    elif tamper == "insert":
        forged = events[1].model_copy(update={"action": "forged"})
        events.insert(2, forged)
    elif tamper == "reorder":
        events[1], events[2] = events[2], events[1]
    result = verify(events, head)
    assert not result.ok
    assert any(expected in p for p in result.problems), result.problems


def test_missing_head_is_a_problem():
    events, _ = chain(2)
    assert not verify(events, None).ok


def test_payload_must_be_json():
    with pytest.raises(ValueError):
        next_event(ChainHead(count=0, last_hash=GENESIS_HASH), ts=datetime.now(UTC), actor="a",
                   action="b", subject="c", payload={"x": float("nan")})


def deeply_nested(depth: int = 100_000) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("payload", [{"k": float("nan")}, {"k": float("-inf")}, {"k": "\ud800"}, {"\udfff": 1},
                                     {"k": deeply_nested()}],
                         ids=["nan", "infinity", "lone_surrogate", "lone_surrogate_key", "nested_too_deep"])
def test_an_event_that_cannot_be_hashed_any_more_is_reported_as_edited(payload):
    """Edited into something with no canonical JSON: the check reports the edit instead of crashing."""
    events, head = chain(3)
    events[1] = events[1].model_copy(update={"payload": payload})
    result = verify(events, head)
    assert not result.ok
    assert result.problems[0].startswith("event seq 2 (a1) was edited"), result.problems


@pytest.mark.parametrize("text", ['{"k":NaN}', '{"k":Infinity}', '{"k":-Infinity}', '{"k":1e999}', '{"k":-1e400}',
                                  '{"k":"\\ud800"}', '{"\\udc00":1}', '{"k":' + "[" * 100_000 + "]" * 100_000 + "}",
                                  "{not json", "[1, 2]", "null", ""])
def test_a_payload_that_could_not_have_been_written_is_refused_on_reading(text):
    with pytest.raises(ValueError):
        parse_payload(text)


def test_a_payload_that_could_have_been_written_reads_back():
    assert parse_payload('{"a":[1.5,"é",null,true],"b":{"c":10000000000000000000000},"d":1e300}') == {
        "a": [1.5, "é", None, True], "b": {"c": 10**22}, "d": 1e300}


def registry_chain():
    """v1 and v2 registered, v1 promoted (one status change, one alias move): a chain and the records behind it."""
    head, events = ChainHead(count=0, last_hash=GENESIS_HASH), []
    for action, subject in [("version.registered", "m:v1"), ("version.registered", "m:v2"),
                            ("version.status", "m:v1"), ("alias.moved", "m"), ("note", "m")]:
        event = next_event(head, ts=datetime(2026, 1, 1, tzinfo=UTC), actor="t", action=action, subject=subject,
                           payload={})
        events.append(event)
        head = ChainHead(count=event.seq, last_hash=event.hash)
    return events, head, RegistryRecords(versions=["m:v1", "m:v2"], status_changes=3, alias_moves=1)


def test_a_log_that_accounts_for_the_registry_verifies():
    events, head, records = registry_chain()
    assert verify(events, head, records).ok
    assert verify([], None, RegistryRecords()).ok  # a new registry


def test_a_truncated_tail_with_a_rewritten_head_is_caught_by_the_registrys_records():
    """Cut the log after the registrations and point the head at the new last event: the chain alone is intact,
    but the registry still holds a status change and an alias move that no event accounts for."""
    events, _, records = registry_chain()
    kept = events[:2]
    head = ChainHead(count=2, last_hash=kept[-1].hash)
    assert verify(kept, head).ok  # what the chain alone can see
    problems = verify(kept, head, records).problems
    assert any("3 status changes but the log has 2" in p for p in problems), problems
    assert any("1 alias moves but the log has 0" in p for p in problems), problems


def test_a_wiped_log_and_head_are_caught_by_the_registrys_records():
    _, _, records = registry_chain()
    problems = verify([], None, records).problems
    assert problems[0].startswith("the chain head is missing although the registry holds 2 versions"), problems
    assert any("have no version.registered event (m:v1, m:v2)" in p for p in problems), problems


def test_a_version_whose_rows_were_deleted_is_named():
    events, head, records = registry_chain()
    fewer = records.model_copy(update={"versions": ["m:v1"], "status_changes": 2})
    problems = verify(events, head, fewer).problems
    assert any("registering m:v2 but the registry has no such version" in p for p in problems), problems
