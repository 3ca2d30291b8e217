import threading
import time

import pytest

from serving.batcher import REJOIN_PROBE_EVERY, REJOIN_SUSPEND_AFTER, BatcherClosed, MicroBatcher


class Recorder:
    def __init__(self, fail: bool = False, delay: float = 0.0):
        self.batches: list[list[str]] = []
        self.fail, self.delay = fail, delay

    def __call__(self, prompts, adapters):
        time.sleep(self.delay)
        self.batches.append(list(prompts))
        if self.fail:
            raise RuntimeError("backend exploded")
        return [f"{p}|{a}" for p, a in zip(prompts, adapters, strict=True)]


def test_requests_arriving_together_share_a_batch_and_keep_their_answers():
    rec = Recorder(delay=0.05)
    batcher = MicroBatcher(rec, max_batch=8, max_wait_s=0.02)
    first = batcher.submit("warm", None)  # occupies the worker while the rest queue up
    futures = [batcher.submit(f"p{i}", "a" if i % 2 else None) for i in range(6)]
    assert first.result(timeout=5) == "warm|None"
    assert [f.result(timeout=5) for f in futures] == [f"p{i}|{'a' if i % 2 else None}" for i in range(6)]
    assert max(len(b) for b in rec.batches) >= 2
    batcher.close()


def test_row_limits_reach_generate_only_for_batches_that_have_one():
    calls = []

    def generate(prompts, adapters, **kwargs):
        calls.append(kwargs.get("max_tokens"))
        time.sleep(0.05)
        return [f"{p}|{a}" for p, a in zip(prompts, adapters, strict=True)]

    batcher = MicroBatcher(generate, max_batch=8, max_wait_s=0.02)
    batcher.submit("warm", None).result(timeout=5)  # a batch without limits: called as generate(prompts, adapters)
    first = batcher.submit("busy", None)
    futures = [batcher.submit(f"p{i}", None, max_tokens=i or None) for i in range(3)]
    first.result(timeout=5)
    assert [f.result(timeout=5) for f in futures] == ["p0|None", "p1|None", "p2|None"]
    assert calls[0] is None and calls[-1][-3:] == [None, 1, 2]  # each row its own limit, in order
    batcher.close()


def test_batch_size_is_capped():
    rec = Recorder(delay=0.05)
    batcher = MicroBatcher(rec, max_batch=3, max_wait_s=0.01)
    batcher.submit("warm", None)
    futures = [batcher.submit(str(i), None) for i in range(9)]
    for f in futures:
        f.result(timeout=5)
    assert max(len(b) for b in rec.batches) <= 3
    batcher.close()


def test_a_failed_batch_fails_each_of_its_requests():
    batcher = MicroBatcher(Recorder(fail=True))
    with pytest.raises(RuntimeError, match="exploded"):
        batcher.submit("x", None).result(timeout=5)
    batcher.close()


def test_close_finishes_queued_work_then_refuses():
    rec = Recorder(delay=0.01)
    batcher = MicroBatcher(rec, max_batch=2)
    futures = [batcher.submit(str(i), None) for i in range(10)]
    batcher.close()
    assert all(f.done() and not f.exception() for f in futures)
    with pytest.raises(BatcherClosed):
        batcher.submit("late", None)


def test_a_cancelled_request_is_skipped():
    gate = threading.Event()
    batcher = MicroBatcher(lambda p, a: (gate.wait(5), [x for x in p])[1], max_batch=1)
    blocker = batcher.submit("first", None)
    cancelled = batcher.submit("second", None)
    assert cancelled.cancel()
    gate.set()
    assert blocker.result(timeout=5) == "first"
    batcher.close()
    assert cancelled.cancelled()


def test_each_batch_is_accounted_to_its_rows():
    seen = []
    batcher = MicroBatcher(Recorder(delay=0.01), on_batch=lambda adapters, wall, cpu: seen.append(
        (list(adapters), wall, cpu)))
    batcher.submit("a", "v2").result(timeout=5)
    batcher.close()
    assert seen[0][0] == ["v2"] and seen[0][1] >= 0.01 and seen[0][2] >= 0


