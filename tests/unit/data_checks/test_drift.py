"""Evidently drift on BANKING77: the "before" world against the champion's training prompts is quiet, the
drifted world is not; columns a reference cannot give are skipped with the reason."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from data_checks.drift import check_drift, frame_from_log
from lifecycle.config import load_yaml_config
from lifecycle.drift_policy import DriftPolicy, decide_drift
from lifecycle.predictions import LoggedPrediction
from lifecycle.verdict import Verdict

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def policy():
    return load_yaml_config(DriftPolicy, REPO / "configs/monitor.yaml")


def test_before_world_traffic_does_not_drift(world, policy, tmp_path):
    html = tmp_path / "reports" / "drift.html"
    report = check_drift(world["reference"], world["before"], policy, html_path=html)
    assert report.current_rows == 2520 and report.compared_current == 2520
    assert report.reference_rows == 8401 and report.compared_reference == 8401 - 8401 // 2  # vocabulary half
    assert report.drifted_columns == []
    decision = decide_drift(report.columns, None, policy, rows=report.current_rows)
    assert decision.verdict is Verdict.PASS, decision.reasons()
    assert html.is_file() and html.stat().st_size > 100_000 and report.html == html
    skipped = {c.column: c.skipped for c in report.columns if c.skipped}
    assert set(skipped) == {"outcome", "latency_ms"} and "use a window reference" in skipped["outcome"]
    assert "| prompt_oov_share | wasserstein |" in report.summary_markdown(decision)


def test_drifted_world_traffic_drifts(world, policy):
    report = check_drift(world["reference"], world["drifted"], policy)
    scores = {c.column: c.score for c in report.columns if c.score is not None}
    assert {"prompt_oov_share", "route", "prompt_non_letter_share"} <= set(report.drifted_columns)
    assert scores["prompt_oov_share"] > 5 * policy.columns["prompt_oov_share"].threshold
    decision = decide_drift(report.columns, None, policy, rows=report.current_rows)
    assert decision.fire and {"drift-share", "decisive-columns"} <= {
        f.check for f in decision.findings if f.verdict is Verdict.FAIL}
    assert report.html is None


def test_a_ten_percent_mix_is_caught_by_new_words(world, policy):
    mix = pd.concat([world["before"].sample(2000, random_state=0), world["drifted"].sample(222, random_state=0)])
    report = check_drift(world["reference"], mix, policy)
    assert "prompt_oov_share" in report.drifted_columns
    assert decide_drift(report.columns, None, policy, rows=report.current_rows).fire


def logged(prompt: str | None, completion: str, i: int, *, outcome: str = "ok", role: str = "champion",
           latency: float = 10.0) -> LoggedPrediction:
    return LoggedPrediction(
        ts=datetime(2026, 11, 26, tzinfo=UTC) + timedelta(seconds=i), request_id=f"r{i}", model="m", version=1,
        role=role, user_hash="u", prompt=prompt, prompt_sha256=hashlib.sha256(b"x").hexdigest(),
        completion=completion, latency_ms=latency, outcome=outcome, served=role != "shadow")


def test_a_window_reference_compares_outcomes_and_latency(world, policy):
    reference = world["reference"]  # a pinned window of the log whose prompts were the training ones
    ref_rows = [logged(p, c, i, latency=10 + i % 7)
                for i, (p, c) in enumerate(zip(reference["prompt"], reference["completion"], strict=True))]
    before = world["before"]
    cur_rows = [logged(p, c, i, outcome="ok" if i % 4 else "model_error", latency=30 + i % 7)
                for i, (p, c) in enumerate(zip(before["prompt"], before["completion"], strict=True))]
    shadows = [logged(p, "card_arrival", 10_000 + i, role="shadow") for i, p in enumerate(before["prompt"][:50])]
    current = frame_from_log(cur_rows + shadows)
    assert len(current) == len(cur_rows)  # shadow answers are not traffic of their own
    report = check_drift(frame_from_log(ref_rows), current, policy)
    by_name = {c.column: c for c in report.columns}
    assert by_name["outcome"].drifted and by_name["latency_ms"].drifted  # 25 % errors, 20 ms slower
    assert report.drifted_columns == ["outcome", "latency_ms"]


def test_hash_only_logs_skip_the_text_columns(world, policy):
    rows = [logged(None, "card_arrival", i) for i in range(300)]
    report = check_drift(world["reference"], frame_from_log(rows), policy)
    skipped = {c.column: c.skipped for c in report.columns}
    assert "hash-only" in skipped["prompt_length"] and skipped["route"] is None
    assert report.drifted_columns == ["route"]  # everything routed to one intent


def test_an_empty_window_is_inconclusive(world, policy):
    report = check_drift(world["reference"], frame_from_log([]), policy, html_path=Path("/nonexistent/x.html"))
    assert report.current_rows == 0 and report.html is None and all(c.skipped for c in report.columns)
    assert decide_drift(report.columns, None, policy, rows=0).verdict is Verdict.INCONCLUSIVE


def test_rows_without_text_do_not_count_toward_min_rows(world, policy):
    """A window spanning a switch to hash-only logging: 60 answers with text, 1,140 without. The text columns
    compare the 60 (whose effect sizes run high: same-world traffic read as drift), so the window is too small for
    a verdict, whatever its 1,200 answers."""
    before = world["before"]
    rows = [logged(p, c, i) for i, (p, c) in enumerate(zip(before["prompt"][:60], before["completion"][:60],
                                                           strict=True))]
    rows += [logged(None, None, 60 + i) for i in range(1140)]
    report = check_drift(world["reference"], frame_from_log(rows), policy)
    assert (report.current_rows, report.usable_rows, report.compared_current) == (1200, 60, 60)
    decision = decide_drift(report.columns, None, policy, rows=report.rows_for_decision)
    assert decision.verdict is Verdict.INCONCLUSIVE and "only 60 rows" in " ".join(decision.reasons())
    assert "1200 answers, 60 with text (compared 60)" in report.summary_markdown(decision)
