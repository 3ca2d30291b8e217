from datetime import UTC, datetime

import pytest

from lifecycle.audit import GENESIS_HASH, ChainHead, next_event, verify


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
