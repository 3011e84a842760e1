"""Open a page in a real headless Chromium and check it (DevTools protocol, no Selenium).

:func:`check_page` starts Debian's ``chromium`` (or ``$FLNAS_CHROMIUM``) headless with a
fresh profile, loads the file, and reports: console errors and uncaught exceptions
(``Runtime``), browser log errors such as a resource that failed to load (``Log``),
every request that would leave the machine (``Network``), images that did not decode,
the number of lineage nodes (``[data-lineage-node]``), and a full-page screenshot.

The protocol client is a few lines over ``websockets`` (already installed with
langsmith): a browser-level connection, one page target attached in flat mode.

Used by ``python -m graph.report RUN_DIR --check`` and ``tests/graph/test_report.py``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Flags for a root user in a container: no sandbox, no GPU, nothing phoning home.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--mute-audio")

_PAGE_FACTS = """(() => {
  const imgs = [...document.images];
  return JSON.stringify({
    title: document.title,
    images: imgs.length,
    broken: imgs.filter(i => !i.complete || i.naturalWidth === 0)
                .map(i => i.getAttribute('alt') || i.getAttribute('src') || '?'),
    svgs: document.querySelectorAll('svg').length,
    lineage: document.querySelectorAll('[data-lineage-node]').length,
    text: document.body ? document.body.innerText.length : 0,
    height: Math.ceil(document.documentElement.scrollHeight),
  });
})()"""


class BrowserUnavailable(RuntimeError):
    """No Chromium binary was found, or it did not start."""


def find_chromium() -> str | None:
    """Return the Chromium executable: ``$FLNAS_CHROMIUM``, else the first on PATH."""
    env = os.environ.get("FLNAS_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    """What a real browser saw on a page."""

    url: str
    title: str = ""
    console_errors: list[str] = field(default_factory=list)
    network: list[str] = field(default_factory=list)
    """Requests to anything but ``file:``, ``data:``, ``about:`` or ``blob:``."""
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    svgs: int = 0
    lineage_nodes: int = 0
    text_chars: int = 0
    screenshot: Path | None = None
    expect_lineage: bool = True

    def problems(self) -> list[str]:
        """Everything that makes the page fail the check (empty when it passes)."""
        out = [f"console error: {m}" for m in self.console_errors]
        out += [f"network request: {u}" for u in self.network]
        out += [f"image did not load: {b}" for b in self.broken_images]
        if self.images + self.svgs == 0:
            out.append("no image on the page")
        if self.expect_lineage and self.lineage_nodes == 0:
            out.append("the lineage is empty")
        if self.text_chars == 0:
            out.append("the page has no text")
        return out

    @property
    def ok(self) -> bool:
        """True when :meth:`problems` is empty."""
        return not self.problems()

    def describe(self) -> str:
        """One line of facts, then one line per problem."""
        head = (f"{'PASS' if self.ok else 'FAIL'} {self.url}: '{self.title}', {self.images} "
                f"images, {self.svgs} svg, {self.lineage_nodes} lineage nodes, "
                f"{len(self.console_errors)} console errors"
                + (f"; screenshot {self.screenshot}" if self.screenshot else ""))
        return "\n".join([head, *(f"  - {p}" for p in self.problems())])


class _DevTools:
    """A minimal synchronous DevTools-protocol client over one websocket."""

    def __init__(self, ws: Any, timeout_s: float) -> None:
        self.ws = ws
        self.timeout_s = timeout_s
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:
        """Send a command and wait for its answer; events meanwhile are kept."""
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout_s: float) -> bool:
        """Collect events until ``method`` arrives (True) or the time is up (False)."""
        if any(e.get("method") == method for e in self.events):
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ev = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                return False
            self.events.append(ev)
            if ev.get("method") == method:
                return True
        return False

    def drain(self, quiet_s: float) -> None:
        """Collect events until none arrived for ``quiet_s`` seconds."""
        while True:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=quiet_s)))
            except TimeoutError:
                return


def _start(binary: str, profile: Path, timeout_s: float) -> tuple[subprocess.Popen, str]:
    """Start Chromium with remote debugging on a free port; return it and its ws URL."""
    log = (profile / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--remote-debugging-address=127.0.0.1", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"  # Chromium writes "port\npath" here
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if port_file.is_file():
            lines = port_file.read_text().split()
            if len(lines) >= 2:
                return proc, f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    tail = (profile / "chromium.log").read_text(errors="replace")[-1500:]
    raise BrowserUnavailable(f"{binary} did not start its DevTools endpoint within "
                             f"{timeout_s:.0f}s:\n{tail}")


def _console_text(params: dict[str, Any]) -> str:
    args = params.get("args") or []
    return " ".join(str(a.get("value", a.get("description", ""))) for a in args)


def check_page(path: Path, *, screenshot: Path | None = None, width: int = 1280,
               timeout_s: float = 60.0, expect_lineage: bool = True) -> PageCheck:
    """Load ``path`` in headless Chromium and report what it saw (see :class:`PageCheck`).

    Args:
        path: The HTML file.
        screenshot: Where to save a full-page PNG (optional).
        width: Viewport width in CSS pixels.
        timeout_s: Limit for the browser start and the page load.
        expect_lineage: Count an empty lineage as a problem.

    Raises:
        BrowserUnavailable: No Chromium found, or it failed to start.
    """
    binary = find_chromium()
    if binary is None:
        raise BrowserUnavailable("no Chromium found: install Debian's package (apt-get install "
                                 "chromium) or set FLNAS_CHROMIUM to a Chrome/Chromium binary")
    url = Path(path).resolve().as_uri()
    result = PageCheck(url=url, expect_lineage=expect_lineage)
    profile = Path(tempfile.mkdtemp(prefix="flnas-chromium-"))
    proc = None
    try:
        proc, ws_url = _start(binary, profile, timeout_s)
        from websockets.sync.client import connect

        with connect(ws_url, max_size=None, open_timeout=timeout_s) as ws:
            dt = _DevTools(ws, timeout_s)
            _inspect(dt, result, width, timeout_s, screenshot)
            try:
                dt.send("Browser.close")
            except Exception:  # noqa: BLE001 - the browser may close before it answers
                pass
    finally:
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return result


def _inspect(dt: _DevTools, result: PageCheck, width: int, timeout_s: float,
             screenshot: Path | None) -> None:
    """Open ``result.url`` in a new page target and fill ``result`` with what it shows."""
    target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    sid = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True}
                  )["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        dt.send(f"{domain}.enable", session=sid)
    dt.send("Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=sid)
    dt.send("Page.navigate", {"url": result.url}, session=sid)
    if not dt.wait_for("Page.loadEventFired", timeout_s):
        result.console_errors.append(f"the page did not finish loading in {timeout_s}s")
    dt.drain(0.3)  # late console messages and failed loads
    facts = json.loads(dt.send("Runtime.evaluate", {"expression": _PAGE_FACTS,
                                                    "returnByValue": True},
                               session=sid)["result"]["value"])
    result.title, result.images = facts["title"], facts["images"]
    result.broken_images, result.svgs = facts["broken"], facts["svgs"]
    result.lineage_nodes, result.text_chars = facts["lineage"], facts["text"]
    if screenshot is not None:
        height = max(200, min(int(facts["height"]), 16000))
        shot = dt.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
            session=sid)
        screenshot = Path(screenshot)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        result.screenshot = screenshot
    for ev in dt.events:
        _record_event(result, ev)


def _record_event(result: PageCheck, ev: dict[str, Any]) -> None:
    """Note a console error, an uncaught exception, a log error or a network request."""
    method, params = ev.get("method"), ev.get("params") or {}
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        result.console_errors.append(_console_text(params))
    elif method == "Runtime.exceptionThrown":
        d = params.get("exceptionDetails") or {}
        result.console_errors.append(
            (d.get("exception") or {}).get("description") or d.get("text", "?"))
    elif method == "Log.entryAdded" and (params.get("entry") or {}).get("level") == "error":
        entry = params["entry"]
        result.console_errors.append(f"{entry.get('text')} {entry.get('url') or ''}".strip())
    elif method == "Network.requestWillBeSent":
        req = (params.get("request") or {}).get("url", "")
        if req.split(":", 1)[0] not in ("file", "data", "about", "blob"):
            result.network.append(req)
