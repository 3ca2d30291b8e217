"""Prediction log: exactly-once storage through the writer, idempotent inserts, hash-only mode, feedback,
aggregates and windows — on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from lifecycle.predictions import Feedback, Prediction, sha256_text
from lifecycle.sequential import clustered_ratio_variance
from registry import schema as t
from registry.predictions import BackpressureError, PredictionStore, PredictionWriter, UnknownRequestError
from registry.store import RegistryStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def pred(i: int, *, model: str = "m", version: int = 1, role: str = "champion", latency_ms: float = 10.0,
         outcome: str = "ok", flags: tuple[str, ...] = (), ts: datetime | None = None, **kw) -> Prediction:
    return Prediction(
        ts=ts or T0 + timedelta(seconds=i), request_id=kw.pop("request_id", f"req-{i}"), model=model,
        version=version, role=role, user_hash=kw.pop("user_hash", "u" * 16), prompt=f"prompt {i}",
        completion=f"answer {i}",
        latency_ms=latency_ms, prompt_tokens=3, completion_tokens=2, outcome=outcome,
        error=None if outcome == "ok" else "boom", guardrail_flags=list(flags), served=role != "shadow", **kw)


@pytest.fixture
def engine(db_url):
    registry = RegistryStore.open(db_url)  # runs the migrations, 0002 included
    yield registry.engine
    registry.close()


@pytest.fixture
def log(engine):
    return PredictionStore(engine)


# -- the store --------------------------------------------------------------------------------------

def test_insert_many_is_idempotent(log):
    batch = [pred(i) for i in range(5)]
    log.insert_many(batch)
    log.insert_many(batch)  # the whole batch again
    log.insert_many([pred(3), pred(5), pred(5), pred(6)])  # overlap, and a duplicate inside the batch
    log.insert_many([pred(3, role="shadow", version=2)])  # same request, another role: a second row
    assert log.count("m") == 8
    rows = log.window("m", T0, T0 + timedelta(hours=1))
    assert sorted((r.request_id, r.role) for r in rows) == sorted(
        [(f"req-{i}", "champion") for i in range(7)] + [("req-3", "shadow")])


def test_aggregates_can_count_only_the_requests_of_a_split_revision_or_later(log):
    log.insert_many([pred(0, split_revision=3), pred(1, split_revision=4), pred(2, split_revision=5),
                     pred(3), pred(4, role="shadow", version=2, split_revision=4)])
    window = (T0, T0 + timedelta(hours=1))
    every = {(a.version, a.role): a.requests for a in log.aggregates("m", *window)}
    assert every == {(1, "champion"): 4, (2, "shadow"): 1}
    since_4 = {(a.version, a.role): a.requests for a in log.aggregates("m", *window, min_split_revision=4)}
    # revision 3 left out; the row without one (an older gateway's) counts by time, as before the column
    assert since_4 == {(1, "champion"): 3, (2, "shadow"): 1}
    by_caller = log.aggregates("m", *window, by_caller=True, min_split_revision=5)
    assert [(a.version, a.requests, a.by_caller["model_errors"].trials) for a in by_caller] == [(1, 2, 2)]
    assert [r.split_revision for r in log.window("m", *window)] == [3, 4, 5, None, 4]
    # what the revision filter leaves out, as requests: a shadow copy of an old-split request is not one more
    log.insert_many([pred(5, split_revision=2), pred(5, role="shadow", version=2, split_revision=2),
                     pred(6, model="other", split_revision=1)])
    assert log.stale_requests("m", *window, min_split_revision=5) == 3  # revisions 2, 3 and 4; not the NULL row
    assert log.stale_requests("m", *window, min_split_revision=3) == 1
    assert log.stale_requests("m", T0 + timedelta(seconds=2), T0 + timedelta(hours=1), min_split_revision=5) == 1


def test_a_rollout_can_leave_out_the_requests_whose_caller_named_the_version(log):
    """``routed_only``: the split did not choose a pinned request's version, nor its shadow copy's."""
    log.insert_many([pred(0), pred(1, version=2, role="challenger"),
                     pred(2, version=2, role="challenger", pinned=True, outcome="model_error"),
                     pred(3, pinned=True, split_revision=1), pred(3, version=2, role="shadow", pinned=True),
                     pred(4, split_revision=1)])
    window = (T0, T0 + timedelta(hours=1))
    every = {(a.version, a.role): (a.requests, a.model_errors) for a in log.aggregates("m", *window)}
    assert every == {(1, "champion"): (3, 0), (2, "challenger"): (2, 1), (2, "shadow"): (1, 0)}
    routed = {(a.version, a.role): (a.requests, a.model_errors) for a in log.aggregates("m", *window,
                                                                                       routed_only=True)}
    assert routed == {(1, "champion"): (2, 0), (2, "challenger"): (1, 0)}
    assert log.stale_requests("m", *window, min_split_revision=2) == 1  # the routed one only
    assert [r.pinned for r in log.window("m", *window)] == [False, False, True, True, True, False]


def test_purge_deletes_the_old_rows_and_their_feedback_only(log):
    old = [pred(i, ts=T0 - timedelta(days=100) + timedelta(minutes=i)) for i in range(7)]
    shadow = [pred(2, role="shadow", version=2, ts=T0 - timedelta(days=100) + timedelta(minutes=2))]
    new = [pred(i) for i in range(10, 14)]
    other = [pred(i, model="other", request_id=f"other-{i}", ts=T0 - timedelta(days=100)) for i in range(3)]
    log.insert_many(old + shadow + new + other)
    for request in ("req-1", "req-2", "req-11"):
        log.record_feedback(Feedback(request_id=request, outcome="success", ts=T0))
    cutoff = T0 - timedelta(days=90)
    assert log.count("m", before=cutoff) == 8
    assert log.purge_before("m", cutoff, batch=3) == (8, 2)  # three transactions of 3, 3 and 2 rows
    assert log.count("m") == 4 and log.count("m", before=cutoff) == 0 and log.count("other") == 3
    kept = log.window("m", T0 - timedelta(days=200), T0 + timedelta(hours=1))
    assert [r.request_id for r in kept] == [f"req-{i}" for i in range(10, 14)]
    assert [r.feedback for r in kept] == [None, "success", None, None]  # the new request's feedback stays
    assert log.purge_before("m", cutoff) == (0, 0)  # nothing left before the cutoff: a re-run is a no-op
    with pytest.raises(ValueError, match="batch must be at least 1 row, got 0"):
        log.purge_before("m", cutoff, batch=0)


def test_round_trip_keeps_every_field(log):
    original = pred(1, flags=("pii", "toxicity"), outcome="model_error",
                    ts=datetime(2026, 3, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))))
    log.insert_many([original])
    (back,) = log.window("m", T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert back.ts == original.ts and back.ts.tzinfo == UTC
    assert back.model_dump(exclude={"feedback", "feedback_score"}) == original.model_dump()
    assert back.prompt_sha256 == sha256_text("prompt 1")


def test_hash_only_mode_stores_no_text(engine):
    log = PredictionStore(engine, store_text=False)
    log.insert_many([pred(1)])
    with engine.connect() as conn:
        row = conn.execute(select(t.predictions)).one()
    assert row.prompt is None and row.completion is None
    assert row.prompt_sha256 == sha256_text("prompt 1") and row.completion_sha256 == sha256_text("answer 1")
    (back,) = log.window("m", T0, T0 + timedelta(hours=1))
    assert back.prompt is None and back.prompt_sha256 == sha256_text("prompt 1")


def fields(i: int, **kw) -> dict:
    """The mapping of a prediction's fields, as the gateway queues it (no hashes: the writer's thread adds them)."""
    return pred(i, **kw).model_dump(exclude={"prompt_sha256", "completion_sha256"})


class ListSink(list):
    """A store that keeps what it is given, in memory."""

    def insert_many(self, predictions):
        self.extend(predictions)


@pytest.mark.parametrize("row", [pred(1), fields(1)], ids=["prediction", "mapping"])
def test_hash_only_writer_drops_the_text(row):
    """A Prediction's texts go before it is queued; a mapping's as soon as the writer's thread hashed them."""
    seen = ListSink()
    with PredictionWriter(seen, store_text=False) as writer:
        writer.write(row)
    (p,) = seen
    assert (p.prompt, p.completion, p.prompt_sha256) == (None, None, sha256_text("prompt 1"))


