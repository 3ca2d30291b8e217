"""The OpenAI-compatible wire format the gateway speaks (the subset the official client uses)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (a lone surrogate such as \\ud800 is not)") from None
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("identifiers must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_encodable)]
# What the prediction log accepts as a request id (lifecycle.predictions): checked here, so a bad id is a 400.
RequestId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_encodable), AfterValidator(_no_nul)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool | None = False


class _Request(BaseModel):
    """What both endpoints take. Decoding is greedy, up to the task's answer budget, one choice a request:

    - accepted and ignored (greedy decoding answers the same whatever they say): ``temperature``, ``top_p``,
      ``seed``, ``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ``user`` (it routes, as
      ``x-user-id`` does), ``tools`` with ``tool_choice`` "auto" or "none" (the answer is text), and any field this
      gateway does not know;
    - honoured: ``stop`` (the answer sent is cut before the first stop string), ``stream`` and
      ``stream_options.include_usage``, ``max_tokens`` / ``max_completion_tokens`` (at most ``max_tokens_limit``,
      gateway.py; an answer longer than it is sent cut to that many tokens with ``finish_reason`` "length", and
      logged whole, as it is judged — behind an upstream too, which is asked again for that many);
    - refused with a 400 naming the field, rather than answered against what the client asked: ``n`` other than 1,
      ``logprobs`` / ``top_logprobs``, ``echo``, ``response_format`` other than text, ``tool_choice`` (or the
      legacy ``function_call``) that forces a call, ``stream_options`` without ``stream``.
    """
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1)
    stop: Text | list[Text] | None = None
    stream: Annotated[StrictBool, BeforeValidator(lambda v: False if v is None else v)] = False  # not "yes"
    stream_options: StreamOptions | None = None
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    echo: bool | None = None
    response_format: dict[str, Any] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    function_call: str | dict[str, Any] | None = None
    user: Text | None = Field(default=None, max_length=256)

    def answer_limit(self) -> tuple[int | None, str]:
        """The client's token limit and the field it came in (``max_completion_tokens`` wins, as in OpenAI's API)."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def unsupported(self) -> tuple[str, str] | None:
        """(field, why) for the first option this gateway refuses rather than silently not honour; else None."""
        if self.n not in (None, 1):
            return "n", "this gateway answers one choice a request (greedy decoding: more would be copies)"
        asked = self.logprobs is not None and self.logprobs is not False  # completions' logprobs=0 asks too
        if asked or self.top_logprobs:
            field = "logprobs" if asked else "top_logprobs"
            return field, "log probabilities are not returned by this gateway"
        if self.echo:
            return "echo", "echoing the prompt is not supported"
        if self.response_format is not None and self.response_format.get("type", "text") != "text":
            return "response_format", f"only text answers are made, not {self.response_format.get('type')!r}"
        if isinstance(self.tool_choice, dict) or self.tool_choice == "required":
            return "tool_choice", "this gateway answers text and never calls a tool"
        if isinstance(self.function_call, dict):
            return "function_call", "this gateway answers text and never calls a function"
        if self.stream_options is not None and not self.stream:
            return "stream_options", "stream_options is only allowed when stream is true"
        if len(self.stop_strings()) > 4:
            return "stop", "at most 4 stop sequences"
        return None


def _token_prompt(value):
    """Token-id prompts (a list of ints, or of lists of ints) are valid OpenAI input this gateway does not take."""
    if isinstance(value, list) and value and all(isinstance(v, int) or (
            isinstance(v, list) and all(isinstance(t, int) for t in v)) for v in value):
        raise ValueError("token-id prompts are not supported: send the prompt as text")
    return value


class CompletionRequest(_Request):
    prompt: Annotated[Text | list[Text], BeforeValidator(_token_prompt)]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: Text | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    # A string, a list of content parts (text parts are read), or null (an assistant turn that called tools).
    content: Text | list[ContentPart] | None = None

    def text(self) -> str | None:
        if self.content is None or isinstance(self.content, str):
            return self.content
        other = sorted({p.type for p in self.content if p.type != "text"})
        if other:
            raise ValueError(f"this gateway reads text only, not {', '.join(other)} content parts")
        return "".join(p.text or "" for p in self.content)


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)

    def prompt(self) -> str:
        """The customer's message: the last user turn (the task routes single messages); other turns are not read."""
        users = [m for m in self.messages if m.role == "user"]
        if not users:
            raise ValueError("messages hold no user turn")
        text = users[-1].text()
        if text is None:
            raise ValueError("the last user turn has no content")
        return text


class FeedbackRequest(BaseModel):
    request_id: RequestId
    outcome: Literal["success", "failure"]
    # Python's JSON parser accepts NaN and Infinity; a NaN score would poison every mean computed from the log.
    score: float | None = Field(default=None, allow_inf_nan=False)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def completion_body(request_id: str, model: str, text: str, usage: Usage, finish: str = "stop") -> dict:
    return {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": usage.model_dump()}


def chat_body(request_id: str, model: str, text: str, usage: Usage, finish: str = "stop") -> dict:
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": usage.model_dump()}


def stream_chunks(request_id: str, model: str, text: str, chat: bool, finish: str = "stop",
                  usage: Usage | None = None) -> list[dict]:
    """SSE chunks. The in-process backend decodes a short completion in one batch, so the content
    arrives as one chunk followed by the finish chunk — the framing the OpenAI client expects. With ``usage``
    (the client asked ``stream_options.include_usage``): every chunk carries ``"usage": null`` and a last chunk with
    no choices carries the counts, as OpenAI's API sends them."""
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"
    if chat:
        choices = [[{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}],
                   [{"index": 0, "delta": {}, "finish_reason": finish}]]
    else:
        choices = [[{"text": text, "index": 0, "logprobs": None, "finish_reason": None}],
                   [{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]]
    chunks = [{"id": request_id, "object": kind, "created": created, "model": model, "choices": c} for c in choices]
    if usage is not None:
        for chunk in chunks:
            chunk["usage"] = None
        chunks.append({"id": request_id, "object": kind, "created": created, "model": model, "choices": [],
                       "usage": usage.model_dump()})
    return chunks


_MARKER = re.compile(r"\[REDACTED:[a-z_]+\]")


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first of ``stops`` (which is not included, as in OpenAI's API), and whether one was found.

    A guardrail's ``[REDACTED:<kind>]`` markers are not the model's text: a stop is looked for outside them, as it
    would have been in the answer before redaction (cut inside one, the client got "mail [REDACTED").

    >>> cut_at_stop("mail [REDACTED:email] now: ok", [":"])
    ('mail [REDACTED:email] now', True)
    """
    searched = _MARKER.sub(lambda m: "\uffff" * len(m.group()), text) if "[REDACTED:" in text else text
    found = [i for i in (searched.find(s) for s in stops) if i >= 0]
    return (text[:min(found)], True) if found else (text, False)


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
