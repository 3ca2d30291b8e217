"""Helpers of the reliability suite (fixtures are in conftest.py)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from lifecycle.data import Pair, write_jsonl
from lifecycle.records import Lineage
from lifecycle.status import VersionStatus

REPO = Path(__file__).resolve().parents[2]
MODEL = "intent-router"


def banking_rows(intents: tuple[str, ...], per_intent: int, split: str, skip: int = 0) -> list[Pair]:
    """Rows ``skip .. skip + per_intent`` of each intent of a BANKING77 split, interleaved."""
    by_intent: dict[str, list[Pair]] = {i: [] for i in intents}
    seen: dict[str, int] = dict.fromkeys(intents, 0)
    with (REPO / "data/banking77" / f"{split}.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            intent = row["category"]
            if intent in by_intent:
                seen[intent] += 1
                if seen[intent] > skip and len(by_intent[intent]) < per_intent:
                    by_intent[intent].append(Pair(prompt=row["text"], completion=intent))
    return [rows[k] for k in range(per_intent) for rows in by_intent.values() if k < len(rows)]


def register_base_version(reg, model: str, lineage: Lineage, reason: str) -> int:
    """A version without adapter files (a base model version): what bootstrap registers as v1."""
    version = reg.register(model, staged=None, status=VersionStatus.CANDIDATE, reason=reason, actor="test",
                           lineage=lineage, evals=[], task="banking77")
    return version.number


def start_gateway(**overrides):
    """A gateway on a loopback port (not started: use it as a context manager), and its state."""
    from serving.app import build_app, load_serve_config
    from serving.server import BackgroundServer

    config = load_serve_config(REPO / "configs/serve.yaml").model_copy(update=overrides)
    app, state = build_app(config)
    server = BackgroundServer(app)
    server.state = state
    return server


def serve_config(folder: Path, upstream: FakeUpstream, **overrides) -> Path:
    """configs/serve.yaml with ``upstream`` as the backend (nothing generates in-process), written to ``folder``."""
    config = yaml.safe_load((REPO / "configs/serve.yaml").read_text())
    config.update(upstream={"base_url": upstream.url, "render_prompt": False, "timeout_s": 10}, split_poll_s=0.1,
                  **overrides)
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


SLM = Path(sys.executable).parent / "slm"  # the console script of this environment: the real `slm serve`


def start_serving(config: Path, port: int, log: Path) -> subprocess.Popen:
    """``slm serve`` in its own process (SLM_HOME from this process's environment); returns once /readyz says
    ready."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLM_ADMIN_TOKEN": ""}
    with log.open("ab") as out:
        proc = subprocess.Popen([str(SLM), "serve", "--config", str(config), "--port", str(port)], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "slm serve never became ready"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def write_golden_sets(home: Path) -> dict[str, list[Pair]]:
    """The golden sets plan_retrain expects under SLM_HOME/data (small: only their prompts are read)."""
    golden = {"golden-before": banking_rows(("card_arrival", "exchange_rate"), 20, "test"),
              "golden-drifted": banking_rows(("top_up_failed", "getting_virtual_card"), 20, "test")}
    for name, pairs in golden.items():
        write_jsonl(home / "data" / f"{name}.jsonl", pairs)
    return golden


class FakeUpstream:
    """An OpenAI-compatible upstream on loopback (the two endpoints the gateway's upstream backend calls), its
    behaviour set per model name: ``ok`` answers ``answer``, ``error`` answers 500, ``slow`` waits ``slow_s``
    before answering. ``received`` counts the completions asked of each name: what reached the backend.

    ``with FakeUpstream({...}) as up:`` serves; ``up.stop()`` closes the port (connection refused from then on),
    ``up.start()`` opens it again on the same port. HTTP/1.0, so no kept-alive connection outlives a stop.
    ``answers(model, prompt)``, when given, writes each answer instead of the fixed ``answer`` (versions that
    differ in what they say, not in whether they answer).
    """

    def __init__(self, modes: dict[str, str], answer: str = "card_arrival", slow_s: float = 5.0,
                 answers: Callable[[str, str], str] | None = None) -> None:
        import threading
        from collections import Counter

        self.modes, self.answer, self.slow_s, self.answers = dict(modes), answer, slow_s, answers
        self.received: Counter[str] = Counter()
        self.release = threading.Event()  # set on exit: slow handlers stop waiting
        self.port: int | None = None
        self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default 5 drops connections under 16 callers plus their shadow copies

        self._server = Server(("127.0.0.1", self.port or 0), _upstream_handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="fake-upstream", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.stop()


def _upstream_handler(upstream: FakeUpstream):
    import json
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output quiet
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (timed out) before the answer: what a slow server sees

        def do_GET(self) -> None:
            self._send(200, {"object": "list", "data": [{"id": name, "object": "model"} for name in upstream.modes]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            name = body.get("model")
            upstream.received[name] += 1
            mode = upstream.modes.get(name)
            if mode == "slow":
                upstream.release.wait(upstream.slow_s)
            if mode == "error":
                self._send(500, {"error": {"message": "CUDA error: device-side assert", "type": "server_error"}})
            elif mode is None:
                self._send(404, {"error": {"message": f"model {name} not found", "type": "invalid_request_error"}})
            else:
                text = upstream.answers(name, body.get("prompt", "")) if upstream.answers else upstream.answer
                self._send(200, {"id": "cmpl-fake", "object": "text_completion", "model": name,
                                 "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})

    return Handler
