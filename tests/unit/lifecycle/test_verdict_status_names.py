import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.names import VersionRef
from lifecycle.status import ALLOWED_TRANSITIONS, TransitionError, VersionStatus, check_transition
from lifecycle.verdict import Verdict, worst


@given(st.lists(st.sampled_from(list(Verdict)), min_size=1))
def test_worst_is_the_maximum_and_order_free(verdicts):
    assert worst(verdicts) is max(verdicts)
    assert worst(reversed(verdicts)) is worst(verdicts)


def test_no_evidence_is_not_a_pass():
    assert worst([]) is Verdict.INCONCLUSIVE


@pytest.mark.parametrize(("src", "dst", "ok"), [
    ("candidate", "promoted", True),
    ("candidate", "rolled_back", True),
    ("promoted", "rolled_back", True),
    ("rolled_back", "archived", True),
    ("archived", "decommissioned", True),
    ("rejected", "promoted", False),
    ("promoted", "candidate", False),
    ("decommissioned", "archived", False),
    ("rolled_back", "promoted", False),
])
def test_transition_table(src, dst, ok):
    if ok:
        check_transition(VersionStatus(src), VersionStatus(dst))
    else:
        with pytest.raises(TransitionError, match=f"from {src} to {dst}"):
            check_transition(VersionStatus(src), VersionStatus(dst))


def test_status_never_moves_back_to_an_initial_status():
    for src, targets in ALLOWED_TRANSITIONS.items():
        assert VersionStatus.CANDIDATE not in targets
        assert src not in targets
    assert ALLOWED_TRANSITIONS[VersionStatus.DECOMMISSIONED] == frozenset()


@pytest.mark.parametrize(("text", "default", "expected"), [
    ("router:v3", None, "router:v3"),
    ("v12", "router", "router:v12"),
    (" intent-router:v1 ", None, "intent-router:v1"),
])
def test_version_refs(text, default, expected):
    assert str(VersionRef.parse(text, default_model=default)) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("router:3", "expected MODEL:vN"),
    ("v0", "numbered from v1"),
    ("v2", "names no model"),
    ("Router:v2", "invalid model name"),
])
def test_bad_version_refs_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        VersionRef.parse(text, default_model=None if text != "v0" else "m")