def test_one_bad_row_does_not_fail_its_neighbours_and_each_row_is_accounted_once():
    def generate(prompts, adapters):
        if "bad" in prompts:
            raise TypeError("cannot tokenize")
        return [p.upper() for p in prompts]

    gate, accounted = threading.Event(), []
    batcher = MicroBatcher(lambda p, a: (gate.wait(5), generate(p, a))[1], max_batch=8,
                           on_batch=lambda adapters, wall, cpu: accounted.extend(adapters))
    first = batcher.submit("warm", "v0")  # holds the worker while the next three queue into one batch
    futures = [batcher.submit(p, f"v{k}") for k, p in enumerate(("ok1", "bad", "ok2"), start=1)]
    gate.set()
    assert first.result(timeout=5) == "WARM"
    assert futures[0].result(timeout=5) == "OK1" and futures[2].result(timeout=5) == "OK2"
    with pytest.raises(TypeError):
        futures[1].result(timeout=5)
    batcher.close()
    # The failed batch of three was retried row by row: each row counts as one request (cost per request), not two.
    assert sorted(accounted) == ["v0", "v1", "v2", "v3"]


def closed_loop_batches(callers: int, requests_each: int, **batcher_kwargs) -> list[int]:
    """Batch sizes when ``callers`` threads each send their next request as soon as the last is answered, into a
    backend that takes 0.2 s a batch. Caller 0 goes first; the others follow 0.05 s after its first request is in,
    so the first batch is (almost always) caller 0 alone, and it ends only once the others are queued behind it
    (up to 10 s: a loaded machine's stragglers cannot split them): the cohorts a closed loop falls into, set up on
    purpose (started together, the split is up to thread timing: [1, 7, ...], [8, 4, ...] and [8, 8, ...] were
    all seen)."""
    sizes: list[int] = []
    first_in = threading.Event()

    def backend(prompts, adapters):
        deadline = time.monotonic() + 10
        while not sizes and batcher._queue.qsize() < callers - 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.2)
        sizes.append(len(prompts))
        return list(prompts)

    batcher = MicroBatcher(backend, max_batch=32, **batcher_kwargs)

    def caller(k: int) -> None:
        if k:
            first_in.wait(30)
            time.sleep(0.05)
        try:
            for i in range(requests_each):
                answer = batcher.submit(f"{k}-{i}", None)
                first_in.set()
                answer.result(timeout=60)
        finally:
            first_in.set()  # a caller 0 that failed to submit must not leave the others waiting

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    return sizes


def test_callers_that_come_back_at_once_ride_together_with_the_rejoin_wait():
    """Eight closed-loop callers, caller 0 ahead of the seven others (a lone batch, then seven queued behind it):
    with the wait, once the first batch is answered, every batch carries all eight. Without it the second batch
    takes the seven queued and caller 0 comes back to a batch of its own, [1, 7, 1, 7, ...] — usually: that run
    is not asserted, because caller 0 can win the race into the second batch (session 11 saw [8, 8, 8, 8] in a
    started-together control that this test used to assert on). The window is generous (the whole of the last
    batch's 0.2 s, and a 0.2 s gap) so that a loaded machine cannot miss it; the wait ends as soon as the eight
    are in, so it costs nothing here."""
    sizes = closed_loop_batches(8, 6, rejoin_share=1.0, rejoin_max_s=1.0, rejoin_gap_s=0.2)
    # The first batch takes whoever is in first (k rows); every later batch carries all eight, but the last, where
    # the k callers of the first batch, a request ahead, are done: [k, 8, 8, 8, 8, 8, 8 - k].
    assert sum(sizes) == 48 and len(sizes) >= 6
    assert sizes[1:-1] == [8] * (len(sizes) - 2), sizes
    assert sizes[0] + sizes[-1] == 8 or sizes == [8] * 6, sizes


def test_the_rejoin_target_follows_the_last_batch_and_a_lone_caller_never_waits():
    batcher = MicroBatcher(Recorder(), max_batch=10, rejoin_share=0.1, rejoin_max_s=0.05)
    assert batcher.rejoin_target() == (0, 0.0)  # nothing served yet
    batcher._last = (1, 0.2, 0)  # a lone caller's batch, nothing queued meanwhile: wait for one row, i.e. none
    assert batcher.rejoin_target() == (1, pytest.approx(0.02))
    batcher._last = (7, 0.2, 1)  # seven answered, one queued while they ran: wait for all eight
    assert batcher.rejoin_target() == (8, pytest.approx(0.02))
    batcher._last = (7, 2.0, 6)  # capped by max_batch and by rejoin_max_s
    assert batcher.rejoin_target() == (10, 0.05)
    batcher.close()
    off = MicroBatcher(Recorder(), rejoin_share=0.0)
    off._last = (7, 0.2, 1)
    assert off.rejoin_target() == (0, 0.0)
    off.close()


