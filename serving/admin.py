"""Admin API (``/admin``): read and change the traffic split, load and unload versions.

Bearer token from ``SLM_ADMIN_TOKEN``. Without it configured, or with a wrong token: 401 and nothing
changes. Split changes are persisted in the registry (every replica follows within ``split_poll_s``)
and audited; loads and unloads are local to this replica and audited too.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from lifecycle.routing import TrafficSplit, check_new_split
from registry.artifacts import ArtifactIntegrityError
from registry.store import ConcurrentChangeError, NotFoundError
from registry.traffic import set_split
from serving.resilience import BackendError
from serving.schemas import error_body

# Version numbers and revisions are 32-bit integers in the registry (INTEGER columns on PostgreSQL; SQLite
# overflows at 64 bits): a larger number from a client is a 400 here, not a database error (a 500).
MAX_INT = 2**31 - 1
VersionNumber = Path(ge=1, le=MAX_INT, description="version number")


class SplitChange(BaseModel):
    champion: int | None = Field(default=None, ge=1, le=MAX_INT, description="default: keep the current champion")
    challenger: int | None = Field(default=None, ge=1, le=MAX_INT)
    challenger_percent: float = Field(default=0.0, ge=0, le=100)
    shadow: int | None = Field(default=None, ge=1, le=MAX_INT)
    expected_revision: int | None = Field(default=None, ge=0, le=MAX_INT,
                                          description="compare-and-swap on the split revision")
    reason: str = Field(default="admin API", max_length=500)


class AdminError(Exception):
    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.code = status, code


def admin_router(state) -> APIRouter:
    def authorized(request: Request) -> None:
        if not state.admin_ok(request.headers.get("authorization")):
            raise AdminError(401, "admin API needs 'Authorization: Bearer <SLM_ADMIN_TOKEN>'", "unauthorized")

    router = APIRouter(prefix="/admin", dependencies=[Depends(authorized)])

    @router.get("/split")
    async def read_split() -> dict:
        return state.live.split.model_dump()

    @router.put("/split")
    async def change_split(change: SplitChange) -> dict:
        current = state.live.split
        try:
            split = TrafficSplit(model=state.model, champion=change.champion or current.champion,
                                 challenger=change.challenger, challenger_percent=change.challenger_percent,
                                 shadow=change.shadow)
            check_new_split(split)
        except ValueError as exc:
            raise AdminError(400, str(exc), "invalid_split") from None
        # Without the client's revision, a split built on this replica's view (the champion left out) is checked
        # against that view: written over a newer split (a promotion this replica has not polled yet), it would
        # silently send traffic back to the old champion.
        expected = (change.expected_revision if change.expected_revision is not None
                    else current.revision if change.champion is None else ...)
        before = set(state.live.live())
        try:
            await _loading(asyncio.to_thread(state.live.load_all, split.live_versions))  # load, then route
            saved = await asyncio.to_thread(set_split, state.registry.store, split, actor="admin-api",
                                            reason=change.reason, expected_revision=expected)
        except (AdminError, ConcurrentChangeError, ValueError) as exc:
            for number in set(state.live.live()) - before:  # undo what this call loaded
                await asyncio.to_thread(state.live.unload, number)
            if isinstance(exc, ConcurrentChangeError):
                await asyncio.to_thread(state.live.refresh)  # a retry then reads, and builds on, the stored split
                raise AdminError(409, str(exc), "conflict") from None
            if isinstance(exc, ValueError):  # set_split refuses a retired (archived) version
                raise AdminError(409, str(exc), "version_retired") from None
            raise
        await asyncio.to_thread(state.live.refresh)
        return saved.model_dump()

    @router.get("/aggregates")
    async def aggregates(minutes: float = 60.0) -> list[dict]:
        """Per-version counts, error and guardrail rates, latency percentiles and feedback for the last
        ``minutes``: the aggregates the rollout and the drift monitor read, by time alone (a rollout's look also
        leaves out the requests its stage's split did not route)."""
        # At least a second: a window shorter than the clock's microsecond resolution would be empty.
        if not 1 / 60 <= minutes <= 60 * 24 * 31:
            raise AdminError(400, "minutes must be between 1/60 (one second) and 44640 (31 days)", "invalid_window")
        until = datetime.now(UTC)
        await asyncio.to_thread(state.writer.flush, 5)
        rows = await asyncio.to_thread(state.predictions.aggregates, state.model,
                                       until - timedelta(minutes=minutes), until)
        usage = {u["version"]: u for u in state.usage()}  # this replica, since it started
        return [{**r.model_dump(mode="json"), "usage_since_start": usage.get(r.version)} for r in rows]

    async def audited(action: str, number: int) -> dict:
        await asyncio.to_thread(state.registry.store.append_audit, actor="admin-api", action=action,
                                subject=f"{state.model}:v{number}", payload={})
        return {"loaded": [f"v{v}" for v in sorted(state.live.live())]}

    @router.post("/versions/{number}/load")
    async def load(number: int = VersionNumber) -> dict:
        await _loading(asyncio.to_thread(state.live.load, number))
        return await audited("gateway.loaded", number)

    @router.post("/versions/{number}/unload")
    async def unload(number: int = VersionNumber) -> dict:
        try:
            await asyncio.to_thread(state.live.unload, number)
        except (ValueError, TimeoutError) as exc:
            raise AdminError(409, str(exc), "in_use") from None
        return await audited("gateway.unloaded", number)

    return router


async def _loading(work) -> None:
    """Run a load; say in the status code why a version could not be loaded."""
    try:
        await work
    except NotFoundError as exc:
        raise AdminError(404, str(exc), "version_not_found") from None
    except ArtifactIntegrityError as exc:
        raise AdminError(409, str(exc), "artifact_integrity") from None
    except BackendError as exc:
        raise AdminError(502, str(exc), "backend_error") from None
    except ValueError as exc:  # e.g. trained with another prompt format or base model
        raise AdminError(400, str(exc), "not_servable") from None


async def admin_error_handler(_request: Request, exc: AdminError) -> JSONResponse:
    return JSONResponse(error_body(str(exc), "admin_error", exc.code), status_code=exc.status)
