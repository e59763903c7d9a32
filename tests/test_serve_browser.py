"""A real browser on the live page: headless Chromium (Debian's `chromium`) opens `dbrt run
--serve`'s page; the screenshot shows the live picture (not a blank tile) and the page's text
shows the metrics it fetched. Skips where Chromium is absent (.ci/run installs it)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess

import numpy as np
import pytest

from engine.triton.ports import free_port

from serve_helpers import dbrt, get, wait_until

pytest.importorskip("prometheus_client", reason="prometheus-client is not installed")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=900,700", "--virtual-time-budget=3000"]


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"  # a fresh one per call
    return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def serving_with_token(tmp_path):
    """(port, process) of `dbrt run --serve` with the token t0+k%en, once it shows frames; skips
    without chromium. A "+" as base64 tokens have: typed into the address, it is a plus, not a
    space; a "%" that starts no escape stays itself (the page's script stopped at it)."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    port = free_port()
    proc = dbrt("run", "--serve", str(port), "--no-video", "--quiet", "-o", str(tmp_path / "out"),
                env={"DBRT_SERVE_TOKEN": "t0+k%en"})
    try:
        wait_until(lambda: json.loads(get(port, "/api/status?token=t0%2Bk%25en")[1])["frames"] >= 2,
                   proc, "frames to show")
    except BaseException:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        raise
    return port, proc


@pytest.mark.slow
def test_headless_chromium_shows_the_live_picture_and_metrics(tmp_path):
    import cv2

    port, proc = serving_with_token(tmp_path)
    url = f"http://127.0.0.1:{port}/?token=t0+k%en"
    try:
        shot = tmp_path / "page.png"
        chromium(tmp_path, f"--screenshot={shot}", url)
        dom = chromium(tmp_path, "--dump-dom", url).stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    image = cv2.imread(str(shot))
    assert image is not None, "no screenshot"
    spread = image.max(axis=2).astype(int) - image.min(axis=2)
    # the page is grey on black; only the camera picture (and its green boxes) is colourful
    assert (spread > 40).mean() > 0.05, "the tile shows no picture"
    assert "FPS" in dom and "infer" in dom and "detections" in dom and ">up<" in dom
    assert "undefined" not in dom  # every field the page shows is one /api/status has
    assert re.search(r'<img alt="stream 0" src="blob:[^"]+"[^>]*data-shown="\d+"', dom), dom[:2000]


@pytest.mark.slow
def test_seven_streams_all_show_their_picture_and_the_status_goes_on(tmp_path):
    """Each tile held an endless MJPEG response: a browser's 6 connections per server went to
    the first 6 tiles, the 7th never showed a picture and the status stopped refreshing."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    if not shutil.which("gst-launch-1.0"):
        pytest.skip("gst-launch-1.0 is not installed (.ci/run installs gstreamer1.0-tools)")

    port = free_port()
    live = "gst:videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=5/1"
    proc = dbrt("run", *[live] * 7, "--serve", str(port), "--serve-fps", "5", "--no-video",
                "--quiet", "--max-side", "160", "-o", str(tmp_path / "out"))
    try:
        wait_until(lambda: json.loads(get(port, "/api/status")[1])["frames"] >= 14, proc,
                   "frames of every stream")
        dom = chromium(tmp_path, "--dump-dom", f"http://127.0.0.1:{port}/").stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    shown = dict(re.findall(r'<img alt="stream (\d+)"[^>]*?data-shown="(\d+)"', dom))
    assert sorted(shown, key=int) == [str(i) for i in range(7)], dom[:2000]
    assert ">up<" in dom and "FPS" in dom


class DevTools:
    """Headless Chromium driven over --remote-debugging-pipe (fd 3 in, fd 4 out, JSON messages
    ended by NUL): what a page's script did (its address, its DOM) can be asked while it runs."""

    def __init__(self, tmp_path, url: str):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # the child's fds 3 and 4: a preexec dup2 (pass_fds keeps the numbers, not the places)
        def fds():
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)
        flags = [f for f in FLAGS if not f.startswith("--virtual-time")]
        self.proc = subprocess.Popen([binary, *flags, f"--user-data-dir={tmp_path / 'devtools'}",
                                      "--remote-debugging-pipe", url], preexec_fn=fds,
                                     close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._next, self._buffer, self._session = 0, b"", None
        page = next(t for t in self._call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self._session = self._call("Target.attachToTarget", targetId=page["targetId"],
                                   flatten=True)["sessionId"]

    def _call(self, method: str, **params) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 16)
                assert chunk, "chromium closed its DevTools pipe"
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(line)
            if answer.get("id") == self._next:
                assert "error" not in answer, answer
                return answer["result"]

    def evaluate(self, expression: str):
        return self._call("Runtime.evaluate", expression=expression)["result"].get("value")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.mark.slow
def test_the_token_leaves_the_address_bar_and_the_page_still_uses_it(tmp_path):
    """Opened as /?token=SECRET, the token stayed in the address bar and the history; once it
    left, a reload of the page got 401 (now the session cookie lets it in)."""
    port, proc = serving_with_token(tmp_path)
    browser = None
    try:
        browser = DevTools(tmp_path, f"http://127.0.0.1:{port}/?token=t0+k%en#tiles")
        shown = "document.querySelector('img[data-shown]') !== null && " \
                "document.getElementById('summary').textContent.includes('FPS')"
        wait_until(lambda: browser.evaluate(shown), proc, "the page to show a picture and status")
        address = browser.evaluate("location.href")
        back = browser.evaluate("history.length")
        browser.evaluate("window.before_reload = true; location.reload()")

        def reloaded_and_shown():
            try:
                return browser.evaluate(f"window.before_reload === undefined && {shown}")
            except AssertionError:  # asked while the old page's context went away
                return False
        wait_until(reloaded_and_shown, proc, "the reloaded page to show a picture and status")
        reloaded = browser.evaluate("location.href")
        script_cookies = browser.evaluate("document.cookie")
    finally:
        if browser is not None:
            browser.close()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert address == f"http://127.0.0.1:{port}/#tiles", address
    assert back == 1  # replaced, not pushed: no entry with the token to go back to
    assert reloaded == address
    assert script_cookies == ""  # HttpOnly: the page's scripts cannot read the token
