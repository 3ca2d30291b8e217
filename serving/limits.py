"""The request-body limit, in one place: a declared Content-Length over the limit is refused before a byte
is read, and the bytes themselves are counted, so a chunked body without Content-Length is capped too."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import JSONResponse

from serving.schemas import error_body


class _TooLarge(BaseException):  # noqa: N818
    # BaseException on purpose: FastAPI turns any Exception raised while reading a body into a 400 "error
    # parsing the body"; this one must reach BodyLimit and become a 413.
    pass


class BodyLimit:
    """ASGI middleware: a request whose body grows past ``limit`` bytes is answered 413, unread remainder
    and all."""

    def __init__(self, app, limit: int, on_reject: Callable[[], None] = lambda: None) -> None:
        self.app, self.limit, self.on_reject = app, limit, on_reject

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except* _TooLarge:  # except*: a middleware that runs the app in a task group wraps it in a group
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send) -> None:
        self.on_reject()
        body = error_body(f"request body exceeds {self.limit} bytes", "invalid_request_error", "request_too_large")
        await JSONResponse(body, status_code=413)(scope, receive, send)