@pytest.mark.parametrize("kind", ["prediction", "mapping"])
def test_a_prompts_personal_data_is_redacted_in_the_log_and_hashed_as_received(kind):
    """The gateway's default (log_prompt_pii: redact): a customer's card number or e-mail in a prompt is not kept
    in the prediction log; its sha256 is the received text's, so equal prompts still match."""
    from lifecycle.pii import redact_pii

    received = "my card 4111 1111 1111 1111 never came, mail jo@bank.com"
    row = pred(1).model_copy(update={"prompt": received, "prompt_sha256": sha256_text(received)})
    seen = ListSink()
    with PredictionWriter(seen, redact_prompt=redact_pii) as writer:
        writer.write(row if kind == "prediction" else row.model_dump(exclude={"prompt_sha256", "completion_sha256"}))
    (p,) = seen
    assert p.prompt == "my card [REDACTED:card_number] never came, mail [REDACTED:email]"
    assert p.prompt_sha256 == sha256_text(received) and p.completion == "answer 1"


def test_the_gateway_redacts_logged_prompts_unless_told_to_keep_them():
    from serving.config import ServeConfig

    assert ServeConfig().log_prompt_pii == "redact"
    assert ServeConfig(log_prompt_pii="keep").log_prompt_pii == "keep"
    with pytest.raises(ValueError):
        ServeConfig(log_prompt_pii="hash")


