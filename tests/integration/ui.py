"""Look at the Prefect UI the way a person does: headless Chromium loads its pages, and we read what they show.

Why a browser and not the API: the question is whether a person opening the UI *sees* the deployments, the
flow runs, the artifacts and the typed run forms — the UI is a single-page app that draws everything in
JavaScript from the API, so only a browser that runs it can answer (``--dump-dom`` with a virtual-time
budget happens to work too, but it guesses when rendering is done; here we poll until the text is there).

Chromium is driven over the DevTools protocol (a websocket; ``websockets`` is already installed as a
dependency of prefect): one browser and one tab for all the pages, ``document.body.innerText`` polled until
every expected string shows up, and a PNG screenshot of each page. Waits are generous and never asserted
on: a busy 2-core machine renders slowly, which is not a failure.

Prefect 3.9 serves two UIs: the new one under ``/v2`` (what ``http://host:port/`` redirects a fresh browser
to) and the older one at the root. Both use the same routes after their prefix; ``ui_prefix`` picks one.

Use it against any running server, e.g. the stack of ``slm demo --smoke --keep``::

    from tests.integration.ui import check_ui
    check_ui("http://127.0.0.1:4200", ["retrain", "rollout", "monitor", "decommission", "bootstrap"],
             expect_flow_run_names=["sassy-lemur"], expect_artifact_keys=["bootstrap"],
             run_forms={"retrain": ["retrain config (YAML)"]}, screenshot_dir="ui-shots")
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from websockets.sync.client import connect

INSTALL_HINT = ("headless Chromium is needed to check the Prefect UI and none is on PATH. Install it with "
                "`bash scripts/ensure-chromium.sh` as root (what `make test` and CI do), or "
                "`sudo apt-get install -y --no-install-recommends chromium`")

# The machines have no network: every flag that would make Chromium phone home is off, so it neither waits
# on a timeout nor logs errors. --no-sandbox because CI runs as root; --disable-dev-shm-usage because a
# container's /dev/shm is small and a renderer that runs out of it crashes the tab.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--no-default-browser-check",
                  "--disable-dev-shm-usage", "--disable-extensions", "--disable-sync", "--mute-audio",
                  "--hide-scrollbars")
# A command Chromium leaves unanswered this long is stuck, not slow (the slowest seen under load: ~2 s).
CALL_TIMEOUT_S = 60.0
UI_PREFIX = "/v2"  # the UI a person gets by default in Prefect 3.9


class UICheckFailed(AssertionError):
    """The UI did not show what was expected in time; the message says what was missing and where the
    screenshot of the page as it was is."""


def find_chromium() -> str:
    """The Chromium binary on PATH, or a failure saying how to install one (CI never skips this test)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    raise UICheckFailed(INSTALL_HINT)


class Chromium:
    """One headless Chromium with one tab, driven over the DevTools protocol; a context manager.

    A fresh ``--user-data-dir`` each time: no state leaks between runs, and two runs never fight over a
    profile lock. ``--remote-debugging-port=0`` lets Chromium pick a free port and write it to the profile's
    ``DevToolsActivePort`` file, so there is no race for a port.
    """

    def __init__(self, *, width: int = 1440, height: int = 2000, start_timeout_s: float = 60.0) -> None:
        self.binary = find_chromium()
        self.size = (width, height)
        self.start_timeout_s = start_timeout_s
        self._ids = itertools.count(1)

    def __enter__(self) -> Chromium:
        self.profile = Path(tempfile.mkdtemp(prefix="slm-chromium-"))
        self.log = self.profile.parent / f"{self.profile.name}.log"
        argv = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
                f"--window-size={self.size[0]},{self.size[1]}", "about:blank"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.ws = connect(self._page_websocket_url(), max_size=None, open_timeout=30)
            self._call("Page.enable")
            self._call("Runtime.enable")
            # A tall viewport, so one plain screenshot shows a whole run form. Not captureBeyondViewport: under
            # load it left Page.captureScreenshot unanswered in about half the runs of the older UI.
            self._call("Emulation.setDeviceMetricsOverride", width=self.size[0], height=self.size[1],
                       deviceScaleFactor=1, mobile=False)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        # SIGTERM to the browser alone: it stops and reaps its own helpers (renderer, GPU, zygote). Then SIGKILL
        # to its process group (its own session, started above), for any helper a stuck browser left behind.
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
        self.log.unlink(missing_ok=True)

    def _page_websocket_url(self) -> str:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.read_text(errors="replace")[-2000:]
                raise UICheckFailed(f"chromium exited with code {self.proc.returncode}:\n{log}")
            if port_file.is_file() and port_file.read_text().strip():
                port = port_file.read_text().split()[0]
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.2)
        raise UICheckFailed(f"chromium did not open its DevTools port within {self.start_timeout_s:.0f} s")

    def _call(self, method: str, **params: object) -> dict:
        """Send one DevTools command and return its result; events that arrive meanwhile are dropped."""
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            try:
                message = json.loads(self.ws.recv(timeout=CALL_TIMEOUT_S))
            except TimeoutError:
                raise UICheckFailed(f"chromium did not answer {method} within {CALL_TIMEOUT_S:.0f} s") from None
            if message.get("id") == call_id:
                if "error" in message:
                    raise UICheckFailed(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str) -> None:
        """Navigate, and return once the new document is the one we talk to: its text is then never the
        previous page's (which may well contain the next page's expected strings, e.g. a deployment name)."""
        previous = self._evaluate("performance.timeOrigin")
        if "loaderId" not in self._call("Page.navigate", url=url):
            return  # a same-document navigation (only the #fragment changed): there is no new document
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while self._evaluate("performance.timeOrigin") == previous:
            if time.monotonic() > deadline:
                raise UICheckFailed(f"chromium did not leave the previous page for {url}")
            time.sleep(0.1)

    def _evaluate(self, expression: str) -> object:
        result = self._call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def text(self) -> str:
        """What the page shows as text now (``innerText``: rendered, visible text, not markup)."""
        return self._evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, expected: Iterable[str], timeout_s: float) -> tuple[str, list[str]]:
        """Poll the page until it shows every expected string; return (text, the strings still missing)."""
        expected = list(expected)
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            missing = [s for s in expected if s not in text]
            if not missing or time.monotonic() > deadline:
                return text, missing
            time.sleep(0.5)

    def screenshot(self, path: Path) -> Path:
        data = self._call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


