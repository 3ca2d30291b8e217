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


@pytest.mark.parametrize(("field", "value"), [("stream", "yes"), ("stream", 1), ("tool_choice", "bogus")])
def test_values_openai_refuses_are_refused(field, value):
    """OpenAI answers 400 to these; taken loosely ("yes" as true), a client's typo changed the answer's shape."""
    from pydantic import ValidationError

    from serving.schemas import ChatRequest, CompletionRequest

    with pytest.raises(ValidationError, match=field):
        CompletionRequest(model="m", prompt="hi", **{field: value})
    with pytest.raises(ValidationError, match=field):
        ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], **{field: value})


def test_the_values_openai_takes_still_pass():
    from serving.schemas import CompletionRequest

    for extra in ({"stream": True}, {"stream": None}, {"tool_choice": "auto"}, {"tool_choice": "none"},
                  {"tool_choice": {"type": "function", "function": {"name": "f"}}}):
        CompletionRequest(model="m", prompt="hi", **extra)
