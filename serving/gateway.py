"""The serving gateway: an OpenAI-compatible HTTP API over the live versions of one model.

Each request is routed (sticky, weighted) to the champion or the challenger, generated through the
micro-batcher on the in-process backend, checked by the guardrails, answered, and logged — once — in
the prediction log, together with a shadow answer when the split names a shadow. Errors answer in the
OpenAI error format: 4xx for bad input, 502/503/504 for backend trouble, never a bare 500.

Start it with ``slm serve [--host H] [--port P]``; the ``openai`` client works with
``base_url="http://H:P/v1"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from lifecycle.predictions import Feedback
from lifecycle.routing import Assignment
from serving import schemas as s
from serving.admin import AdminError, admin_error_handler, admin_router
from serving.limits import BodyLimit
from serving.state import GatewayState, LogBehind

log = logging.getLogger(__name__)


class InputError(ValueError):
    """The request is well-formed JSON but asks for something this gateway refuses (400/404/413)."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request", param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def _error(status: int, message: str, kind: str, code: str | None = None, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-shaped error. Every one carries an ``x-request-id`` (OpenAI's clients show it as ``request_id``):
    a routed request's is the one it is logged under; a request refused before routing gets one here, and the
    refusal is logged with it, so a client's report can be found in the gateway's log."""
    headers = dict(headers or {})
    if "x-request-id" not in headers:
        headers["x-request-id"] = s.completion_id("req")
        log.info("refused %s (%d %s): %s", headers["x-request-id"], status, code, message)
    return JSONResponse(s.error_body(message, kind, code, param), status_code=status, headers=headers)


_TYPE_TAGS = {"str", "int", "bool", "float", "none", "dict", "list"}


def _param(loc) -> str | None:
    """A validation error's location as the client wrote it: field names and list indexes (``messages.0.content``),
    without pydantic's internal steps (``function-after[...]``, union branch names such as ``str`` or
    ``list[ContentPart]``)."""
    parts = [str(p) for p in loc[1:] if isinstance(p, int) or (
        isinstance(p, str) and p.isidentifier() and p.lower() not in _TYPE_TAGS)]
    return ".".join(parts) or None


def _first_error(errors: list[dict]) -> dict:
    """The error to report: the most specific (deepest) one. A union reports one error per branch; the deepest
    is the branch the input came closest to (a content part without its ``type``, not "not a string")."""
    return max(errors, key=lambda e: len(e.get("loc", ())), default={"msg": "invalid request", "loc": ()})


def _route_path(scope) -> str:
    """The path the router matches: ``scope["path"]`` holds the ``root_path`` a proxy mounts the gateway under
    (``uvicorn --root-path /api``: "/api/v1/completions"), which the router strips and the key check must too."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class ApiKeys:
    """ASGI middleware: ``/v1/`` requests need one of the gateway's API keys when it has any (401 otherwise).

    Plain ASGI, not Starlette's ``@app.middleware("http")``: that one runs the app in a task group of its own, where
    the body limit's refusal (``serving.limits``, raised while the endpoint reads the body) became "No response
    returned" in the log, and it costs a task and a memory stream per request."""

    def __init__(self, app, state: GatewayState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and _route_path(scope).startswith("/v1/"):
            authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
            if not self.state.api_key_ok(authorization):
                self.state.metrics.reject("auth", self.state.model)
                response = _error(401, "missing or invalid API key", "authentication_error", "invalid_api_key")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(state: GatewayState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await asyncio.to_thread(state.close)  # finish queued batches, flush the prediction log

    app = FastAPI(title="slm-lifecycle gateway", version="1", lifespan=lifespan)
    app.state.gw = state

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = _first_error(exc.errors())
        # A body that is not JSON has no parameter at fault: its location is a character offset, not a field.
        param = None if first.get("type") == "json_invalid" else _param(first.get("loc", ()))
        state.metrics.reject("invalid", state.model)
        return _error(400, f"{first['msg']}" + (f" (at {param})" if param else ""), "invalid_request_error",
                      "invalid_request", param)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        # FastAPI's own refusals (a body that is not JSON, an unknown path or method) in the OpenAI error format
        # too: clients parse one shape of error, whatever refused them.
        if exc.status_code < 500:
            state.metrics.reject("invalid", state.model)
        codes = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, str(exc.detail),
                      "invalid_request_error" if exc.status_code < 500 else "server_error",
                      codes.get(exc.status_code, "http_error"), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Anything no route turned into an answer (a bug, a dependency's surprise): still the OpenAI error shape, so
        # clients parse one kind of error, and counted. The traceback goes to the gateway's log, never to the client:
        # Starlette raises the error again once this answer is sent, and the server logs it with its traceback.
        state.metrics.errors.labels(state.model, "none", "none", "internal").inc()
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); it is in the gateway's log", "server_error",
                      "internal_error")

    @app.exception_handler(InputError)
    async def _refused(_request: Request, exc: InputError) -> JSONResponse:
        state.metrics.reject(exc.code, state.model)
        return _error(exc.status, str(exc), "invalid_request_error", exc.code, exc.param)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, detail = state.ready()
        return JSONResponse({"ready": ready, **detail}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        state.update_gauges()
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    started = int(time.time())  # "created": when this gateway began serving them, the same on every call

    def model_entries() -> list[dict]:
        created = started
        ids = [state.model] + [f"{state.model}:v{v}" for v in state.live.routable()]
        return [{"id": i, "object": "model", "created": created, "owned_by": "slm"} for i in ids]

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": model_entries()}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict:
        found = next((m for m in model_entries() if m["id"] == model_id), None)
        if found is None:
            raise InputError(f"model {model_id!r} is not served here; GET /v1/models lists what is", status=404,
                             code="model_not_found", param="model")
        return found

    @app.post("/v1/completions")
    async def completions(body: s.CompletionRequest, request: Request) -> Response:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise InputError("send one prompt per request", param="prompt")
        return await _answer(state, body, prompts[0], request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(body: s.ChatRequest, request: Request) -> Response:
        try:
            prompt = body.prompt()
        except ValueError as exc:
            raise InputError(str(exc), param="messages") from None
        return await _answer(state, body, prompt, request, chat=True)

    @app.post("/v1/feedback")
    async def feedback(body: s.FeedbackRequest) -> dict:
        try:
            await asyncio.to_thread(state.record_feedback, Feedback(
                request_id=body.request_id, outcome=body.outcome, score=body.score, ts=datetime.now(UTC)))
        except LogBehind as exc:  # the request may be real: say when to come back, never "unknown"
            return _error(503, str(exc), "server_error", "log_behind", headers={"retry-after": "5"})
        except LookupError as exc:
            raise InputError(str(exc), status=404, code="unknown_request", param="request_id") from None
        except SQLAlchemyError as exc:  # the database refused: an OpenAI-shaped error, not a bare 500
            log.error("feedback on %s not recorded: %s", body.request_id, exc)
            return _error(503, "the prediction log's database is unavailable; retry the feedback later",
                          "server_error", "log_unavailable", headers={"retry-after": "5"})
        return {"request_id": body.request_id, "recorded": True}

    app.add_middleware(ApiKeys, state=state)
    app.add_middleware(BodyLimit, limit=state.config.max_body_bytes,
                       on_reject=lambda: state.metrics.reject("too_large", state.model))
    app.add_exception_handler(AdminError, admin_error_handler)
    app.include_router(admin_router(state))
    return app


def _target(state: GatewayState, body: s._Request, prompt: str, request: Request,
            chat: bool) -> tuple[Assignment, str, str]:
    if len(prompt) > state.config.max_prompt_chars:
        raise InputError(f"prompt has {len(prompt)} characters; the limit is {state.config.max_prompt_chars}",
                         status=413 if len(prompt) > 4 * state.config.max_prompt_chars else 400,
                         code="prompt_too_long", param="messages" if chat else "prompt")
    if (refused := body.unsupported()) is not None:
        raise InputError(f"{refused[0]}: {refused[1]}", code="unsupported_parameter", param=refused[0])
    limit, field = body.answer_limit()
    if limit is not None and limit > state.config.max_tokens_limit:
        raise InputError(f"{field} {limit} exceeds the limit {state.config.max_tokens_limit}",
                         code="max_tokens_too_large", param=field)
    client_id = request.headers.get("x-request-id")
    if client_id is not None and (len(client_id) > 128 or not client_id.isprintable()):
        raise InputError("x-request-id must be at most 128 printable characters", param="x-request-id")
    # The logged key is always ours: a client reusing or retrying an id must not overwrite or hide a row.
    request_id = s.completion_id("chatcmpl" if chat else "cmpl")
    user = request.headers.get("x-user-id") or body.user or client_id or request_id
    try:
        assignment = state.live.assign(user, state.pinned_version(body.model))
    except LookupError as exc:
        raise InputError(str(exc), status=404, code="model_not_found", param="model") from None
    return assignment, request_id, hashlib.sha256(f"{state.model}/{user}".encode()).hexdigest()[:32]


async def _answer(state: GatewayState, body: s._Request, prompt: str, request: Request, chat: bool) -> Response:
    assignment, request_id, user_hash = _target(state, body, prompt, request, chat)
    arrived = datetime.now(UTC)
    result = await state.generate(assignment, prompt, request_id, body.answer_limit()[0])
    shed = state.shadow(request_id, assignment, user_hash, prompt, arrived)
    state.log_answer(request_id, assignment, user_hash, prompt, arrived, result, shadow_shed=shed)
    model_name = f"{state.model}:v{assignment.version}"
    headers = {"x-slm-version": model_name, "x-request-id": request_id, "x-slm-role": assignment.role}
    if request.headers.get("x-request-id"):
        headers["x-client-request-id"] = request.headers["x-request-id"]
    if result.status != 200:  # logged under request_id: the client gets it to report, and when to retry
        if result.retry_after_s is not None:
            headers["retry-after"] = str(max(1, math.ceil(result.retry_after_s)))
        return _error(result.status, result.error or "backend error", "server_error", result.outcome,
                      headers=headers)
    # The client's max_tokens and stop strings cut what it is sent; the log keeps the whole answer, as it is judged.
    text, finish, completion_tokens = result.text, result.finish_reason, result.completion_tokens
    if result.clipped is not None:
        text, finish, completion_tokens = result.clipped, "length", result.clipped_tokens
    if (stops := body.stop_strings()) and finish != "content_filter":  # a refusal is sent whole, flagged
        text, stopped = s.cut_at_stop(text, stops)
        finish = "stop" if stopped else finish
    usage = s.Usage(prompt_tokens=result.prompt_tokens, completion_tokens=completion_tokens,
                    total_tokens=result.prompt_tokens + completion_tokens)
    if body.stream:
        include_usage = body.stream_options is not None and bool(body.stream_options.include_usage)
        chunks = s.stream_chunks(request_id, model_name, text, chat, finish, usage if include_usage else None)

        async def events():
            for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
    make = s.chat_body if chat else s.completion_body
    return JSONResponse(make(request_id, model_name, text, usage, finish), headers=headers)
