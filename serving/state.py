"""Everything a running gateway holds, and the request path's work that is not HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from lifecycle import routing
from lifecycle.names import VersionRef
from lifecycle.predictions import Feedback
from lifecycle.routing import Assignment
from registry.predictions import BackpressureError, PredictionStore, PredictionWriter, UnknownRequestError
from registry.service import Registry
from serving.batcher import MicroBatcher
from serving.config import ServeConfig
from serving.guardrails import Guardrails
from serving.live import LiveModel, VersionNotLive
from serving.metrics import GatewayMetrics
from serving.resilience import BackendError, CircuitBreakers, CircuitOpen

log = logging.getLogger(__name__)


def _bearer(authorization: str | None) -> bytes:
    """The token of an ``Authorization: Bearer <token>`` header as bytes (headers may hold any latin-1 text, and
    hmac.compare_digest refuses non-ASCII str); empty unless the scheme is Bearer (any case, RFC 7235): a bare
    token, or one sent under another scheme, is no credential."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip().encode("utf-8", "surrogateescape") if scheme.lower() == "bearer" else b""


class Overloaded(Exception):
    """A request still queued when its time ran out: the gateway is over capacity (503 with Retry-After). Not a
    backend failure: the circuit breakers do not count it."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"overloaded: the request waited {waited_s:g} s in the gateway's queue without being "
                         "started; retry later")
        self.retry_after_s = max(1.0, waited_s / 2)


@dataclass(frozen=True)
class Answer:
    status: int
    text: str = ""
    outcome: str = "ok"
    error: str | None = None
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    flags: list[str] = field(default_factory=list)
    # "length" when the answer used the whole budget without its stop; "content_filter" when a guardrail refused it
    finish_reason: str = "stop"
    retry_after_s: float | None = None  # a 503 of an open circuit: when to try again (the Retry-After header)
    clipped: str | None = None  # the client's max_tokens cut the answer: what it is sent (text stays whole, logged)
    clipped_tokens: int | None = None


FEEDBACK_FLUSH_S = 5.0  # how long a feedback waits for the rows queued before it to reach the database


class LogBehind(RuntimeError):
    """Feedback names a request the log does not have yet, while rows are still queued for the database."""


@dataclass
class GatewayState:
    config: ServeConfig
    registry: Registry
    live: LiveModel
    batcher: MicroBatcher
    writer: PredictionWriter
    predictions: PredictionStore
    guardrails: Guardrails
    breakers: CircuitBreakers  # one per version: a failing challenger opens only its own circuit
    allowed: frozenset[str]
    # repr=False: a state printed in a log or a traceback must not carry the secrets.
    admin_token: str | None = field(default=None, repr=False)
    api_keys: frozenset[str] = field(default=frozenset(), repr=False)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    _shadow_tasks: set = field(default_factory=set)
    _usage: dict = field(default_factory=dict)  # version -> [rows, compute s, cpu s] since start
    _invalid_seen: int = 0  # the writer's invalid rows already counted in metrics.log_dropped
    _rejoin_seen: dict = field(default_factory=dict)  # the batcher's rejoin_counts already counted in metrics

    @property
    def model(self) -> str:
        return self.config.model

    def api_key_ok(self, authorization: str | None) -> bool:
        if not self.api_keys:
            return True
        token = _bearer(authorization)
        return any(hmac.compare_digest(token, key.encode()) for key in self.api_keys)

    def admin_ok(self, authorization: str | None) -> bool:
        return bool(self.admin_token) and hmac.compare_digest(_bearer(authorization), self.admin_token.encode())

    def pinned_version(self, requested: str) -> int | None:
        """``MODEL`` routes by the split; ``MODEL:vN`` pins a live version; anything else is unknown."""
        if requested == self.model:
            return None
        try:
            ref = VersionRef.parse(requested)
        except ValueError:
            ref = None
        if ref is None or ref.model != self.model:
            raise LookupError(f"model {requested!r} is not served here; use {self.model!r} or {self.model}:vN")
        return ref.number

    async def generate(self, assignment: Assignment, prompt: str, request_id: str = "-",
                       max_tokens: int | None = None) -> Answer:
        labels = (self.model, f"v{assignment.version}", assignment.role)
        start = time.perf_counter()
        try:
            gen = await self._call_backend(assignment, prompt, max_tokens)
        except VersionNotLive:
            return self._infra_failure(labels, 503, f"v{assignment.version} was unloaded while the request was "
                                                    "routed; retry")
        except CircuitOpen as exc:
            return self._infra_failure(labels, 503, f"backend unavailable (circuit open): failing fast; retry in "
                                                    f"{exc.retry_after_s:.0f} s", retry_after_s=exc.retry_after_s)
        except Overloaded as exc:
            return self._infra_failure(labels, 503, str(exc), retry_after_s=exc.retry_after_s)
        except TimeoutError:
            return self._infra_failure(labels, 504, f"backend did not answer in {self.config.request_timeout_s} s")
        except BackendError as exc:
            log.error("backend failure: request %s, %s:v%s (%s), prompt %d chars, category infra", request_id,
                      self.model, assignment.version, assignment.role, len(prompt), exc_info=exc.__cause__ or exc)
            return self._infra_failure(labels, 502, str(exc))
        try:
            checked = await self.guardrails.check_async(gen.completion)
        except Exception as exc:  # a classifier's OOM, a tokenizer's error: logged and counted, never a bare 500
            log.error("guardrails failed: request %s, %s:v%s (%s)", request_id, self.model, assignment.version,
                      assignment.role, exc_info=exc)
            return self._infra_failure(labels, 502, f"the guardrails could not check the answer "
                                                    f"({type(exc).__name__}); it was not sent")
        outcome = "ok" if gen.completion in self.allowed else "model_error"
        elapsed = time.perf_counter() - start
        self._count(labels, outcome, elapsed, gen, checked.flags)
        # A refusal is sent whole; a cut answer with what the guardrails redact in the whole one redacted.
        clipped = None if checked.refused or gen.clipped is None else self.guardrails.clip(gen.completion, gen.clipped)
        return Answer(200, text=checked.text, outcome=outcome, latency_ms=elapsed * 1000,
                      prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens, flags=checked.flags,
                      finish_reason="content_filter" if checked.refused else gen.finish_reason,
                      clipped=clipped, clipped_tokens=max_tokens if clipped is not None else None)

    async def _call_backend(self, assignment: Assignment, prompt: str, max_tokens: int | None = None):
        """One backend call under the circuit breaker: timeouts and backend exceptions are infra failures.
        Each version has its own breaker, so a challenger failing on every call leaves the champion's traffic
        alone; shadow calls stay outside the breakers: a failing shadow must not close the door on real traffic."""
        with self.live.in_flight(assignment.version):
            try:
                adapter = self.live.adapter(assignment.version)
            except KeyError:
                raise VersionNotLive(f"v{assignment.version}") from None
            shadow = assignment.role == "shadow"
            guard = contextlib.nullcontext() if shadow else self.breakers[assignment.version].guard()
            with guard:
                try:
                    # An upstream server batches by itself: its requests do not queue behind each other here, and
                    # shadow copies go through their own connections (serving.upstream).
                    upstream = getattr(self.live.backend, "submit", None)
                    future = (upstream(prompt, adapter, max_tokens, shadow=shadow) if upstream
                              else self.batcher.submit(prompt, adapter, max_tokens))
                    if shadow:
                        # A copy is awaited until the backend is done with it, so the copies in flight that the
                        # cap counts (their tasks) are the threads, connections or batch rows they hold: abandoned
                        # at the timeout, its thread would stay busy (until the upstream's own timeout) while the
                        # cap let new copies in, to queue behind it and time out unsent. Slower than the timeout,
                        # it counts as a timeout all the same.
                        started = time.perf_counter()
                        gen = await asyncio.wrap_future(future)
                        if time.perf_counter() - started > self.config.request_timeout_s:
                            raise TimeoutError
                        return gen
                    try:
                        return await asyncio.wait_for(asyncio.wrap_future(future), self.config.request_timeout_s)
                    except TimeoutError:
                        # Cancelled with the wait while it was still queued: the gateway's queue is longer than the
                        # timeout, not the backend broken. Counted against the version's circuit, a burst of load
                        # opened the champion's breaker and took the replica out of the load balancer.
                        if future.cancelled():
                            raise Overloaded(self.config.request_timeout_s) from None
                        raise
                except (TimeoutError, Overloaded):
                    raise
                except Exception as exc:
                    raise BackendError(f"backend failure: {type(exc).__name__}: {exc}") from exc

    def _infra_failure(self, labels: tuple, status: int, message: str, retry_after_s: float | None = None) -> Answer:
        self.metrics.errors.labels(*labels, "infra").inc()
        return Answer(status, outcome="infra_error", error=message, retry_after_s=retry_after_s)

    def _count(self, labels: tuple, outcome: str, elapsed: float, gen, flags: list[str]) -> None:
        self.metrics.requests.labels(*labels).inc()
        self.metrics.latency.labels(*labels).observe(elapsed)
        self.metrics.tokens.labels(*labels, "in").inc(gen.prompt_tokens)
        self.metrics.tokens.labels(*labels, "out").inc(gen.completion_tokens)
        if outcome == "model_error":
            self.metrics.errors.labels(*labels, "model").inc()
        for flag in flags:
            self.metrics.guardrail_flags.labels(*labels, flag).inc()

    def log_answer(self, request_id: str, assignment: Assignment, user_hash: str, prompt: str, arrived: datetime,
                   answer: Answer, shadow_shed: bool = False) -> None:
        """Queue the row of one answer, served or shadow (``shadow_shed``: the request's copy was not sent, see
        :meth:`shadow`). Only its fields are queued on the request path; the writer's thread validates them into a
        Prediction and hashes the texts. The answer is already computed: a full or closed log costs the row, not
        the response — and that loss is logged and counted, never silent."""
        served = assignment.role != "shadow"
        try:
            self.writer.write({
                "ts": arrived, "request_id": request_id, "model": self.model, "version": assignment.version,
                "role": assignment.role, "user_hash": user_hash, "prompt": prompt,
                "completion": answer.text if served else (answer.text or None), "latency_ms": answer.latency_ms,
                "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                "outcome": answer.outcome, "error": answer.error, "guardrail_flags": answer.flags, "served": served,
                "split_revision": assignment.split_revision, "pinned": assignment.pinned, "shadow_shed": shadow_shed})
        except (BackpressureError, RuntimeError) as exc:
            self.metrics.log_dropped.inc()
            log.error("prediction of %s not logged: %s", request_id, exc)

    def shadow(self, request_id: str, routed: Assignment, user_hash: str, prompt: str, arrived: datetime) -> bool:
        """Send a copy to the shadow version of the split that routed the request (``routed``), if it names one;
        its answer is logged with that split's revision, never returned.

        Returns True when the copy is shed instead: ``shadow_max_in_flight`` copies are already generating. A
        shadow slower than the traffic it mirrors would otherwise pile up copies without end, each holding an
        upstream connection or a batch row the served requests need; shed, it costs the served traffic nothing.
        The caller marks the served row (``Prediction.shadow_shed``) and ``slm_shadow_shed`` counts it."""
        number = routed.shadow
        if number is None:
            return False
        if len(self._shadow_tasks) >= self.config.shadow_max_in_flight:  # the loop's thread: no race on the count
            self.metrics.shadow_shed.labels(self.model, f"v{number}").inc()
            return True
        copy = routing.assignment(number, "shadow", routed.split_revision, pinned=routed.pinned)

        async def run() -> None:
            result = await self.generate(copy, prompt, request_id)
            self.log_answer(request_id, copy, user_hash, prompt, arrived, result)

        task = asyncio.get_running_loop().create_task(run())
        self._shadow_tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._shadow_tasks.discard)
        return False

    def record_feedback(self, feedback: Feedback) -> None:
        """Store the feedback on a logged request. Raises ``UnknownRequestError`` when the log has no such request,
        ``LogBehind`` when it may be among the rows still queued for the database (the writer more than the wait
        behind: the request may be real), and SQLAlchemy's errors when the database refuses."""
        try:  # most feedback comes well after its answer was stored: no flush, the writer keeps batching
            self.predictions.record_feedback(feedback)
            return
        except UnknownRequestError:
            pass
        flushed = self.writer.flush(timeout=FEEDBACK_FLUSH_S)  # the prediction it refers to may still be queued
        try:
            self.predictions.record_feedback(feedback)
        except UnknownRequestError:
            if flushed:
                raise
            raise LogBehind(f"the prediction log is {self.writer.pending()} rows behind; request "
                            f"{feedback.request_id} may be among them: retry the feedback later") from None

    def ready(self) -> tuple[bool, dict]:
        live = self.live.live()
        champion = self.breakers.state(self.live.split.champion)
        detail = {"model": self.model, "split_revision": self.live.split.revision,
                  "live_versions": [f"v{v}" for v in sorted(live)], "circuit": champion,
                  "circuits": {f"v{v}": self.breakers.state(v) for v in sorted(live)}}
        return bool(live) and champion != "open", detail  # not ready when most traffic would fail fast

    def update_gauges(self) -> None:
        split = self.live.split
        self.metrics.split.clear()  # a version that left the split, or changed role, must not keep its old share
        for role, share in split.weights.items():
            version = split.champion if role == "champion" else split.challenger
            self.metrics.split.labels(self.model, role, f"v{version}").set(share)
        live = set(self.live.live())
        for version in self.breakers.forget(live):  # unloaded: its circuit no longer means anything
            with contextlib.suppress(KeyError):
                self.metrics.breaker_open.remove(self.model, f"v{version}")
        for version in live:
            self.metrics.breaker_open.labels(self.model, f"v{version}").set(self.breakers.state(version) == "open")
        self.metrics.log_pending.set(self.writer.pending())
        self.metrics.shadow_in_flight.set(len(self._shadow_tasks))
        if (invalid := self.writer.invalid - self._invalid_seen) > 0:  # rows its thread could not validate
            self.metrics.log_dropped.inc(invalid)
            self._invalid_seen += invalid
        for outcome, count in dict(self.batcher.rejoin_counts).items():  # the worker's counts, as counters
            if (new := count - self._rejoin_seen.get(outcome, 0)) > 0:
                self.metrics.rejoin_waits.labels(outcome).inc(new)
                self._rejoin_seen[outcome] = count
        self.metrics.peak_memory.set(self.live.backend.peak_memory_mb() if hasattr(self.live.backend,
                                                                                   "peak_memory_mb") else 0)
        for row in self.usage():
            if row["cost_per_1k_requests"] is not None:
                self.metrics.cost.labels(self.model, f"v{row['version']}").set(row["cost_per_1k_requests"])

    def account_batch(self, adapters, wall_s: float, cpu_s: float) -> None:
        """Share a batch's wall and CPU time equally among its rows, per version (batcher callback)."""
        self.metrics.batch_rows.observe(len(adapters))
        by_adapter = {adapter: version for version, adapter in self.live.live().items()}
        share = 1 / len(adapters)
        for adapter in adapters:
            version = by_adapter.get(adapter)
            if version is None:
                continue  # unloaded while the batch ran
            usage = self._usage.setdefault(version, [0, 0.0, 0.0])
            usage[0] += 1
            usage[1] += wall_s * share
            usage[2] += cpu_s * share
            self.metrics.compute.labels(self.model, f"v{version}").inc(wall_s * share)
            self.metrics.cpu.labels(self.model, f"v{version}").inc(cpu_s * share)

    def usage(self) -> list[dict]:
        """Per version since start: rows generated, compute and CPU seconds, cost per 1,000 requests."""
        rows = []
        for version, (n, compute, cpu) in sorted(self._usage.items()):
            cost = self.config.price_per_hour / 3600 * compute / n * 1000 if n else None
            rows.append({"version": version, "rows": n, "compute_s": compute, "cpu_s": cpu,
                         "cost_per_1k_requests": cost})
        return rows

    def close(self) -> None:
        self.live.close()
        self.batcher.close()
        self.writer.close(timeout=30)
        closer = getattr(self.live.backend, "close", None)  # the upstream backend holds connections
        if closer:
            closer()
