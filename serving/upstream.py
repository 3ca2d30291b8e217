"""The upstream backend: any OpenAI-compatible server (vLLM with multi-LoRA in production) behind the gateway.

Each registered version maps to a model name the upstream serves — by default its ref (``MODEL:vN``), which
is also what a vLLM started with ``--lora-modules MODEL:vN=PATH`` and another slm gateway both accept. The
gateway keeps routing, logging, guardrails and the breaker; the upstream only generates. Requests skip the
gateway's micro-batcher and go out as they come (:meth:`UpstreamBackend.submit`): the upstream batches
them itself, and one slow reply must not hold back the requests queued behind it. Shadow copies have their own
threads and connections (``shadow=True``): a shadow version slower than the traffic it mirrors fills those, never
the served requests' (the gateway caps the copies in flight at as many threads). Every call has a timeout, and any
transport error or 5xx is a :class:`~serving.resilience.BackendError`, so the gateway answers 502 (504 for
a timeout: :class:`~serving.resilience.BackendTimeout`) and the circuit breaker counts it.

``render_prompt``: True for a raw LLM server (the gateway applies the version's prompt template, asks for
greedy decoding up to the stop string, and parses the completion); False when the upstream is itself an
slm gateway, which renders on its side.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pydantic import Field

from lifecycle.names import VersionRef
from lifecycle.prompting import PromptFormat
from lifecycle.records import Frozen
from serving.backend import Generation
from serving.resilience import BackendError, BackendTimeout


class UpstreamConfig(Frozen):
    base_url: str = Field(description="e.g. http://vllm:8000/v1")
    api_key_env: str | None = Field(default=None, description="environment variable holding the upstream key")
    timeout_s: float = Field(default=10.0, gt=0)
    render_prompt: bool = Field(default=True, description="False when the upstream is another slm gateway")
    model_names: dict[int, str] = Field(default_factory=dict, description="version -> upstream model name "
                                        "(default MODEL:vN)")
    max_concurrency: int = Field(default=32, ge=1)


class UpstreamBackend:
    base_dir = None  # no local weights: versions are checked by name against the upstream's model list

    def __init__(self, config: UpstreamConfig, prompt_format: PromptFormat, api_key: str | None = None,
                 shadow_workers: int = 32) -> None:
        import httpx

        self.config, self.prompt_format = config, prompt_format
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

        def client(connections: int) -> httpx.Client:
            return httpx.Client(base_url=config.base_url.rstrip("/"), timeout=config.timeout_s, headers=headers,
                                limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))

        self._http = client(config.max_concurrency)
        self._pool = ThreadPoolExecutor(max_workers=config.max_concurrency, thread_name_prefix="slm-upstream")
        # Shadow copies: their own threads and connections, so slow ones queue among themselves only.
        self._shadow_http = client(shadow_workers)
        self._shadow_pool = ThreadPoolExecutor(max_workers=shadow_workers, thread_name_prefix="slm-upstream-shadow")
        self._names: dict[str, str] = {}

    def close(self) -> None:
        for pool in (self._pool, self._shadow_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
        self._shadow_http.close()

    def upstream_models(self) -> set[str]:
        return {m["id"] for m in self._request("GET", "/models")["data"]}

    def load_adapter(self, name: str, adapter_dir: Path | None = None) -> None:
        """Make ``name`` (a version ref) routable; the upstream must already serve it."""
        upstream_name = self.config.model_names.get(VersionRef.parse(name).number, name)
        if upstream_name not in self.upstream_models():
            raise BackendError(f"the upstream at {self.config.base_url} does not serve {upstream_name!r}; start it "
                               "with that model or LoRA module, or map the version in upstream.model_names")
        self._names[name] = upstream_name

    def unload_adapter(self, name: str) -> None:
        self._names.pop(name, None)

    def loaded(self) -> list[str]:
        return sorted(self._names)

    def generate(self, prompts: Sequence[str], adapters: Sequence[str | None], max_batch: int = 64) -> list[Generation]:
        unknown = {a for a in adapters if a not in self._names}
        if unknown:
            raise ValueError(f"versions not loaded on the upstream backend: {sorted(map(str, unknown))}")
        start = time.perf_counter()
        results = list(self._pool.map(self._one, prompts, adapters))
        elapsed = (time.perf_counter() - start) * 1000
        return [g.model_copy(update={"latency_ms": elapsed}) for g in results]

    def submit(self, prompt: str, adapter: str, max_tokens: int | None = None, shadow: bool = False) -> Future:
        """One request, sent as soon as a connection is free: the gateway bypasses its micro-batcher for an
        upstream (which batches on its side), so one slow reply never holds back the requests behind it.
        ``shadow``: a shadow copy, sent on the shadow's own threads and connections."""
        if adapter not in self._names:
            raise ValueError(f"version {adapter!r} is not loaded on the upstream backend")
        pool, http = (self._shadow_pool, self._shadow_http) if shadow else (self._pool, self._http)
        return pool.submit(self._timed, prompt, adapter, max_tokens, http)

    def _timed(self, prompt: str, adapter: str, max_tokens: int | None, http) -> Generation:
        start = time.perf_counter()
        gen = self._one(prompt, adapter, max_tokens, http)
        return gen.model_copy(update={"latency_ms": (time.perf_counter() - start) * 1000})

    def _one(self, prompt: str, adapter: str, max_tokens: int | None = None, http=None) -> Generation:
        """One completion, to the format's budget: the whole answer is what is judged and logged, as in process.
        With a client's ``max_tokens`` below the answer's length the upstream is asked once more for that many
        tokens (it has the tokenizer; the gateway does not; greedy, so they are the whole answer's first ones):
        what the client is sent (``clipped``). Asked for that many only, the upstream's cut answer was judged: a
        model error in the version's counts for a client's limit."""
        fmt = self.prompt_format
        text, usage, finish = self._complete(prompt, adapter, fmt.max_new_tokens, http)
        completion = fmt.parse(text) if self.config.render_prompt else text.strip()
        clipped = None
        tokens = usage.get("completion_tokens")
        if max_tokens is not None and max_tokens < fmt.max_new_tokens and (not tokens or tokens > max_tokens):
            short, _, _ = self._complete(prompt, adapter, max_tokens, http)
            cut = fmt.parse(short) if self.config.render_prompt else short.strip()
            clipped = cut if cut != completion else None
        return Generation(text=text, completion=completion, prompt_tokens=usage.get("prompt_tokens", 0),
                          completion_tokens=usage.get("completion_tokens", 0), latency_ms=0.0, adapter=adapter,
                          finish_reason="length" if finish == "length" else "stop", clipped=clipped)

    def _complete(self, prompt: str, adapter: str, max_tokens: int, http) -> tuple[str, dict, str | None]:
        """(text, usage, finish_reason) of one upstream completion of at most ``max_tokens`` tokens."""
        fmt = self.prompt_format
        body: dict[str, object] = {"model": self._names[adapter], "temperature": 0, "max_tokens": max_tokens}
        if self.config.render_prompt:
            body.update(prompt=fmt.render(prompt), stop=[fmt.stop])
        else:
            body.update(prompt=prompt)
        answer = self._request("POST", "/completions", http, json=body)
        choice = answer["choices"][0]
        return choice["text"], answer.get("usage") or {}, choice.get("finish_reason")

    def _request(self, method: str, path: str, http=None, **kwargs) -> dict:
        import httpx

        try:
            response = (http or self._http).request(method, path, **kwargs)
        except httpx.TimeoutException as exc:  # a timeout, not a broken backend: the gateway answers 504
            raise BackendTimeout(f"upstream {self.config.base_url} timed out after {self.config.timeout_s} s") from exc
        except httpx.HTTPError as exc:
            raise BackendError(f"upstream {self.config.base_url} unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise BackendError(f"upstream answered {response.status_code}: {response.text[:200]}")
        if response.status_code >= 400:
            raise BackendError(f"upstream refused the request ({response.status_code}): {response.text[:200]}")
        return response.json()
