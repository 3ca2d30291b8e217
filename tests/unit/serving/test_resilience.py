"""serving.resilience: the circuit breaker on a fake clock, and call_with_timeout on real threads (ms waits)."""

import concurrent.futures
import threading

import pytest

from serving.resilience import (
    BackendError,
    BackendTimeout,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    call_with_timeout,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def boom():
    raise BackendError("upstream down")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def breaker(clock):
    return CircuitBreaker("upstream", failure_threshold=3, reset_after_s=10.0, clock=clock)


def fail(breaker, times):
    for _ in range(times):
        with pytest.raises(BackendError):
            breaker.call(boom)


def test_opens_after_consecutive_infra_failures(breaker):
    fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED and breaker.allow()
    breaker.record_success()  # the second call above: success resets the count
    fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    fail(breaker, 1)
    assert breaker.state is CircuitState.OPEN
    assert breaker.snapshot().consecutive_failures == 3


def test_open_fails_fast_without_calling(breaker, clock):
    fail(breaker, 3)
    called = []
    clock.now += 4.0
    with pytest.raises(CircuitOpen) as info:
        breaker.call(called.append, 1)
    assert called == [] and not breaker.allow()
    assert info.value.retry_after_s == pytest.approx(6.0)
    assert isinstance(info.value, BackendError)
    snap = breaker.snapshot()
    assert (snap.state, snap.rejected, snap.opened, snap.failures) == (CircuitState.OPEN, 2, 1, 3)


def test_request_errors_do_not_count(breaker):
    fail(breaker, 2)
    for _ in range(10):
        with pytest.raises(ValueError):
            breaker.call(int, "not a number")
    assert breaker.state is CircuitState.CLOSED
    assert breaker.snapshot().consecutive_failures == 2  # neither a failure nor a success
    fail(breaker, 1)
    assert breaker.state is CircuitState.OPEN


def test_half_open_lets_one_probe_through_and_success_closes(breaker, clock):
    fail(breaker, 3)
    clock.now += 10.0
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow() and not breaker.allow() and not breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert all(breaker.allow() for _ in range(5))
    assert breaker.snapshot().consecutive_failures == 0


def test_failed_probe_reopens_for_another_period(breaker, clock):
    fail(breaker, 3)
    clock.now += 10.0
    fail(breaker, 1)  # the probe
    snap = breaker.snapshot()
    assert (snap.state, snap.opened, snap.retry_after_s) == (CircuitState.OPEN, 2, 10.0)
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_one_probe_under_concurrent_callers(breaker, clock):
    fail(breaker, 3)
    clock.now += 10.0
    release, started = threading.Event(), threading.Event()
    callers = 8
    barrier = threading.Barrier(callers)

    def probe():
        started.set()
        assert release.wait(5)
        return "probe"

    def caller():
        barrier.wait()
        try:
            return breaker.call(probe)
        except CircuitOpen:
            return "rejected"

    with concurrent.futures.ThreadPoolExecutor(callers) as pool:
        futures = [pool.submit(caller) for _ in range(callers)]
        assert started.wait(5)
        # Everyone but the probe is refused while it is in flight.
        for _ in range(1000):  # at most ~5 s if something is wrong
            if sum(f.done() for f in futures) == callers - 1:
                break
            concurrent.futures.wait(futures, timeout=0.005)
        assert sum(f.done() for f in futures) == callers - 1
        assert breaker.state is CircuitState.HALF_OPEN
        release.set()
        results = sorted(f.result(timeout=5) for f in futures)
    assert results == ["probe"] + ["rejected"] * (callers - 1)
    assert breaker.state is CircuitState.CLOSED


def test_probe_that_never_reports_is_replaced_after_reset_period(breaker, clock):
    fail(breaker, 3)
    clock.now += 10.0
    assert breaker.allow()  # the caller dies without reporting
    clock.now += 5.0
    assert not breaker.allow()
    clock.now += 5.0
    assert breaker.allow()


def test_request_error_in_probe_frees_the_probe_slot(breaker, clock):
    fail(breaker, 3)
    clock.now += 10.0
    with pytest.raises(ValueError):
        breaker.call(int, "x")
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.call(lambda: 1) == 1
    assert breaker.state is CircuitState.CLOSED


def test_late_report_from_before_the_trip_is_ignored(breaker, clock):
    slow_failure = breaker.guard()
    slow_failure.__enter__()  # a slow call that began while closed
    fail(breaker, 3)
    clock.now += 10.0
    assert breaker.allow()  # the probe is in flight
    late = BackendError("late")
    assert slow_failure.__exit__(BackendError, late, None) is False  # re-raised to its caller
    assert breaker.state is CircuitState.HALF_OPEN  # the stale failure did not reopen it
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED


def test_concurrent_failures_open_exactly_once(clock):
    breaker = CircuitBreaker("b", failure_threshold=5, reset_after_s=1.0, clock=clock)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: breaker.record_failure(), range(200)))
    snap = breaker.snapshot()
    assert (snap.state, snap.opened, snap.failures) == (CircuitState.OPEN, 1, 200)


def test_arguments_are_checked():
    with pytest.raises(ValueError):
        CircuitBreaker("b", failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("b", reset_after_s=0)


def test_call_with_timeout_returns_the_result():
    assert call_with_timeout(lambda a, b=0: a + b, 1.0, 40, b=2) == 42


def test_call_with_timeout_raises_backend_timeout():
    release = threading.Event()
    try:
        with pytest.raises(BackendTimeout, match="within 0.02 s"):
            call_with_timeout(release.wait, 0.02, 5)
    finally:
        release.set()  # the timed-out call is still running in its worker: end it
    assert issubclass(BackendTimeout, BackendError) and issubclass(BackendError, RuntimeError)


def test_errors_of_the_call_itself_propagate_unchanged():
    def own_timeout():
        raise TimeoutError("socket read")

    with pytest.raises(TimeoutError, match="socket read") as info:
        call_with_timeout(own_timeout, 1.0)
    assert not isinstance(info.value, BackendTimeout)


def test_a_call_still_queued_at_its_timeout_never_runs():
    release, ran = threading.Event(), []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            with pytest.raises(BackendTimeout):
                call_with_timeout(release.wait, 0.01, 5, executor=pool)
            with pytest.raises(BackendTimeout):
                call_with_timeout(ran.append, 0.01, "queued", executor=pool)
        finally:
            release.set()
    assert ran == []


def test_breaker_counts_timeouts_as_failures(clock):
    breaker = CircuitBreaker("b", failure_threshold=1, reset_after_s=1.0, clock=clock)
    release = threading.Event()
    try:
        with pytest.raises(BackendTimeout):
            breaker.call(call_with_timeout, release.wait, 0.01, 5)
    finally:
        release.set()
    assert breaker.state is CircuitState.OPEN


def test_a_backend_timeout_is_a_timeout_and_an_infra_failure(clock):
    """The gateway maps TimeoutError to 504 and BackendError to 502: a BackendTimeout (the upstream's own HTTP
    timeout, or call_with_timeout's) must land on 504 wherever it is raised, and still count for the breaker."""
    assert issubclass(BackendTimeout, TimeoutError) and not issubclass(BackendError, TimeoutError)
    breaker = CircuitBreaker("b", failure_threshold=1, reset_after_s=1.0, clock=clock)
    with pytest.raises(TimeoutError, match="timed out after 0.5 s"), breaker.guard():
        raise BackendTimeout("upstream timed out after 0.5 s")
    assert breaker.state is CircuitState.OPEN
