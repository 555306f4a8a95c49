"""Open an HTML page in headless Chromium and report broken images and script errors.

Used by ``lanet report --check`` and the tests. Chromium is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: JSON messages separated by NUL bytes on file descriptors 3 and 4), so nothing
beyond the standard library and a Chromium binary is needed, and no network port is opened. The browser
runs with a fresh profile and without background networking; the page is loaded from a ``file://`` URL.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LanetError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio")
_BROKEN_IMAGES_JS = ("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                     ".map(i => i.getAttribute('src'))")


def find_browser() -> str | None:
    """``$LANET_CHROMIUM``, else the first Chromium/Chrome on ``PATH``; None where there is none."""
    env = os.environ.get("LANET_CHROMIUM", "")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    """What the browser saw: image ``src`` values that did not load, and script/console/resource errors."""

    url: str
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.broken_images and not self.errors

    def text(self) -> str:
        if self.ok:
            return f"{self.url}: {self.images} image(s), all loaded; no script errors"
        parts = []
        if self.broken_images:
            parts.append(f"{len(self.broken_images)} broken image(s): {', '.join(self.broken_images)}")
        if self.errors:
            parts.append(f"{len(self.errors)} error(s): {' | '.join(self.errors)}")
        return f"{self.url}: " + "; ".join(parts)


class _DevTools:
    """The DevTools protocol over Chromium's debugging pipe."""

    def __init__(self, browser: str, profile: str):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def child_fds() -> None:  # runs in the child before exec: Chromium reads fd 3 and writes fd 4
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)  # above 4, so neither dup2 below clobbers the other
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)  # dup2 makes the copies inheritable (pipes are created close-on-exec)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(  # noqa: S603 - a browser binary chosen by find_browser
            [browser, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, close_fds=False)  # fds 3 and 4 must survive exec
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        return self._next

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LanetError("the browser did not answer in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    raise LanetError("the browser closed its debugging pipe (did it crash at start-up?)")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             deadline: float = 0.0) -> dict[str, Any]:
        want = self.send(method, params, session)
        while True:
            msg = self._read(deadline)
            if msg.get("id") == want:
                if "error" in msg:
                    raise LanetError(f"browser: {method} failed: {msg['error'].get('message')}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, deadline: float) -> dict[str, Any]:
        for msg in self.events:
            if msg.get("method") == method:
                return msg
        while True:
            msg = self._read(deadline)
            self.events.append(msg)
            if msg.get("method") == method:
                return msg


def _error_text(ev: dict[str, Any]) -> str | None:
    """A one-line description of an error event, or None for events that are not errors."""
    method, p = ev.get("method"), ev.get("params", {})
    if method == "Runtime.exceptionThrown":
        d = p.get("exceptionDetails", {})
        desc = (d.get("exception") or {}).get("description") or d.get("text", "exception")
        return f"uncaught {desc.splitlines()[0]} ({d.get('url', '')}:{d.get('lineNumber', 0) + 1})"
    if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
        return f"console.{p.get('type')}: {args}"
    if method == "Log.entryAdded":
        e = p.get("entry", {})
        if e.get("level") == "error":
            return f"{e.get('source', 'log')}: {e.get('text', '')} {e.get('url', '')}".strip()
    return None


def check_page(path: str | Path, timeout: float = 60.0, browser: str | None = None) -> PageCheck:
    """Load ``path`` in headless Chromium; return the images that failed to load and every error it logged.

    Raises :class:`LanetError` when no browser is found (see :func:`find_browser`) or it does not respond.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise LanetError(f"page not found: {path}")
    browser = browser or find_browser()
    if not browser:
        raise LanetError("no Chromium found (install chromium, or set LANET_CHROMIUM to the browser binary)")
    url = path.as_uri()
    result = PageCheck(url)
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="lanet-chromium-") as profile:
        dt = _DevTools(browser, profile)
        try:
            target = dt.call("Target.createTarget", {"url": "about:blank"}, deadline=deadline)["targetId"]
            session = dt.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                              deadline=deadline)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                dt.call(f"{domain}.enable", session=session, deadline=deadline)
            nav = dt.call("Page.navigate", {"url": url}, session=session, deadline=deadline)
            if nav.get("errorText"):
                result.errors.append(f"navigation: {nav['errorText']}")
            else:
                dt.wait_event("Page.loadEventFired", deadline)
            time.sleep(0.2)  # let errors raised by load handlers arrive
            found = dt.call("Runtime.evaluate", {"expression": f"[document.images.length, {_BROKEN_IMAGES_JS}]",
                                                 "returnByValue": True}, session=session, deadline=deadline)
            count, broken = found.get("result", {}).get("value", [0, []])
            result.images, result.broken_images = int(count), [str(b) for b in broken]
        finally:
            dt.close()
    for ev in dt.events:
        text = _error_text(ev)
        if text and text not in result.errors:
            result.errors.append(text)
    return result
