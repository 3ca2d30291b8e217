"""The OpenAI-compatible wire format the gateway speaks (the subset the official client uses)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


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


class _Request(BaseModel):
    # OpenAI clients send fields this gateway does not use (logprobs, seed, ...): accept and ignore them.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False
    user: Text | None = Field(default=None, max_length=256)


class CompletionRequest(_Request):
    prompt: Text | list[Text]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)

    def prompt(self) -> str:
        """The customer's message: the last user turn (the task routes single messages)."""
        users = [m.content for m in self.messages if m.role == "user"]
        if not users:
            raise ValueError("messages hold no user turn")
        return users[-1]


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


def stream_chunks(request_id: str, model: str, text: str, chat: bool, finish: str = "stop") -> list[dict]:
    """SSE chunks. The in-process backend decodes a short completion in one batch, so the content
    arrives as one chunk followed by the finish chunk — the framing the OpenAI client expects."""
    created = int(time.time())
    if chat:
        kind = "chat.completion.chunk"
        return [
            {"id": request_id, "object": kind, "created": created, "model": model,
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
            {"id": request_id, "object": kind, "created": created, "model": model,
             "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
        ]
    return [
        {"id": request_id, "object": "text_completion", "created": created, "model": model,
         "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": None}]},
        {"id": request_id, "object": "text_completion", "created": created, "model": model,
         "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]},
    ]


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