def test_the_writer_validates_mappings_in_its_thread_and_drops_only_the_invalid_one(log, caplog):
    with PredictionWriter(log, flush_interval_s=60) as writer:
        writer.write(fields(1))
        writer.write({**fields(2), "version": 0})  # a version number below 1: a bug in whoever built the row
        writer.write(pred(3))
        with pytest.raises(TypeError, match="mapping"):
            writer.write(["not", "a", "row"])
        assert writer.flush(timeout=10)  # the invalid row does not keep a flush waiting
        assert writer.invalid == 1 and writer.pending() == 0
    rows = log.window("m", T0, T0 + timedelta(hours=1))
    assert [r.request_id for r in rows] == ["req-1", "req-3"]
    assert rows[0].prompt_sha256 == sha256_text("prompt 1") and rows[0].completion_sha256 == sha256_text("answer 1")
    assert "req-2" in caplog.text and "do not validate" in caplog.text


def test_nul_characters_are_stored_on_both_backends(log):
    log.insert_many([pred(1).model_copy(update={"prompt": "a\x00b"})])
    (back,) = log.window("m", T0, T0 + timedelta(hours=1))
    assert back.prompt == "a\ufffdb"


def test_feedback_joins_the_served_row_and_a_later_one_replaces_it(log):
    log.insert_many([pred(1), pred(1, role="shadow", version=2), pred(2)])
    log.record_feedback(Feedback(request_id="req-1", outcome="success", score=0.9, ts=T0))
    log.record_feedback(Feedback(request_id="req-1", outcome="failure", ts=T0 + timedelta(minutes=1)))
    rows = {(r.request_id, r.role): r for r in log.window("m", T0, T0 + timedelta(hours=1))}
    assert (rows["req-1", "champion"].feedback, rows["req-1", "champion"].feedback_score) == ("failure", None)
    assert rows["req-1", "shadow"].feedback is None  # the caller never saw the shadow answer
    assert rows["req-2", "champion"].feedback is None
    champion, shadow = log.aggregates("m", T0, T0 + timedelta(hours=1))
    assert (champion.feedback_count, champion.feedback_success, shadow.feedback_count) == (1, 0, 0)


def test_feedback_for_an_unknown_request_is_refused(log):
    log.insert_many([pred(1)])
    with pytest.raises(UnknownRequestError, match="req-404"):
        log.record_feedback(Feedback(request_id="req-404", outcome="success", ts=T0))


