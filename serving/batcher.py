"""Micro-batching: requests that arrive together are generated together.

One worker thread owns the backend. It takes the first waiting request, then everything else already
queued (up to ``max_batch``), optionally waiting up to ``max_wait_s`` for more, and runs them as one batch —
mixed adapters included, which the backend serves in one forward pass (its fused mode: the champion merged
into the base, the other versions as per-row low-rank deltas). While a batch runs, new requests queue up
and form the next batch, so under load batches fill by themselves; ``max_wait_s`` is 0 by default.

The rejoin wait (``rejoin_share``; 0 turns it off): callers that send their next request as soon as an answer comes
back (a chat client, an agent, a pipeline, a load test) otherwise split into cohorts. With eight such callers
the worker finishes a batch, finds the one request that queued meanwhile and runs it ALONE while the seven just
answered send again; those seven form the next batch, during which the lone one returns: batches of 1 and 7 for
ever, and a batch of one row costs most of what seven cost (each decode step reads all the weights). So after a
batch of ``k`` rows, the next batch waits until it holds ``k`` more rows than were queued when that batch
ended — the callers just answered, coming back — for at most ``rejoin_share`` of the last batch's wall time
(and ``rejoin_max_s``), and no longer than ``rejoin_gap_s`` after the last request came in. A lone caller (a
batch of one, nothing queued) never waits.

Where the callers do not come back (independent arrivals: many users, a request each now and then), every batch
would wait up to that gap (3 ms by default) for company that is not coming, and near saturation the waits catch a
trickle of arrivals that delays each batch without filling it. So the wait watches itself: a wait is fruitful when
at least half the rows it waited for came (callers coming back come nearly all at once; independent arrivals bring
a few in a tenth of a batch's time); after ``rejoin_suspend_after`` (``REJOIN_SUSPEND_AFTER``) fruitless waits in
a row it stops, and tries again once every ``REJOIN_PROBE_EVERY`` batches; one fruitful wait turns it back on.
Measured with bench/rejoin_bench.py --open-loads (bench/RESULTS.md, "The rejoin wait").
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

Generate = Callable[[Sequence[str], Sequence[str | None]], list]
#: Told after every batch: the adapter of each row, the batch's wall seconds and the worker's CPU seconds.
OnBatch = Callable[[Sequence[str | None], float, float], None]
_STOP = object()
log = logging.getLogger(__name__)
#: The rejoin wait's defaults (module docstring), the gateway's too (serving.config): up to 10 % of the last batch's
#: wall time, at most 50 ms, and no longer than 3 ms after the last request came in (callers that come back at once
#: come in a burst; a wait past it would idle the worker for stragglers). Measured in bench/RESULTS.md ("The rejoin
#: wait").
REJOIN_SHARE, REJOIN_MAX_S = 0.1, 0.05
REJOIN_GAP_S = 0.003
#: Fruitless rejoin waits (under half the rows waited for came) in a row after which the wait stops, and how often
#: (in batches) it is tried again then.
REJOIN_SUSPEND_AFTER, REJOIN_PROBE_EVERY = 3, 8


class BatcherClosed(RuntimeError):
    """The gateway is shutting down: no new requests are accepted."""


class MicroBatcher:
    def __init__(self, generate: Generate, *, max_batch: int = 32, max_wait_s: float = 0.0,
                 rejoin_share: float = REJOIN_SHARE, rejoin_max_s: float = REJOIN_MAX_S,
                 rejoin_gap_s: float = REJOIN_GAP_S, rejoin_suspend_after: int | None = REJOIN_SUSPEND_AFTER,
                 on_batch: OnBatch | None = None) -> None:
        if not 0 <= rejoin_share <= 1 or not rejoin_max_s >= 0 or not rejoin_gap_s > 0:
            raise ValueError(f"rejoin_share must be within [0, 1], rejoin_max_s 0 or more and rejoin_gap_s above 0, "
                             f"got {rejoin_share}, {rejoin_max_s} and {rejoin_gap_s}")
        if rejoin_suspend_after is not None and rejoin_suspend_after < 1:
            raise ValueError(f"rejoin_suspend_after must be 1 or more (None: never suspend), "
                             f"got {rejoin_suspend_after}")
        self._generate = generate
        self.on_batch = on_batch
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.rejoin_share, self.rejoin_max_s, self.rejoin_gap_s = rejoin_share, rejoin_max_s, rejoin_gap_s
        self.rejoin_suspend_after = rejoin_suspend_after
        # The last batch: its rows, its wall seconds, and how many requests were queued when it ended.
        self._last: tuple[int, float, int] = (0, 0.0, 0)
        self._batches = 0  # batches run so far (the suspended wait's probes fall on every REJOIN_PROBE_EVERY-th)
        self._fruitless = 0  # rejoin waits in a row that brought under half the rows they waited for
        #: Batches whose rejoin wait was fruitful / fruitless, and batches that skipped it while it was suspended
        #: (bench/rejoin_bench.py reports them; written by the worker thread only).
        self.rejoin_counts = {"fruitful": 0, "fruitless": 0, "suspended": 0}
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="slm-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompt: str, adapter: str | None, max_tokens: int | None = None) -> Future:
        """Queue one row; ``max_tokens``: the client's limit, passed on to ``generate`` (as ``max_tokens=``, one per
        row) only for batches where some row has one, so a ``generate(prompts, adapters)`` keeps working."""
        if self._closed:
            raise BatcherClosed("the gateway is shutting down")
        future: Future = Future()
        self._queue.put((prompt, adapter, future, max_tokens))
        return future

    def _call(self, prompts: list[str], adapters: list[str | None], limits: Sequence[int | None]) -> list:
        if any(limit is not None for limit in limits):
            return self._generate(prompts, adapters, max_tokens=list(limits))
        return self._generate(prompts, adapters)

    def close(self, timeout: float = 30.0) -> None:
        """Finish everything already submitted, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _gather(self, first) -> tuple[list, bool]:
        batch, stop = [first], False
        now, ready = time.monotonic(), self._queue.qsize()  # requests there already, before any wait
        planned = self._planned_wait()
        suspended = planned[0] > 0 and self._suspended()
        if suspended:
            self.rejoin_counts["suspended"] += 1
        want, seconds = (0, 0.0) if suspended else planned
        deadline, rejoin = now + self.max_wait_s, now + seconds
        while len(batch) < self.max_batch:
            until = deadline
            if len(batch) < want:  # the rejoin wait, cut short when the callers stop coming
                until = max(deadline, min(rejoin, time.monotonic() + self.rejoin_gap_s))
            remaining = until - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        if want > 1 + ready and not stop:  # a rejoin wait ran: did the callers come back (half of them, at least)?
            fruitful = 2 * (len(batch) - 1 - ready) >= want - 1 - ready
            self._fruitless = 0 if fruitful else self._fruitless + 1
            self.rejoin_counts["fruitful" if fruitful else "fruitless"] += 1
        return batch, stop

    def rejoin_target(self) -> tuple[int, float]:
        """(rows the next batch waits for, at most how many seconds) by the rejoin wait (module docstring): the
        last batch's rows come back on top of what was queued when it ended; (0, 0.0) when it is off, or suspended
        after fruitless waits (but on a probe batch)."""
        return (0, 0.0) if self._suspended() else self._planned_wait()

    def _planned_wait(self) -> tuple[int, float]:
        """:meth:`rejoin_target` were the wait not suspended: (0, 0.0) only when it is off or nothing ran yet."""
        rows, wall, queued = self._last
        if self.rejoin_share <= 0 or rows == 0:
            return 0, 0.0
        return min(self.max_batch, rows + queued), min(self.rejoin_share * wall, self.rejoin_max_s)

    def _suspended(self) -> bool:
        """The wait is suspended after fruitless waits, and this batch is not a probe."""
        limit = self.rejoin_suspend_after
        return limit is not None and self._fruitless >= limit and self._batches % REJOIN_PROBE_EVERY != 0

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stop = self._gather(first)
            self._execute(batch)
        while not self._queue.empty():  # requests that raced the stop marker still get answered
            item = self._queue.get_nowait()
            if item is not _STOP:
                self._execute([item])

    def _execute(self, batch: list) -> None:
        # A caller that timed out cancelled its future: skip it. After this call no future can be cancelled.
        batch = [item for item in batch if item[2].set_running_or_notify_cancel()]
        self._batches += 1
        if not batch:
            self._last = (0, 0.0, 0)  # nobody to come back
            return
        prompts, adapters, futures, limits = zip(*batch, strict=True)
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            results = self._call(list(prompts), list(adapters), limits)
        except Exception as exc:
            self._last = (0, 0.0, 0)
            if len(batch) == 1:
                self._account(adapters, wall, cpu)
                futures[0].set_exception(exc)
            else:  # one bad row must not fail its neighbours: answer each alone
                # Each row is accounted once, with its own try and an equal share of the failed batch's time (it
                # was counted here as a row of the batch and again as a single: twice its requests).
                share = ((time.perf_counter() - wall) / len(batch), (time.thread_time() - cpu) / len(batch))
                for item in batch:
                    self._single(*item, spent=share)
            return
        self._account(adapters, wall, cpu)
        # Before the answers go out: what is queued now came while the batch ran, not from its callers.
        self._last = (len(batch), time.perf_counter() - wall, self._queue.qsize())
        for future, result in zip(futures, results, strict=True):
            future.set_result(result)

    def _single(self, prompt: str, adapter: str | None, future: Future, max_tokens: int | None,
                spent: tuple[float, float] = (0.0, 0.0)) -> None:
        """One row alone; ``spent`` (wall, CPU seconds) already went on it in a failed batch and is accounted too."""
        wall, cpu = time.perf_counter() - spent[0], time.thread_time() - spent[1]
        try:
            result = self._call([prompt], [adapter], [max_tokens])[0]
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        finally:
            self._account([adapter], wall, cpu)

    def _account(self, adapters: Sequence[str | None], wall: float, cpu: float) -> None:
        # thread_time sees torch's work when it runs on this thread (the gateway's 1 intra-op thread).
        if self.on_batch is None:
            return
        try:
            self.on_batch(adapters, time.perf_counter() - wall, time.thread_time() - cpu)
        except Exception:  # accounting must never take the worker down
            log.exception("batch accounting failed")
