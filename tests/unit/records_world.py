"""Records of a registry, built with every required field (the tests of non-finite figures change one)."""

from __future__ import annotations

from lifecycle.records import BaseModelRef, EvalReport, Lineage


def lineage(prompt_format: str = "p", **kw) -> Lineage:
    return Lineage(base_model=BaseModelRef(model_id="local://base/b", revision="f" * 64), prompt_format=prompt_format,
                   **kw)


def report(version: str = "m:v1", **kw) -> EvalReport:
    fields = dict(version=version, benchmark="golden", benchmark_sha256="s", n_items=1, exact_match=1.0,
                  per_route_accuracy={"a": 1.0}, malformed_rate=0.0, latency_p50_ms=1, latency_p95_ms=1,
                  latency_p99_ms=1, tokens_per_s=1, peak_memory_mb=1)
    return EvalReport(**(fields | kw))
