"""Prometheus metrics of the gateway, per model version and role. One registry per app instance, so
several gateways in one process (tests, benchmarks) do not share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Buckets in seconds: batched CPU generation sits between 20 ms and 1 s; the tail matters for canaries.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
# Rows a batch, up to the batcher's largest (serve.yaml max_batch 32; 64 for a raised one).
BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "version", "role")
        self.requests = Counter("slm_requests", "Requests answered, by version and role", labels,
                                registry=self.registry)
        self.errors = Counter("slm_errors", "Errors by category: model, infra, input, internal (a gateway bug: an "
                              "answer no route gave)", labels + ("category",),
                              registry=self.registry)
        self.latency = Histogram("slm_request_latency_seconds", "Time to answer a request", labels,
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("slm_tokens", "Tokens in and out", labels + ("direction",), registry=self.registry)
        self.guardrail_flags = Counter("slm_guardrail_flags", "Outputs flagged by a guardrail",
                                       labels + ("flag",), registry=self.registry)
        self.split = Gauge("slm_traffic_percent", "Traffic share per live role", ("model", "role", "version"),
                           registry=self.registry)
        self.breaker_open = Gauge("slm_backend_circuit_open", "1 while the version's backend circuit is open",
                                  ("model", "version"), registry=self.registry)
        self.log_pending = Gauge("slm_prediction_log_pending", "Predictions queued, not yet stored",
                                 registry=self.registry)
        self.log_dropped = Counter("slm_prediction_log_dropped", "Predictions the log could not take (full or "
                                   "closed); each is also logged as an error", registry=self.registry)
        self.compute = Counter("slm_compute_seconds", "Backend wall time, each batch shared equally by its rows",
                               ("model", "version"), registry=self.registry)
        self.cpu = Counter("slm_cpu_seconds", "Backend CPU time of the generating thread, shared by rows",
                           ("model", "version"), registry=self.registry)
        self.cost = Gauge("slm_cost_per_1k_requests", "Hardware price per hour x compute share, per 1,000 requests",
                          ("model", "version"), registry=self.registry)
        self.peak_memory = Gauge("slm_process_peak_memory_mb", "Peak memory of the serving process (CUDA peak on "
                                 "a GPU)", registry=self.registry)
        self.batch_rows = Histogram("slm_batch_rows", "Rows a generated batch held (callers split into a lone "
                                    "batch and a big one show as two humps)", buckets=BATCH_ROWS_BUCKETS,
                                    registry=self.registry)
        self.rejoin_waits = Counter("slm_batch_rejoin_waits", "The micro-batcher's rejoin wait, per batch: fruitful "
                                    "(the callers came back), fruitless, or suspended (skipped after fruitless "
                                    "ones)", ("outcome",), registry=self.registry)
        self.shadow_shed = Counter("slm_shadow_shed", "Requests served without their shadow copy: the copies in "
                                   "flight were at serve.yaml's shadow_max_in_flight", ("model", "version"),
                                   registry=self.registry)
        self.shadow_in_flight = Gauge("slm_shadow_in_flight", "Shadow copies generating now", registry=self.registry)
        self.rejected = Counter("slm_rejected_requests", "Requests refused before routing (bad input, auth)",
                                ("reason",), registry=self.registry)

    def reject(self, reason: str, model: str = "-") -> None:
        """A request refused before any version answered: an input error, with no version to blame."""
        self.rejected.labels(reason=reason).inc()
        self.errors.labels(model, "none", "none", "input").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