def test_the_rejoin_wait_ends_when_the_callers_stop_coming():
    """Two of eight callers come back, the other six never do: the batch runs once no request came for the gap
    (0.2 s), not at the end of the window (30 s here: waiting it out would time the test out)."""
    sizes, gate = [], threading.Event()
    batcher = MicroBatcher(lambda p, a: (gate.wait(30), sizes.append(len(p)), list(p))[2], max_batch=32,
                           rejoin_share=1.0, rejoin_max_s=30.0, rejoin_gap_s=0.2)
    batcher._last = (8, 30.0, 0)  # as after a batch of eight
    futures = [batcher.submit(str(i), None) for i in range(2)]
    gate.set()
    assert [f.result(timeout=20) for f in futures] == ["0", "1"]
    assert sizes == [2]
    batcher.close()


def test_a_lone_caller_is_answered_without_the_rejoin_wait():
    """After a lone caller's batch of one (nothing queued meanwhile), its next request runs at once: a window and a
    gap of 30 s would time the test out if it waited for company."""
    batcher = MicroBatcher(Recorder(), rejoin_share=1.0, rejoin_max_s=30.0, rejoin_gap_s=30.0)
    batcher._last = (1, 30.0, 0)  # as after a lone caller's batch that took 30 s
    assert batcher.submit("again", None).result(timeout=10) == "again|None"
    batcher.close()


def test_fruitless_rejoin_waits_suspend_it_and_a_probe_that_brings_the_callers_back_resumes_it():
    """Independent arrivals: a batch that waits for callers who never come back pays the gap every time. After
    REJOIN_SUSPEND_AFTER such waits the batcher stops waiting (a 30 s gap would time the test out), tries again on
    every REJOIN_PROBE_EVERY-th batch, where a trickle (one of seven rows waited for) does not count and half of
    them coming does: the wait is on again."""
    backend = Recorder()
    batcher = MicroBatcher(backend, rejoin_share=1.0, rejoin_max_s=60.0, rejoin_gap_s=0.05)
    for i in range(REJOIN_SUSPEND_AFTER):
        batcher._last = (8, 60.0, 0)  # as after a batch of eight: wait for seven more
        assert batcher.submit(f"alone-{i}", None).result(timeout=10) == f"alone-{i}|None"
    assert batcher._fruitless == REJOIN_SUSPEND_AFTER
    batcher._last, batcher.rejoin_gap_s = (8, 60.0, 0), 30.0
    assert batcher.rejoin_target() == (0, 0.0)  # suspended
    assert batcher.submit("no wait", None).result(timeout=10) == "no wait|None"
    assert batcher.rejoin_counts == {"fruitful": 0, "fruitless": REJOIN_SUSPEND_AFTER, "suspended": 1}

    def probe(company: int) -> list[str]:
        batcher._last, batcher.rejoin_gap_s = (8, 60.0, 0), 2.0
        batcher._batches = REJOIN_PROBE_EVERY * 3  # the next batch is a probe
        assert batcher.rejoin_target() == (8, 60.0)
        futures = [batcher.submit("probe", None)]
        while batcher._queue.qsize():  # the worker has taken the probe (its count of waiting rows is then 0)
            time.sleep(0.001)
        time.sleep(0.05)
        futures += [batcher.submit(f"company-{k}", None) for k in range(company)]
        return [f.result(timeout=20) for f in futures]

    assert probe(1) == ["probe|None", "company-0|None"]  # one of the seven waited for: a trickle
    assert backend.batches[-1] == ["probe", "company-0"]
    assert batcher._fruitless == REJOIN_SUSPEND_AFTER + 1
    assert len(probe(4)) == 5  # four of seven: they came back
    assert backend.batches[-1] == ["probe", "company-0", "company-1", "company-2", "company-3"]
    assert batcher._fruitless == 0
    assert batcher.rejoin_counts == {"fruitful": 1, "fruitless": REJOIN_SUSPEND_AFTER + 1, "suspended": 1}
    batcher._last = (8, 60.0, 0)
    assert batcher.rejoin_target() == (8, 60.0)  # on again, whatever the batch count
    batcher.close()


@pytest.mark.parametrize("kwargs", [{"rejoin_share": -0.1}, {"rejoin_share": 1.5}, {"rejoin_max_s": -1},
                                    {"rejoin_gap_s": 0}, {"rejoin_suspend_after": 0}])
def test_a_bad_rejoin_setting_is_refused_by_name(kwargs):
    with pytest.raises(ValueError, match="rejoin"):
        MicroBatcher(Recorder(), **kwargs)