@dataclass(frozen=True)
class PageSeen:
    """One page as the browser showed it."""

    name: str
    url: str
    text: str
    screenshot: Path | None


def deployment_ids(api_url: str, names: Iterable[str]) -> dict[str, str]:
    """Deployment name -> id, from the API: the run form's route needs the id, which changes per server."""
    names = list(names)
    response = httpx.post(f"{api_url}/deployments/filter", timeout=30,
                          json={"deployments": {"name": {"any_": names}}})
    response.raise_for_status()
    found = {d["name"]: d["id"] for d in response.json()}
    missing = [n for n in names if n not in found]
    if missing:
        raise UICheckFailed(f"no deployment named {missing} on {api_url}")
    return found


def check_ui(ui_url: str, expect_deployments: Iterable[str], *, expect_flow_run_names: Iterable[str] = (),
             expect_artifact_keys: Iterable[str] = (), run_forms: Mapping[str, Iterable[str]] | None = None,
             screenshot_dir: str | Path | None = None, api_url: str | None = None, ui_prefix: str = UI_PREFIX,
             timeout_s: float = 120.0) -> list[PageSeen]:
    """Load the Prefect UI's pages in headless Chromium and check each shows what it should.

    - ``/deployments`` lists every name in ``expect_deployments``;
    - ``/runs`` lists every flow run in ``expect_flow_run_names``;
    - ``/artifacts`` lists every key in ``expect_artifact_keys``;
    - for each ``deployment -> strings`` in ``run_forms``, its custom run form
      (``/deployments/deployment/<id>/run``) shows those strings — e.g. the parameters' descriptions.

    A page is checked only if it has something to expect. Each page is screenshotted into
    ``screenshot_dir`` (``ui-<page>.png``) when given. ``api_url`` defaults to ``<ui_url>/api`` (how
    ``slm up`` serves it). Raises UICheckFailed naming what was missing; returns the pages seen.
    """
    ui_url = ui_url.rstrip("/")
    api_url = (api_url or f"{ui_url}/api").rstrip("/")
    base = f"{ui_url}{ui_prefix}"
    pages: list[tuple[str, str, list[str]]] = [
        (name, f"{base}/{route}", expected) for name, route, expected in (
            ("deployments", "deployments", list(expect_deployments)),
            ("runs", "runs", list(expect_flow_run_names)),
            ("artifacts", "artifacts", list(expect_artifact_keys))) if expected]
    forms = {name: list(strings) for name, strings in (run_forms or {}).items()}
    ids = deployment_ids(api_url, forms) if forms else {}
    for name, deployment_id in ids.items():
        pages.append((f"run-form-{name}", f"{base}/deployments/deployment/{deployment_id}/run", forms[name]))

    shots = Path(screenshot_dir) if screenshot_dir is not None else None
    seen, failures = [], []
    with Chromium() as browser:
        for name, url, expected in pages:
            browser.open(url)
            text, missing = browser.wait_for_text(expected, timeout_s)
            shot = browser.screenshot(shots / f"ui-{_slug(name)}.png") if shots is not None else None
            seen.append(PageSeen(name=name, url=url, text=text, screenshot=shot))
            if missing:
                failures.append(f"{url} did not show {missing} within {timeout_s:.0f} s"
                                + (f" (screenshot {shot})" if shot else "") + f"; it showed:\n{text[:1500]}")
    if failures:
        raise UICheckFailed("\n\n".join(failures))
    return seen


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
