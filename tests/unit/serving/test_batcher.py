import threading
import time

import pytest

from serving.batcher import BatcherClosed, MicroBatcher


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


def test_one_bad_row_does_not_fail_its_neighbours():
    def generate(prompts, adapters):
        if "bad" in prompts:
            raise TypeError("cannot tokenize")
        return [p.upper() for p in prompts]

    gate = threading.Event()
    batcher = MicroBatcher(lambda p, a: (gate.wait(5), generate(p, a))[1], max_batch=8)
    first = batcher.submit("warm", None)  # holds the worker while the next three queue into one batch
    futures = [batcher.submit(p, None) for p in ("ok1", "bad", "ok2")]
    gate.set()
    assert first.result(timeout=5) == "WARM"
    assert futures[0].result(timeout=5) == "OK1" and futures[2].result(timeout=5) == "OK2"
    with pytest.raises(TypeError):
        futures[1].result(timeout=5)
    batcher.close()