def test_aggregates_of_a_hand_built_window(log):
    since, until = T0, T0 + timedelta(minutes=10)
    rows = [pred(i, latency_ms=float(i + 1)) for i in range(100)]  # ok latencies 1..100 ms
    rows += [pred(100 + i, outcome=o, latency_ms=5000.0) for i, o in
             enumerate(["model_error", "model_error", "infra_error", "input_error"])]
    rows += [pred(200 + i, flags=("pii",)) for i in range(3)]  # 3 more ok rows at 10 ms, flagged
    rows += [pred(300 + i, version=2, role="challenger", latency_ms=20.0) for i in range(4)]
    rows += [pred(400 + i, version=2, role="shadow", latency_ms=30.0, request_id=f"req-{i}") for i in range(2)]
    rows += [pred(500, ts=since - timedelta(microseconds=1)), pred(501, ts=until),  # just outside
             pred(502, ts=since), pred(503, model="other")]  # exactly at since: inside; other model: not
    log.insert_many(rows)
    for i in range(10):
        log.record_feedback(Feedback(request_id=f"req-{i}", outcome="success" if i < 7 else "failure", ts=T0))
    by_key = {(a.version, a.role): a for a in log.aggregates("m", since, until)}
    assert list(by_key) == [(1, "champion"), (2, "challenger"), (2, "shadow")]
    c = by_key[1, "champion"]
    assert (c.requests, c.served, c.ok, c.model_errors, c.infra_errors, c.input_errors) == (108, 108, 104, 2, 1, 1)
    assert (c.guardrail_flagged, c.prompt_tokens, c.completion_tokens) == (3, 324, 216)
    # ok latencies: 1..100 plus four more at 10 ms (3 flagged, req-502); the errors' 5000 ms are left out.
    # 104 values, p50 at sorted index 51.5, between 48 and 49.
    assert c.latency_p50_ms == pytest.approx(48.5) and c.latency_p99_ms < 100
    assert (c.feedback_count, c.feedback_success, c.feedback_success_rate) == (10, 7, 0.7)
    assert c.error_rate == pytest.approx(3 / 108) and c.guardrail_rate == pytest.approx(3 / 108)
    assert c.input_error_rate == pytest.approx(1 / 108) and c.feedback_coverage == pytest.approx(10 / 108)
    assert (c.window_start, c.window_end) == (since, until)
    # Sums over the same 104 ok latencies (feedback joined on 10 rows must not double any): 5050 + 4 x 10.
    assert (c.latency_sum_ms, c.latency_sum_sq_ms2) == pytest.approx((5090.0, 338_750.0))
    assert c.latency_mean_ms == pytest.approx(5090 / 104)
    s = by_key[2, "shadow"]
    assert (s.requests, s.served, s.feedback_count, s.feedback_success_rate, s.latency_p99_ms) == (2, 0, 0, None, 30.0)
    assert (s.latency_mean_ms, s.latency_var_ms2) == (30.0, 0.0)


def test_latency_sums_leave_errors_out_and_an_all_error_window_has_no_mean(log):
    log.insert_many([pred(i, outcome="model_error", latency_ms=900.0) for i in range(3)]
                    + [pred(10 + i, version=2, role="challenger", latency_ms=ms) for i, ms in enumerate([10.0, 20.0])])
    errors, ok = log.aggregates("m", T0, T0 + timedelta(hours=1))
    assert (errors.ok, errors.latency_sum_ms, errors.latency_sum_sq_ms2, errors.latency_mean_ms) == (0, 0.0, 0.0, None)
    assert isinstance(ok.latency_sum_ms, float) and isinstance(ok.latency_sum_sq_ms2, float)
    assert (ok.latency_mean_ms, ok.latency_var_ms2) == pytest.approx((15.0, 50.0))


