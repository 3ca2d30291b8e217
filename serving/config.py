"""``configs/serve.yaml``: how the gateway serves. Secrets (admin token, API keys) come from the
environment at startup, never from this file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from lifecycle.records import Frozen
from serving.batcher import REJOIN_GAP_S, REJOIN_MAX_S, REJOIN_SHARE
from serving.guardrails import GuardrailPolicy
from serving.upstream import UpstreamConfig


class ServeConfig(Frozen):
    model: str = Field(default="intent-router", description="the model this gateway serves")
    task: Path = Field(default=Path("configs/task.yaml"), description="task: its labels are the allowed outputs")
    max_prompt_chars: int = Field(default=2000, ge=1, description="longer prompts are refused with 400")
    max_tokens_limit: int = Field(default=4096, ge=1, description="largest max_tokens a client may ask for (answers "
                                  "are the prompt format's budget whatever it asks: clients' defaults, such as "
                                  "LangChain's 256, must pass)")
    max_body_bytes: int = Field(default=65_536, ge=1024, description="larger request bodies get 413")
    max_batch: int = Field(default=32, ge=1, description="requests generated together")
    max_wait_ms: float = Field(default=0.0, ge=0, description="extra wait for company before a batch runs")
    rejoin_share: float = Field(default=REJOIN_SHARE, ge=0, le=1, description=(
        "after a batch, the next one waits up to this share of its wall time for the callers just answered to "
        "send again (serving.batcher: closed-loop callers otherwise split into a lone batch and a big one; it stops "
        "itself under independent arrivals, after 3 waits in a row that bring under half the rows); 0: off"))
    rejoin_max_ms: float = Field(default=REJOIN_MAX_S * 1000, ge=0, description="the longest that rejoin wait may be")
    rejoin_gap_ms: float = Field(default=REJOIN_GAP_S * 1000, gt=0, description=(
        "the rejoin wait ends once no request came for this long (the callers coming back arrive in a burst)"))
    request_timeout_s: float = Field(default=10.0, gt=0, description="a backend call slower than this is a 504")
    shadow_max_in_flight: int = Field(default=32, ge=1, description=(
        "shadow copies generating at once; a request that comes while this many are in flight is served without "
        "a copy (shed: counted in slm_shadow_shed, marked in the prediction log), so a shadow slower than the "
        "traffic it mirrors cannot pile up copies: on an upstream they have their own threads and connections (this "
        "many), in process they share the micro-batcher's batches with served requests, at most this many rows"))
    split_poll_s: float = Field(default=0.25, gt=0, description="how often replicas check the shared split")
    breaker_failures: int = Field(default=5, ge=1,
                                  description="consecutive infra failures of one version that open its circuit")
    breaker_reset_s: float = Field(default=10.0, gt=0, description="open circuit waits this long, then probes")
    store_text: bool = Field(default=True, description="False: the prediction log keeps hashes, not text")
    log_prompt_pii: Literal["redact", "keep"] = Field(
        default="redact", description="personal data in a prompt (lifecycle.pii) is redacted in the prediction "
        "log's copy (its sha256 is still the received text's); keep: logged as received")
    torch_threads: int = Field(default=1, ge=1)
    price_per_hour: float = Field(default=0.0, ge=0, description="what this machine costs an hour (any currency): "
                                  "turns each version's compute share into cost per 1,000 requests")
    guardrails: GuardrailPolicy = Field(default_factory=GuardrailPolicy, description="checks on every output")
    upstream: UpstreamConfig | None = Field(default=None, description="serve through an OpenAI-compatible "
                                            "server (vLLM) instead of the in-process backend")
