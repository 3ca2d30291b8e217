"""Typed records of the prediction log: one served (or shadow) answer, the user's feedback on it, and the
per-version aggregate of a time window that the rollout and the drift monitor read. Stdlib + pydantic only.

Timestamps are timezone-aware and normalised to UTC (a naive timestamp is refused: its zone is a guess).
Texts may be left out (hash-only logging); their sha256 is always kept, so equal prompts can still be
counted and joined without storing what users wrote.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lifecycle.records import Frozen

Role = Literal["champion", "challenger", "shadow"]
Outcome = Literal["ok", "model_error", "infra_error", "input_error"]
FeedbackOutcome = Literal["success", "failure"]

# Identifiers are indexed columns: bounded, and free of NUL (PostgreSQL text cannot hold it), so a bad
# value is refused where the record is built, in the request, never later in the log writer.
_ID = Field(min_length=1, max_length=128)


def sha256_text(text: str) -> str:
    """Hex sha256 of the UTF-8 bytes of ``text``: the hash the log keeps for prompts and completions."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (use datetime.now(UTC))")
    return value.astimezone(UTC)


def parse_utc(text: str) -> datetime:
    """An ISO-8601 timestamp as stored (audit events, rollout states), in UTC; it must carry its offset."""
    return as_utc(datetime.fromisoformat(text))


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("identifiers must not contain NUL characters")
    return value


class Prediction(Frozen):
    """One answer of one model version to one request, as the gateway logged it.

    A request answered by the champion and shadowed by a challenger gives two predictions with the same
    ``request_id``: one ``served``, one ``role="shadow"`` that the user never saw. ``prompt_sha256`` and
    ``completion_sha256`` are filled in from the texts when not given.
    """

    ts: datetime = Field(description="when the request arrived, UTC")
    request_id: str = _ID
    model: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1)
    role: Role
    user_hash: str = Field(max_length=128, description="salted hash of the caller, never the caller itself")
    prompt: str | None = Field(default=None, repr=False)
    prompt_sha256: str = Field(min_length=64, max_length=64)
    completion: str | None = Field(default=None, repr=False)
    completion_sha256: str | None = Field(default=None, min_length=64, max_length=64)
    latency_ms: float = Field(ge=0)
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    outcome: Outcome
    error: str | None = None
    guardrail_flags: list[str] = Field(default_factory=list)
    served: bool = Field(description="the caller received this answer; always False for shadow answers")
    split_revision: int | None = Field(default=None, ge=0, description=(
        "revision of the traffic split that routed the request (a rollout's stage counts only its own split's "
        "requests); None: logged without one (by a gateway older than the column, or by hand): counted by time"))
    pinned: bool = Field(default=False, description=(
        "the caller named the version (model MODEL:vN), so the traffic split did not choose it: a rollout's "
        "comparison of its arms leaves such requests out (a tester hammering the challenger is not its users)"))
    shadow_shed: bool = Field(default=False, description=(
        "the split named a shadow but the gateway sent this request no copy: its copies in flight were at "
        "serve.yaml's shadow_max_in_flight (a slow shadow must not take the served traffic's resources). A shadow "
        "stage compares its arms on the requests that have a copy, so shed ones are left out of both"))

    @model_validator(mode="before")
    @classmethod
    def _fill_hashes(cls, data: object) -> object:
        if isinstance(data, dict):
            for text, digest in (("prompt", "prompt_sha256"), ("completion", "completion_sha256")):
                if data.get(text) is not None and not data.get(digest):
                    data = {**data, digest: sha256_text(data[text])}
        return data

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)

    @field_validator("request_id", "model", "user_hash")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return _no_nul(value)

    @model_validator(mode="after")
    def _shadow_is_not_served(self) -> Prediction:
        if self.role == "shadow" and self.served:
            raise ValueError("a shadow answer is never served to the caller: set served=False")
        return self

    @property
    def ref(self) -> str:
        return f"{self.model}:v{self.version}"


class Feedback(Frozen):
    """The caller's verdict on a request's served answer. A later feedback for a request replaces this one."""

    request_id: str = _ID
    outcome: FeedbackOutcome
    score: float | None = Field(default=None, description="optional graded score, e.g. a rating in [0, 1]")
    ts: datetime

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)

    @field_validator("request_id")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return _no_nul(value)


class LoggedPrediction(Prediction):
    """A prediction read back from the log, with the feedback on its request when it was served.

    Feedback judges the answer the caller saw, so it is attached to served rows only; a shadow row of
    the same request has ``feedback=None`` (pair the rows by ``request_id`` to compare them).
    """

    feedback: FeedbackOutcome | None = None
    feedback_score: float | None = None


def _rate(numerator: int, denominator: int) -> float | None:
    # No data is not a rate of zero: callers must treat None as "not enough data", never as a pass.
    return numerator / denominator if denominator else None