def test_latency_percentiles_are_numpys_linear_ones(log):
    log.insert_many([pred(i, latency_ms=float(i + 1)) for i in range(100)])
    (a,) = log.aggregates("m", T0, T0 + timedelta(hours=1))
    assert (a.latency_p50_ms, a.latency_p95_ms, a.latency_p99_ms) == pytest.approx((50.5, 95.05, 99.01))
    # The docstring of VersionAggregate: sum 5,050, sum of squares 338,350, mean 50.5, variance 841.67.
    assert (a.latency_sum_ms, a.latency_sum_sq_ms2) == pytest.approx((5050.0, 338_350.0))
    assert (a.latency_mean_ms, a.latency_var_ms2) == pytest.approx((50.5, 841.6667), abs=1e-4)


def test_window_is_half_open_newest_first_then_time_ordered(log):
    log.insert_many([pred(i) for i in range(10)])
    since, until = T0 + timedelta(seconds=2), T0 + timedelta(seconds=8)
    assert [r.request_id for r in log.window("m", since, until, limit=None)] == [f"req-{i}" for i in range(2, 8)]
    assert [r.request_id for r in log.window("m", since, until, limit=3)] == ["req-5", "req-6", "req-7"]
    assert log.aggregates("m", T0 + timedelta(hours=1), T0 + timedelta(hours=2)) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        log.window("m", since.replace(tzinfo=None), until)
    with pytest.raises(ValueError, match="empty window"):
        log.aggregates("m", until, since)


# -- the writer -------------------------------------------------------------------------------------

def test_four_threads_write_every_prediction_exactly_once(log):
    writer = PredictionWriter(log, max_batch=64, flush_interval_s=0.02)

    def produce(k: int) -> None:
        for i in range(500):
            writer.write(pred(k * 1000 + i))

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert writer.flush(timeout=20)
    assert writer.pending() == 0
    ids = {r.request_id for r in log.window("m", T0, T0 + timedelta(days=1), limit=None)}
    assert log.count("m") == 2000 and ids == {f"req-{k * 1000 + i}" for k in range(4) for i in range(500)}
    assert writer.close()


def test_close_flushes_and_later_writes_raise(log):
    writer = PredictionWriter(log, flush_interval_s=60)  # only close() can store these
    for i in range(10):
        writer.write(pred(i))
    assert writer.close(timeout=10)
    assert log.count("m") == 10
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(pred(11))
    assert writer.close()  # idempotent


class FlakyStore:
    """The real store behind a connection that fails the first ``failures`` batches."""

    def __init__(self, store: PredictionStore, failures: int) -> None:
        self.store, self.failures, self.calls = store, failures, 0

    def insert_many(self, predictions):
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        self.store.insert_many(predictions)


def test_a_store_that_fails_twice_loses_nothing(log):
    flaky = FlakyStore(log, failures=2)
    writer = PredictionWriter(flaky, max_batch=8, flush_interval_s=0.01, retry_backoff_s=0.01)
    for i in range(20):
        writer.write(pred(i))
    assert writer.flush(timeout=10)
    assert log.count("m") == 20 and writer.failed_attempts == 2
    writer.close()


def test_a_full_queue_raises_backpressure_and_keeps_what_it_accepted():
    release, stored = threading.Event(), []

    class SlowSink:
        def insert_many(self, predictions):
            release.wait(10)
            stored.extend(p.request_id for p in predictions)

    writer = PredictionWriter(SlowSink(), max_batch=2, flush_interval_s=0, max_queue=4, put_timeout_s=0.01)
    for i in range(4):
        writer.write(pred(i))
    with pytest.raises(BackpressureError, match="queue full"):
        writer.write(pred(4))
    release.set()
    assert writer.close(timeout=10)
    assert stored == [f"req-{i}" for i in range(4)]


def test_close_gives_up_after_its_timeout_and_says_so(caplog):
    class DeadSink:
        def insert_many(self, predictions):
            raise OperationalError("INSERT", {}, Exception("connection refused"))

    writer = PredictionWriter(DeadSink(), flush_interval_s=0, retry_backoff_s=0.01, max_backoff_s=0.02)
    writer.write(pred(1))
    assert writer.close(timeout=0.2) is False
    assert writer.pending() == 1
    assert "1 predictions not stored" in caplog.text


# -- the record -------------------------------------------------------------------------------------

