"""Model names and version references are checked whole: a trailing newline is not a name."""

from __future__ import annotations

import pytest

from lifecycle.names import VersionRef, check_model_name


@pytest.mark.parametrize("name", ["router", "intent-router_2", "0", "a" * 64])
def test_good_model_names_pass(name):
    assert check_model_name(name) == name


# "router\n" passed while the pattern ended in "$", which also matches just before a final newline.
@pytest.mark.parametrize("name", ["router\n", "\nrouter", "rou\nter", "", "Router", "-router", "a" * 65,
                                  "a" * 64 + "\n"])
def test_bad_model_names_are_refused(name):
    with pytest.raises(ValueError, match="invalid model name"):
        check_model_name(name)


@pytest.mark.parametrize("text", ["router\n:v1", "router:v1\nx", "router:v1\n:v2"])
def test_a_version_reference_with_a_newline_inside_is_refused(text):
    with pytest.raises(ValueError, match="invalid"):
        VersionRef.parse(text)


def test_surrounding_whitespace_of_a_reference_is_still_ignored():
    assert str(VersionRef.parse(" router:v1\n")) == "router:v1"