class ByCaller(Frozen):
    """One tested sum of a window seen by caller: what the rollout's tests need to count callers, not requests.

    For a rate ``events / trials`` (e.g. model errors of requests, successes of feedback; or a mean: the ok
    answers' latency sum of their count), over the callers (``user_hash``, the unit the sticky router assigns)
    with at least one trial: how many, the totals, and the caller-clustered variance of the ratio
    (``lifecycle.sequential.clustered_ratio_variance``; None below two callers). All from one read of the log,
    so they describe the same rows.
    """

    callers: int = Field(ge=0)
    events: float = Field(ge=0)
    trials: float = Field(ge=0)
    variance: float | None = Field(default=None, ge=0)


class VersionAggregate(Frozen):
    """What one version did in one role over ``[window_start, window_end)``: counts, tokens, latency.

    Counts are exact integers (the sequential tests need them, not rounded rates). Latency percentiles
    are over the ``ok`` answers only: an error's latency (an instant refusal, a timeout) says nothing
    about serving speed and is already counted in the error rates. Linear interpolation (numpy's
    default): latencies 1, 2, ..., 100 ms give p50 = 50.5, p95 = 95.05, p99 = 99.01. ``None`` when the
    window holds no ``ok`` answer.

    ``latency_sum_ms`` and ``latency_sum_sq_ms2`` (sums of the ``ok`` latencies and of their squares) give
    the mean and variance the anytime-valid latency test needs, and add up across windows. ``None``:
    the producer did not compute them (aggregates built before they existed), never zero.
    Latencies 1, 2, ..., 100 ms: sum 5,050, sum of squares 338,350, mean 50.5, variance 841.67.
    """

    model: str
    version: int
    role: Role
    requests: int
    users: int | None = Field(default=None, description=(
        "distinct callers (user_hash): the unit the sticky router assigns, so the unit the split is checked on"))
    served: int
    ok: int
    model_errors: int
    infra_errors: int
    input_errors: int
    guardrail_flagged: int = Field(description="answers with at least one guardrail flag")
    prompt_tokens: int
    completion_tokens: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    feedback_count: int = Field(description="served answers that received feedback")
    feedback_success: int
    window_start: datetime
    window_end: datetime
    latency_sum_ms: float | None = Field(default=None, ge=0, description="sum of the ok answers' latencies")
    latency_sum_sq_ms2: float | None = Field(default=None, ge=0, description="sum of their squares")
    by_caller: dict[str, ByCaller] | None = Field(default=None, description=(
        "per tested sum (model_errors, infra_errors, guardrail_flagged: of requests; feedback_success: of "
        "feedback_count; latency_sum_ms: of ok), its view by caller; None: not read (the rollout's tests then "
        "assume independent requests)"))

    @property
    def ref(self) -> str:
        return f"{self.model}:v{self.version}"

    @property
    def latency_mean_ms(self) -> float | None:
        """Mean latency of the ``ok`` answers; None without ``ok`` answers or without the sums."""
        return None if self.latency_sum_ms is None or not self.ok else self.latency_sum_ms / self.ok

    @property
    def latency_var_ms2(self) -> float | None:
        """Sample variance (denominator ``ok - 1``) of the ``ok`` latencies; None below two answers.

        From the sums: ``(sum_sq - sum^2 / n) / (n - 1)``, clipped at 0 (rounding of equal latencies).
        Why sums are safe here: float64 rounding over n additions is at most ~n x 1e-16 of ``sum_sq``, so
        for a million requests the variance is off by 1 % only if the spread is below 1e-4 of the mean;
        request latencies spread by 10-100 % of it.
        """
        if self.latency_sum_ms is None or self.latency_sum_sq_ms2 is None or self.ok < 2:
            return None
        return max(0.0, (self.latency_sum_sq_ms2 - self.latency_sum_ms**2 / self.ok) / (self.ok - 1))

    @property
    def ok_rate(self) -> float | None:
        return _rate(self.ok, self.requests)

    @property
    def error_rate(self) -> float | None:
        """Model and infrastructure errors: the version's fault. Input errors are the caller's."""
        return _rate(self.model_errors + self.infra_errors, self.requests)

    @property
    def model_error_rate(self) -> float | None:
        return _rate(self.model_errors, self.requests)

    @property
    def infra_error_rate(self) -> float | None:
        return _rate(self.infra_errors, self.requests)

    @property
    def input_error_rate(self) -> float | None:
        return _rate(self.input_errors, self.requests)

    @property
    def guardrail_rate(self) -> float | None:
        return _rate(self.guardrail_flagged, self.requests)

    @property
    def feedback_success_rate(self) -> float | None:
        return _rate(self.feedback_success, self.feedback_count)

    @property
    def feedback_coverage(self) -> float | None:
        """Share of served answers that got feedback: low coverage makes the success rate fragile."""
        return _rate(self.feedback_count, self.served)