def test_prediction_validation():
    p = pred(1)
    assert p.prompt_sha256 == sha256_text("prompt 1") and p.completion_sha256 == sha256_text("answer 1")
    with pytest.raises(ValidationError, match="timezone-aware"):
        pred(1, ts=datetime(2026, 3, 1))
    with pytest.raises(ValidationError, match="never served"):
        Prediction.model_validate({**pred(1).model_dump(), "role": "shadow", "served": True})
    with pytest.raises(ValidationError, match="NUL"):
        pred(1, request_id="a\x00b")
    with pytest.raises(ValidationError, match="split_revision"):  # a split's revision counts up from 0
        pred(1, split_revision=-1)


def test_aggregates_count_distinct_callers(log):
    rows = [pred(i, user_hash=f"user-{i % 3}") for i in range(12)]  # 12 requests from 3 callers
    rows += [pred(100 + i, version=2, role="challenger", user_hash="user-9") for i in range(5)]
    log.insert_many(rows)
    for i in range(4):  # feedback joined on some rows must not change the count
        log.record_feedback(Feedback(request_id=f"req-{i}", outcome="success", ts=T0))
    by_version = {a.version: a for a in log.aggregates("m", T0, T0 + timedelta(hours=1))}
    assert (by_version[1].requests, by_version[1].users) == (12, 3)
    assert (by_version[2].requests, by_version[2].users) == (5, 1)


def test_aggregates_by_caller_carry_each_tested_sum_per_caller(log):
    # Champion: caller a sends 4 requests (2 model errors, 1 flagged), b sends 2 (none), c sends 1 (an infra error).
    rows = [pred(0, user_hash="a", outcome="model_error"), pred(1, user_hash="a", outcome="model_error"),
            pred(2, user_hash="a", flags=("pii",)), pred(3, user_hash="a"),
            pred(4, user_hash="b"), pred(5, user_hash="b"), pred(6, user_hash="c", outcome="infra_error")]
    rows += [pred(100 + i, version=2, role="challenger", user_hash="z") for i in range(3)]  # one caller
    log.insert_many(rows)
    # Feedback: a 2 successes of 3 answers judged, b 1 failure; c none.
    for request, outcome in (("req-0", "success"), ("req-2", "success"), ("req-3", "failure"), ("req-4", "failure")):
        log.record_feedback(Feedback(request_id=request, outcome=outcome, ts=T0))
    assert all(a.by_caller is None for a in log.aggregates("m", T0, T0 + timedelta(hours=1)))  # not asked for
    champion, challenger = log.aggregates("m", T0, T0 + timedelta(hours=1), by_caller=True)
    m = champion.by_caller
    # Requests per caller 4, 2, 1; model errors 2, 0, 0: the sums a caller at a time, into the clustered variance.
    me = m["model_errors"]
    assert (me.callers, me.events, me.trials) == (3, 2, 7)
    assert me.variance == pytest.approx(clustered_ratio_variance([2, 0, 0], [4, 2, 1]))
    assert m["infra_errors"].variance == pytest.approx(clustered_ratio_variance([0, 0, 1], [4, 2, 1]))
    assert m["guardrail_flagged"].variance == pytest.approx(clustered_ratio_variance([1, 0, 0], [4, 2, 1]))
    # Feedback per caller 3, 1, 0 with successes 2, 0, 0: only a and b have trials.
    f = m["feedback_success"]
    assert (f.callers, f.events, f.trials) == (2, 2, 4)
    assert f.variance == pytest.approx(clustered_ratio_variance([2, 0], [3, 1]))
    # ok answers' latencies (10 ms each): a 2 (sum 20), b 2 (sum 20), c none: equal means, no spread.
    lat = m["latency_sum_ms"]
    assert (lat.callers, lat.events, lat.trials, lat.variance) == (2, 40, 4, 0.0)
    # The totals are unchanged by the second query.
    c = champion
    assert (c.requests, c.model_errors, c.feedback_count, c.feedback_success) == (7, 2, 4, 2)
    z = challenger.by_caller["model_errors"]
    assert (z.callers, z.events, z.trials, z.variance) == (1, 0, 3, None)  # one caller: no spread to see
