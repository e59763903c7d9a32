"""A live stream lost during a run is said as it happens (a service's journal, `docker logs`):
one warning line when it is lost, one when it is back, one when it is given up while the run
goes on; never a line per attempt, never a password. Real streams on 127.0.0.1."""
from __future__ import annotations

import importlib.machinery
import json
import re
import signal
import threading
import warnings

import pytest

from engine.errors import DbrtWarning
from engine.outage_words import duration
from engine.triton.ports import free_port
from pipeline.decoding import SourceFailures
from pipeline.sources import NetworkSource, Reconnect
from pipeline.sources import outages
from pipeline.sources.outages import OutageLog

from media import TsServer, mpegts_bytes, until
from serve_helpers import dbrt, get, wait_until


# FFmpeg's open reads a stream until it knows its format (5 s by default): here a packet
QUICK_PROBE = {"analyzeduration": "100000", "probesize": "32", "fpsprobesize": "0"}


def _status(port: int) -> dict:
    return json.loads(get(port, "/api/status")[1])["streams"][0]


def test_dbrt_run_says_a_stream_lost_and_back_once_each(tmp_path, tiny_onnx):
    """The server is stopped mid-run, refuses several reconnects, and comes back: stderr has
    the loss and the return, and nothing for each refused attempt; the URL's password never."""
    server, serve, out = TsServer(mpegts_bytes(frames=60)).start(), free_port(), tmp_path / "out"
    url = f"http://viewer:s3cret@127.0.0.1:{server.port}/live.ts"
    shown = f"http://127.0.0.1:{server.port}/live.ts"
    proc = dbrt("run", url, "--model", str(tiny_onnx), "--reconnect", "-1", "--reconnect-delay",
                "0.05", "--serve", str(serve), "--no-video", "--quiet", "-o", str(out))
    try:
        wait_until(lambda: _status(serve)["read"] >= 3, proc, "frames of the stream")
        server.stop()
        wait_until(lambda: sum("failed" in e for e in _status(serve)["events"]) >= 3, proc,
                   "reconnect attempts refused while the server is down")
        server.start()
        wait_until(lambda: _status(serve)["reconnects"] >= 1 and
                   _status(serve)["state"] == "up", proc, "the stream back")
        wait_until(lambda: _status(serve)["read"] >= 1, proc, "frames after the reconnect")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        server.stop()
    assert proc.returncode == 143, err
    assert "s3cret" not in err
    warned = [line for line in err.splitlines() if "warning" in line]
    assert len(warned) == 2, err
    assert re.fullmatch(rf"dbrt run: warning: lost {re.escape(shown)} \(.+\): retrying it for "
                        r"ever", warned[0]), warned
    assert re.fullmatch(rf"dbrt run: warning: {re.escape(shown)} is back after \d+\.\d s "
                        r"\([3-9]\d* reconnect attempts\)", warned[1]), warned


def test_a_lost_stream_is_said_to_a_python_caller_each_time(monkeypatch):
    """Through `warnings`, as the start's "is not up" warning: a second outage in the same
    words is said again (Python's default filter shows a text once per place)."""
    monkeypatch.setattr(outages, "QUIET_S", 0.0)
    server = TsServer(mpegts_bytes(frames=60)).start()
    source = NetworkSource(server.url, reconnect=Reconnect(retries=20, delay=0.05,
                                                           max_delay=0.1)).open()
    seen = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            for frame in source:
                seen.append(frame.connection)
                if len(seen) in (3, 6) and source.stats.reconnects < 2:
                    server.stop()
                    until(lambda: source.stats.as_dict()["events"][-1].startswith("reconnect "
                                                                                  "attempt"),
                          "a refused reconnect")
                    server.start()
                if source.stats.reconnects == 2:
                    break
    finally:
        source.close()
        server.stop()
    said = [str(w.message) for w in caught if issubclass(w.category, DbrtWarning)]
    lost = [s for s in said if s.startswith(f"lost {server.url} (")]
    back = [s for s in said if s.startswith(f"{server.url} is back after ")]
    assert len(said) == 4 and len(lost) == 2 and len(back) == 2, said
    assert all(s.endswith("retrying it up to 20 times") for s in lost), said


def _said_in_a_thread_of_dbrts(text: str) -> None:
    """outages.say run as a stream's reader runs it: a thread whose stack is dbrt's alone."""
    reader = threading.Thread(target=outages.say, args=(text,))
    reader.start()
    reader.join()


