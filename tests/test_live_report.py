"""report.json while a run goes on: `dbrt run` rewrites it every --report-every seconds (and at
each new segment), atomically and marked "running": true, so that a service killed outright
(SIGKILL, an out-of-memory kill) leaves a complete, recent report; the final one replaces it.
Real `dbrt run` processes on a loopback MPEG-TS stream."""
from __future__ import annotations

import json
import signal
import threading
import warnings

import pytest

from pipeline import live_report
from pipeline.live_report import LiveReport
from pipeline.metrics import Metrics, write_report

from media import TsServer, mpegts_bytes, until, write_video
from serve_helpers import dbrt, wait_until


def _report(path):
    """The report at `path`, or None while there is none (any file there must be whole JSON)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return json.loads(text)


def _live_run(out, url, tiny_onnx, *flags):
    return dbrt("run", url, "--model", str(tiny_onnx), "--no-video", "--quiet",
                "--report-every", "0.1", "-o", str(out), *flags)


def _running_report(path, proc):
    """Wait for a report of the run going on that counts frames written."""
    def running():
        report = _report(path)
        return report if report and report["running"] and report["frames"] > 0 else None

    return wait_until(running, proc, "a report written while the run goes on")


def test_a_run_killed_outright_leaves_its_recent_report(tmp_path, tiny_onnx):
    out, server = tmp_path / "out", TsServer(mpegts_bytes(frames=60)).start()
    proc = _live_run(out, server.url, tiny_onnx)
    try:
        first = _running_report(out / "report.json", proc)
        # rewritten as it goes: a later one counts more frames
        wait_until(lambda: _report(out / "report.json")["frames"] > first["frames"], proc,
                   "a newer report")
    finally:
        proc.kill()  # SIGKILL: no handler runs, no final report
        proc.communicate(timeout=30)
        server.stop()
    assert proc.returncode == -signal.SIGKILL
    report = json.loads((out / "report.json").read_text())  # whole, parseable
    assert report["running"] is True and report["frames"] > first["frames"]
    assert report["lost"] == 0  # frames on their way are not lost while the run goes on
    assert report["outputs"]["jsonl"] == str(out / "detections.jsonl")
    assert report["sources"][0]["name"] == server.url and report["sources"][0]["live"]


def test_the_final_report_replaces_the_running_one(tmp_path, tiny_onnx):
    out, server = tmp_path / "out", TsServer(mpegts_bytes(frames=60)).start()
    proc = _live_run(out, server.url, tiny_onnx)
    try:
        _running_report(out / "report.json", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        server.stop()
    assert proc.returncode == 143, err
    report = json.loads((out / "report.json").read_text())
    assert report["running"] is False and report["interrupted"] is True
    assert sorted(p.name for p in out.iterdir()) == ["detections.jsonl", "report.json"]


def test_report_every_zero_writes_the_report_only_at_the_end(tmp_path, tiny_onnx):
    video, out = write_video(tmp_path / "clip.mp4", frames=6), tmp_path / "out"
    proc = dbrt("run", str(video), "--model", str(tiny_onnx), "--no-video", "--quiet",
                "--report-every", "0", "-o", str(out))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["running"] is False and report["frames"] == 6


def test_a_negative_report_every_is_one_line_naming_the_flag(tmp_path):
    proc = dbrt("run", "--report-every", "-1", "-o", str(tmp_path / "out"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "--report-every" in err.strip().splitlines()[-1] and "Traceback" not in err


def test_write_report_replaces_the_file_whole_or_not_at_all(tmp_path):
    """A report that fails half-way (here an object JSON cannot hold, as a full disk would)
    left the earlier report cut short; now it stays as it was, and no temporary file stays."""
    path = tmp_path / "report.json"
    write_report(dict(frames=1, running=True), path)
    with pytest.raises(TypeError):
        write_report(dict(frames=2, sources=[{"fps": 25.0}, object()]), path)
    assert json.loads(path.read_text()) == dict(frames=1, running=True)
    write_report(dict(frames=3, running=False), path)
    assert json.loads(path.read_text()) == dict(frames=3, running=False)
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_write_report_is_on_the_disk_before_it_replaces_the_earlier_one(tmp_path, monkeypatch):
    """A power cut right after the rename leaves the new report whole, not an empty file."""
    import os

    from engine import files

    steps = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: steps.append("fsync") or fsync(fd))
    monkeypatch.setattr(files.os, "replace", lambda a, b: steps.append("replace") or replace(a, b))
    write_report(dict(frames=1), tmp_path / "report.json")
    assert steps == ["fsync", "replace"]


def test_live_report_writes_periodically_and_at_a_new_segment(tmp_path, monkeypatch):
    monkeypatch.setattr(live_report, "POLL_S", 0.01)
    path, segment, made = tmp_path / "report.json", [0], []

    def make():
        made.append(segment[0])
        return dict(segment=segment[0], running=True)

    with LiveReport(make, path, every=3600, turned=lambda: segment[0]) as live:
        segment[0] = 1  # a new segment: written long before the hour is up
        until(lambda: path.exists(), "the report at the new segment")
        assert _report(path) == dict(segment=1, running=True)
    assert live.written == 1 and made == [1]
    with LiveReport(make, path, every=0.01) as live:
        until(lambda: live.written >= 3, "periodic reports")


def test_live_report_writes_nothing_before_the_run_starts_and_stops_writing(tmp_path):
    """A run that fails at its start leaves no report that says it ran; after stop() (the
    final report follows) no periodic one is written over it."""
    path, asked = tmp_path / "report.json", threading.Event()

    def make():
        asked.set()
        return None  # not started

    with LiveReport(make, path, every=0.01):
        until(asked.is_set, "a report asked for")
    assert not path.exists()
    live = LiveReport(lambda: dict(running=True), path, every=0.01).start()
    until(lambda: live.written, "a periodic report")
    live.stop()
    write_report(dict(running=False), path)
    written = live.written
    assert not live._thread.is_alive() and live.written == written
    assert _report(path) == dict(running=False)
    with pytest.raises(ValueError, match="every"):
        LiveReport(lambda: {}, path, every=0)


def test_a_report_says_whether_its_run_goes_on():
    metrics = Metrics()
    assert metrics.report()["running"] is False  # not started
    metrics.start()
    assert metrics.report()["running"] is True
    metrics.finish()
    assert metrics.report()["running"] is False


def test_a_pipelines_report_is_rewritten_as_the_docs_show(tmp_path, tiny_onnx):
    """`LiveReport(pipe.report, path)` around `pipe.run()`, then the final report: reports of
    the run going on say so and count no frame lost; nothing is written over the final one."""
    from pipeline.detector import Detector
    from pipeline.runner import Pipeline

    video, path = write_video(tmp_path / "a.mp4", frames=4), tmp_path / "report.json"
    pipe = Pipeline([video], Detector(tiny_onnx), close_detector=True)
    live = LiveReport(pipe.report, path, every=0.01)
    assert LiveReport(pipe.report, path).every == 60  # --report-every's default
    during = []

    def first_frame(*_):
        if not during:
            until(lambda: live.written, "a report during the run")
            during.append(_report(path))

    pipe.callbacks.append(first_frame)
    with live:
        pipe.run()
    assert during[0]["running"] is True and during[0]["lost"] == 0
    write_report(pipe.report(), path)
    live.stop()  # again: nothing more
    assert _report(path)["running"] is False and _report(path)["frames"] == 4


@pytest.mark.parametrize("every, error", [
    ("5", TypeError), (None, TypeError), (True, TypeError),
    (float("inf"), ValueError), (float("nan"), ValueError), (-1, ValueError)])
def test_a_bad_every_is_one_clear_error(tmp_path, every, error):
    """A string or None failed on `>` between str and int; inf made the thread's wait an
    OverflowError, the run going on without a report."""
    with pytest.raises(error, match=r"^LiveReport\(every=\) must be a (finite )?number of seconds"):
        LiveReport(lambda: {}, tmp_path / "report.json", every=every)


def test_a_missing_folder_or_a_make_that_is_no_function_is_one_clear_error(tmp_path):
    """A folder that is not there was a warning from the thread, later, naming a temp file."""
    with pytest.raises(FileNotFoundError, match=r"^LiveReport: no folder .*nope to write "
                                                r"report\.json into$"):
        LiveReport(lambda: {}, tmp_path / "nope" / "report.json", every=1)
    with pytest.raises(TypeError, match=r"^LiveReport\(make=\) must be a function"):
        LiveReport({"running": True}, tmp_path / "report.json", every=1)


def test_a_live_report_waits_past_any_clocks_limit(tmp_path, monkeypatch):
    """every=1e12 (or --report-every 1e12): its wait past threading.TIMEOUT_MAX killed the
    thread with an OverflowError."""
    died = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    live = LiveReport(lambda: {}, tmp_path / "report.json", every=1e12).start()
    try:
        live._stop.wait(0.2)  # what the thread does first: wait
        assert live._thread.is_alive() and not died
    finally:
        live.stop()


def test_a_live_report_starts_again_after_a_stop(tmp_path):
    """A context used twice (a service's runs one after another) raised 'threads can only be
    started once'."""
    path = tmp_path / "report.json"
    live = LiveReport(lambda: dict(running=True), path, every=0.01)
    for run in (1, 2):
        with live:
            until(lambda: live.written >= run, f"a report of run {run}")
            with pytest.raises(RuntimeError, match="running already"):
                live.start()
        assert not live._thread.is_alive()
    live.stop()


def test_a_callers_error_filter_does_not_end_the_rewriting(tmp_path):
    """Under `-W error` (pytest's filterwarnings = error) the warning of one failed write was
    raised in the thread, which died: no report was written for the rest of the run."""
    path, tries = tmp_path / "report.json", []

    def make():
        tries.append(1)
        if len(tries) == 1:
            raise OSError("No space left on device")
        return dict(running=True)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with LiveReport(make, path, every=0.01) as live:
            until(lambda: live.written, "a report after the failed write", limit_s=5)
    assert _report(path) == dict(running=True) and live.error is None
