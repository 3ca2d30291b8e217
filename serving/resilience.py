"""Fail fast when a backend is down: a circuit breaker, and a timeout for blocking backend calls.

A dead upstream (a vLLM server that stopped, a GPU that fell over) must not hold every gateway request
for its full timeout. After ``failure_threshold`` consecutive infrastructure failures the breaker
*opens*: :meth:`CircuitBreaker.allow` answers False and the gateway replies 503 at once. After
``reset_after_s`` it turns *half-open* and lets exactly one probe through; the probe's success closes it,
its failure opens it again for another ``reset_after_s``.

Only infrastructure errors count (``infra_errors``, by default :class:`BackendError`, ``ConnectionError``
and ``TimeoutError``). A bad request (``ValueError`` and the like) says nothing about the backend's
health: it neither counts as a failure nor resets the count.

>>> now = [0.0]
>>> breaker = CircuitBreaker("upstream", failure_threshold=2, reset_after_s=10.0, clock=lambda: now[0])
>>> for _ in range(2):
...     breaker.record_failure()
>>> breaker.state, breaker.allow()
(<CircuitState.OPEN: 'open'>, False)
>>> now[0] = 10.0
>>> breaker.allow(), breaker.allow()  # half-open: one probe, everyone else still fails fast
(True, False)
>>> breaker.record_success()
>>> breaker.state
<CircuitState.CLOSED: 'closed'>
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import enum
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from lifecycle.records import Frozen

T = TypeVar("T")

# Enough for a handful of concurrent upstream calls on a small gateway; callers that need more pass
# their own executor. Bounded on purpose: see call_with_timeout.
DEFAULT_TIMEOUT_WORKERS = 8


class BackendError(RuntimeError):
    """The backend (not the request) failed: unreachable, crashed, too slow."""


class BackendTimeout(BackendError, TimeoutError):
    """A backend call did not finish within its timeout.

    Also a :class:`TimeoutError`, so whoever maps timeouts (the gateway answers 504) sees one wherever it
    was raised. Before, the upstream's own HTTP timeout surfaced as a plain BackendError: the same slow
    backend got a 502 or a 504 depending on which of two timeouts happened to be shorter.
    """


class CircuitOpen(BackendError):
    """The breaker refused the call without trying it; ``retry_after_s`` suits a Retry-After header."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(f"circuit '{name}' is open: backend failing, retry in {retry_after_s:.1f} s")
        self.name, self.retry_after_s = name, retry_after_s


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitSnapshot(Frozen):
    """The breaker for metrics: current state plus monotonic counters since construction."""

    name: str
    state: CircuitState
    consecutive_failures: int
    retry_after_s: float  # 0 unless open
    successes: int
    failures: int
    rejected: int  # calls refused without trying
    opened: int  # times it went to open


@dataclass(frozen=True)
class _Permit:
    generation: int  # the state epoch it was granted in; a report from an older epoch is stale
    probe: bool


class CircuitBreaker:
    """Closed → (``failure_threshold`` consecutive infra failures) → open → (``reset_after_s``) → half-open.

    Thread-safe: one lock guards all state. Use :meth:`call` or :meth:`guard` (they report the outcome
    themselves and ignore stale reports from calls begun in an earlier state), or :meth:`allow` followed
    by exactly one :meth:`record_success` / :meth:`record_failure`.

    >>> breaker = CircuitBreaker("upstream")
    >>> breaker.call(lambda x: x + 1, 41)
    42
    """

    def __init__(self, name: str, failure_threshold: int = 5, reset_after_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 infra_errors: tuple[type[BaseException], ...] = (BackendError, ConnectionError, TimeoutError)
                 ) -> None:
        if failure_threshold < 1 or reset_after_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_after_s > 0")
        self.name, self.failure_threshold, self.reset_after_s = name, failure_threshold, reset_after_s
        self.infra_errors, self._clock = infra_errors, clock
        self._lock = threading.Lock()
        self._state, self._generation = CircuitState.CLOSED, 0
        self._failures = 0  # consecutive, while closed
        self._opened_at = 0.0
        # A probe whose caller never reports would wedge the breaker half-open; after reset_after_s
        # another probe is let through.
        self._probe_started: float | None = None
        self._counts = {"successes": 0, "failures": 0, "rejected": 0, "opened": 0}

    @property
    def state(self) -> CircuitState:
        with self._lock:
            self._refresh(self._clock())
            return self._state

    def snapshot(self) -> CircuitSnapshot:
        with self._lock:
            now = self._clock()
            self._refresh(now)
            retry = max(0.0, self._opened_at + self.reset_after_s - now) if self._state is CircuitState.OPEN else 0.0
            return CircuitSnapshot(name=self.name, state=self._state, consecutive_failures=self._failures,
                                   retry_after_s=retry, **self._counts)

    def allow(self) -> bool:
        """May a call go ahead now? In half-open, True for one caller only (the probe)."""
        return self._acquire() is not None

    def record_success(self) -> None:
        self._record(True, None)

    def record_failure(self) -> None:
        self._record(False, None)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run the block if allowed, else raise :class:`CircuitOpen`; infra errors in it count as failures."""
        permit = self._acquire()
        if permit is None:
            raise CircuitOpen(self.name, self.snapshot().retry_after_s)
        try:
            yield
        except self.infra_errors:
            self._record(False, permit)
            raise
        except BaseException:
            self._release(permit)  # says nothing about the backend: neither success nor failure
            raise
        self._record(True, permit)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` under :meth:`guard`."""
        with self.guard():
            return fn(*args, **kwargs)

    # --- internals; callers hold no lock, these take it ---

    def _acquire(self) -> _Permit | None:
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if self._state is CircuitState.CLOSED:
                return _Permit(self._generation, probe=False)
            if self._state is CircuitState.HALF_OPEN and (
                    self._probe_started is None or now - self._probe_started >= self.reset_after_s):
                self._probe_started = now
                return _Permit(self._generation, probe=True)
            self._counts["rejected"] += 1
            return None

    def _record(self, ok: bool, permit: _Permit | None) -> None:
        with self._lock:
            now = self._clock()
            self._refresh(now)
            self._counts["successes" if ok else "failures"] += 1
            if permit is not None and permit.generation != self._generation:
                return  # began before the last state change: its outcome says nothing about now
            if self._state is CircuitState.HALF_OPEN:
                self._move(CircuitState.CLOSED if ok else CircuitState.OPEN, now)
            elif self._state is CircuitState.CLOSED:
                self._failures = 0 if ok else self._failures + 1
                if self._failures >= self.failure_threshold:
                    self._move(CircuitState.OPEN, now)

    def _release(self, permit: _Permit) -> None:
        with self._lock:
            if permit.probe and permit.generation == self._generation:
                self._probe_started = None  # let the next caller probe

    def _refresh(self, now: float) -> None:
        if self._state is CircuitState.OPEN and now - self._opened_at >= self.reset_after_s:
            self._move(CircuitState.HALF_OPEN, now)

    def _move(self, state: CircuitState, now: float) -> None:
        self._state, self._generation, self._probe_started = state, self._generation + 1, None
        if state is CircuitState.OPEN:
            self._opened_at = now
            self._counts["opened"] += 1
        if state is CircuitState.CLOSED:
            self._failures = 0


