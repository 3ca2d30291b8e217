"""Simulated users for a running gateway: labelled prompts sent with the real ``openai`` client, and
feedback from each user on the answer they got (success when the route is the labelled one).

Used by the demo and the live rollout tests. Users are sticky (``x-user-id``), so the gateway's canary
split assigns each simulated user to one side, as it would a real one. Seeded: the same seed sends the
same prompts from the same users in the same order on each thread.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Sequence

import httpx

from lifecycle.data import Pair


class LoadGenerator:
    """``with LoadGenerator(url, pairs): ...`` sends until the block ends (or :meth:`stop`)."""

    def __init__(self, base_url: str, pairs: Sequence[Pair], *, model: str, users: int = 500, threads: int = 2,
                 seed: int = 0, api_key: str = "none", feedback: bool = True, keep_ids: bool = False) -> None:
        if not pairs:
            raise ValueError("the load generator needs at least one labelled prompt")
        self.base_url, self.pairs, self.model = base_url.rstrip("/"), list(pairs), model
        self.users, self.seed, self.api_key, self.feedback = users, seed, api_key, feedback
        self.counts: Counter[str] = Counter()
        # keep_ids: what each answered request was told, by request id — (version served, right?) — for
        # checking the prediction log against what the callers saw.
        self.answered: dict[str, tuple[str, bool]] | None = {} if keep_ids else None
        self.error_samples: list[str] = []  # the first few failures, as the caller saw them
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._go = threading.Event()
        self._go.set()
        self._threads = [threading.Thread(target=self._run, args=(k,), name=f"slm-loadgen-{k}", daemon=True)
                         for k in range(threads)]

    def start(self) -> LoadGenerator:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._halt.set()
        self._go.set()
        for t in self._threads:
            t.join(timeout=timeout)

    def pause(self) -> None:
        """Hold every user after their current request (e.g. while training shares a laptop's cores)."""
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    def shift(self, pairs: Sequence[Pair]) -> None:
        """From now on ask these prompts: the world the users live in changed (the demo's drift)."""
        if not pairs:
            raise ValueError("the load generator needs at least one labelled prompt")
        self.pairs = list(pairs)  # one reference swap: each thread picks its next prompt from the new list

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def _run(self, k: int) -> None:
        from openai import APIError, OpenAI

        rng = random.Random(self.seed * 1000 + k)
        api = OpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key, max_retries=0, timeout=60)
        http = httpx.Client(base_url=self.base_url, headers={"authorization": f"Bearer {self.api_key}"}, timeout=30)
        try:
            while not self._halt.is_set():
                if not self._go.wait(timeout=0.5):
                    continue
                pair = rng.choice(self.pairs)
                user = f"user-{rng.randrange(self.users)}"
                try:
                    raw = api.completions.with_raw_response.create(
                        model=self.model, prompt=pair.prompt, extra_headers={"x-user-id": user})
                except APIError as exc:
                    self._count("errors")
                    if len(self.error_samples) < 20:
                        self.error_samples.append(f"{type(exc).__name__}: {exc}"[:500])
                    continue
                answer = raw.parse().choices[0].text.strip()
                right = answer == pair.completion
                version = raw.headers.get("x-slm-version", "?")
                self._count("requests")
                self._count(f"served:{version}")
                if self.answered is not None:
                    self.answered[raw.headers["x-request-id"]] = (version, right)
                if self.feedback:
                    try:
                        sent = http.post("/v1/feedback", json={"request_id": raw.headers["x-request-id"],
                                                               "outcome": "success" if right else "failure"})
                        if sent.status_code != 200:
                            self._count("feedback_errors")
                    except httpx.TransportError:
                        self._count("feedback_errors")
        finally:
            api.close()
            http.close()
