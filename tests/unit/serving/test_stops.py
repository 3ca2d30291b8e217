"""Stop strings cut what a client is sent, looked for in the model's text, never inside a redaction marker."""

import pytest

from serving.schemas import cut_at_stop


@pytest.mark.parametrize(("text", "stops", "cut"), [
    ("card_arrival\n", ["\n"], ("card_arrival", True)),
    ("card_arrival", ["_", "zz"], ("card", True)),
    ("card_arrival", ["zz"], ("card_arrival", False)),
    ("mail [REDACTED:email] now: ok", [":"], ("mail [REDACTED:email] now", True)),  # was "mail [REDACTED"
    ("mail [REDACTED:email]", [":", "]"], ("mail [REDACTED:email]", False)),
    ("a [REDACTED:card_number] b [REDACTED:email]_c", ["_"], ("a [REDACTED:card_number] b [REDACTED:email]", True)),
])
def test_a_stop_is_looked_for_in_the_models_text_not_in_a_marker(text, stops, cut):
    assert cut_at_stop(text, stops) == cut