def test_a_readers_warning_points_at_dbrt_and_a_filter_can_name_it():
    """From a reader thread there is no caller's line: it pointed at threading.py (module
    'threading', which a filter on module='pipeline' cannot name)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        _said_in_a_thread_of_dbrts("lost rtsp://cam/1 (x): retrying it for ever")
        warnings.filterwarnings("ignore", category=DbrtWarning, module=r"pipeline\.")
        _said_in_a_thread_of_dbrts("lost rtsp://cam/2 (x): retrying it for ever")
    assert [str(w.message) for w in caught] == ["lost rtsp://cam/1 (x): retrying it for ever"]
    assert caught[0].filename == outages.__file__ and caught[0].category is DbrtWarning


def test_every_time_honours_a_callers_once_filter_and_any_main_module():
    """`-W once` (a "once" filter) showed the same outage line every time; said from the code
    of `python -c` or stdin (whose __main__'s loader has no source) it raised ImportError."""
    code = compile("for _ in range(3): say('lost rtsp://cam/1 (x)')", "<string>", "exec")
    main = {"__name__": "__main__", "__loader__": importlib.machinery.BuiltinImporter,
            "say": outages.say}
    for action, times in (("default", 3), ("once", 1)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter(action)
            exec(code, main)
        assert [(w.filename, str(w.message)) for w in caught] == \
            [("<string>", "lost rtsp://cam/1 (x)")] * times, action


def test_a_stream_given_up_is_said_when_the_other_sources_go_on():
    """Its error is raised at the run's end, days away maybe: said at once too, unless the
    run ends with it (its error line says it then)."""
    class Fake:
        def __init__(self, state):
            self.state = state

    lost = Fake("failed")
    with pytest.warns(DbrtWarning, match=r"^lost rtsp://cam/1: gave up after 3 reconnect "
                                         r"attempts \(Connection refused\); the other sources "
                                         r"go on$"):
        SourceFailures([lost, Fake("up")]).append(
            RuntimeError("lost rtsp://cam/1: gave up after 3 reconnect attempts (Connection "
                         "refused)"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DbrtWarning)
        alone = SourceFailures([lost, Fake("ended")])
        alone.append(RuntimeError("lost rtsp://cam/1: gave up"))
    assert len(alone) == 1


def test_a_run_ended_by_a_stream_given_up_says_that_stream_not_an_earlier_one():
    """Two cameras: the first is given up while the second goes on (said then), the second is
    given up later and ends the run. The run raised the first one's error again, so its last
    line named a camera whose loss was said long before, and the second's never said why."""
    from engine.errors import SourceError
    from media import FakeDetector, SimulatedCamera
    from pipeline.runner import Pipeline

    first = SimulatedCamera(total=10_000, fps=200, fail_at={3}, refuse=10,
                            reconnect=Reconnect(retries=1, delay=0.01))
    later = SimulatedCamera(total=10_000, fps=200, fail_at={60}, refuse=10,
                            reconnect=Reconnect(retries=1, delay=0.01))
    first.name, later.name = "cam-first", "cam-later"
    with pytest.warns(DbrtWarning) as caught, pytest.raises(SourceError) as ended:
        Pipeline([first, later], FakeDetector()).run()
    assert str(ended.value).startswith("lost cam-later: gave up after 1 reconnect attempt")
    given_up = [str(w.message) for w in caught if "gave up" in str(w.message)]
    assert len(given_up) == 1 and given_up[0].startswith("lost cam-first: gave up"), given_up


def test_a_silent_host_counts_its_first_connect_attempt_as_it_begins(monkeypatch):
    """/api/status and report.json showed 0 attempts for the 30 s FFmpeg's open waited."""
    from pipeline.sources import live

    monkeypatch.setattr(live, "FIRST_CONNECT_WAIT_S", 0.1)
    server = TsServer(mpegts_bytes(frames=60))
    server.pause()  # answers the request, sends nothing
    server.start()
    try:
        with pytest.warns(DbrtWarning, match=r"is not up \(no answer within 0\.1 s\)"):
            source = NetworkSource(server.url, reconnect=Reconnect(retries=None)).open()
        assert source.state == "connecting"
        assert source.stats.as_dict()["connect_attempts"] == 1
    finally:
        server.resume()  # its connect returns: the close does not wait for it
        source.close()
        server.stop()


@pytest.mark.parametrize("seconds, text", [(4.26, "4.3 s"), (125, "2 min 5 s"),
                                           (7385, "2 h 3 min")])
def test_how_long_an_outage_lasted_reads(seconds, text):
    assert duration(seconds) == text


def test_a_flapping_stream_says_a_loss_a_minute_at_most(monkeypatch):
    """A stream lost every few seconds (a timeout after each frame) said a line pair each time;
    the losses between are counted in the next line, and a loss that lasts is said late."""
    now, said = [0.0], []
    monkeypatch.setattr(outages, "say", said.append)
    log = OutageLog("rtsp://cam/1", clock=lambda: now[0])

    def outage(at, lasts, attempts=1):
        now[0] = at
        log.lost("timed out", None)
        for number in range(1, attempts + 1):
            now[0] += lasts / attempts
            log.attempt(number)
        log.over()

    outage(0, 2)
    outage(10, 2)
    outage(20, 2)
    outage(61, 3)
    outage(70, 100, attempts=10)  # said once a minute has passed since the last line
    assert said == [
        "lost rtsp://cam/1 (timed out): retrying it for ever",
        "rtsp://cam/1 is back after 2.0 s (1 reconnect attempt)",
        "lost rtsp://cam/1 (timed out): retrying it for ever (lost 2 more times in the "
        "1 min 1 s before, not said one by one)",
        "rtsp://cam/1 is back after 3.0 s (1 reconnect attempt)",
        "lost rtsp://cam/1 1 min 0 s ago (timed out): retrying it for ever",
        "rtsp://cam/1 is back after 1 min 40 s (10 reconnect attempts)"]


def test_a_stream_slower_than_the_read_timeout_is_said_once():
    """Frames every 0.5 s, reads that wait 0.3 s: each wait for the next frame timed out and
    reconnected, for ever and without a word."""
    payload = mpegts_bytes(frames=20, fps=2)
    server = TsServer(payload, rate=len(payload) / 10).start()  # paced at the clip's rate
    source = NetworkSource(server.url, timeout=0.3, options=QUICK_PROBE,
                           reconnect=Reconnect(retries=None, delay=0.01))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in source:
                if source.stats.reconnects >= 2:
                    break
    finally:
        source.close()
        server.stop()
    slow = [str(w.message) for w in caught if "sends a frame every" in str(w.message)]
    assert slow == [f"{server.url} sends a frame every 0.5 s, longer than a read waits (0.3 s): "
                    "each wait for its next frame times out and reconnects; give a longer "
                    "--source-timeout (source_timeout)"]