class CircuitBreakers:
    """One :class:`CircuitBreaker` per key (the gateway keys them by version), made on first use.

    A challenger whose adapter fails on every call must not close the door on the champion's traffic: each
    version's calls open only its own circuit. A backend that is down for everyone still fails fast
    everywhere — every version's breaker opens after its own ``failure_threshold`` failures.

    >>> breakers = CircuitBreakers("upstream", failure_threshold=1)
    >>> breakers[2].record_failure()
    >>> breakers[1].allow(), breakers[2].allow(), breakers[2].name
    (True, False, 'upstream v2')
    """

    def __init__(self, name: str, failure_threshold: int = 5, reset_after_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        CircuitBreaker(name, failure_threshold, reset_after_s)  # refuses bad settings now, not at the first call
        self.name, self.failure_threshold, self.reset_after_s = name, failure_threshold, reset_after_s
        self.clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[int, CircuitBreaker] = {}

    def __getitem__(self, key: int) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = self._breakers[key] = CircuitBreaker(
                    f"{self.name} v{key}", self.failure_threshold, self.reset_after_s,
                    clock=lambda: self.clock())  # late-bound: a test moving the clock moves every breaker
            return breaker

    def state(self, key: int) -> CircuitState:
        """The state of ``key``'s circuit; closed for a key that never made a call."""
        with self._lock:
            breaker = self._breakers.get(key)
        return breaker.state if breaker is not None else CircuitState.CLOSED

    def forget(self, keep: set[int] | frozenset[int]) -> set[int]:
        """Drop the breakers of keys not in ``keep`` (versions no longer served); returns the keys dropped."""
        with self._lock:
            dropped = set(self._breakers) - set(keep)
            for key in dropped:
                del self._breakers[key]
        return dropped


_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _default_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:  # created on first use: importing this module starts no threads
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(DEFAULT_TIMEOUT_WORKERS, thread_name_prefix="backend-call")
        return _pool


def call_with_timeout(fn: Callable[..., T], timeout_s: float, *args: Any,
                      executor: concurrent.futures.Executor | None = None, **kwargs: Any) -> T:
    """Run blocking ``fn(*args, **kwargs)`` in a worker thread; raise :class:`BackendTimeout` after ``timeout_s``.

    Python cannot kill a thread: a call that times out **keeps running** in its worker until ``fn``
    returns on its own, and its result is then dropped. Give ``fn`` its own timeout too (an HTTP client
    timeout) so abandoned calls end. The pool is bounded (:data:`DEFAULT_TIMEOUT_WORKERS` threads, or the
    ``executor`` passed in), so a hung backend can tie up at most that many threads; later calls queue,
    the timeout counts from submission (queue time included), and a call still queued when its time is
    up is cancelled and never runs. A breaker in front (``breaker.call(call_with_timeout, fn, 2.0)``)
    stops new calls piling up behind hung ones.

    >>> call_with_timeout(sum, 1.0, [1, 2, 3])
    6
    """
    future = (executor or _default_pool()).submit(fn, *args, **kwargs)
    # wait(), not result(timeout=): a TimeoutError raised by fn itself must propagate as is.
    done, _ = concurrent.futures.wait([future], timeout=timeout_s)
    if not done:
        future.cancel()  # only succeeds while still queued; a running call cannot be stopped
        name = getattr(fn, "__qualname__", repr(fn))
        raise BackendTimeout(f"{name} did not finish within {timeout_s:g} s")
    return future.result()
