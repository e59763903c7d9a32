"""`dbrt run`: outputs, the summary, one-line errors for bad input, and Ctrl-C mid-run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.triton.ports import free_port
from pipeline.cli import main

from media import write_vfr_video, write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("cli") / "clip.mp4", frames=8, height=72, width=128)


def test_a_sink_failing_mid_run_leaves_a_report_that_matches_the_results(tmp_path, clip,
                                                                         tiny_onnx, capsys):
    """The annotated video cannot be written (a folder has its name): the JSON line of the
    frame it failed on is written and counted as out, and the message names the error as
    the cause (it said "stopped at once", as after a second Ctrl-C)."""
    out = tmp_path / "out"
    (out / "annotated.mp4").mkdir(parents=True)
    longer = write_video(tmp_path / "longer.mp4", frames=40, height=72, width=128)
    rc = main(["run", str(longer), "--model", str(tiny_onnx), "--output", str(out), "--threads", "1",
               "--max-side", "128", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "annotated.mp4" in err.splitlines()[-1] and "stopped at once" not in err
    lines = (out / "detections.jsonl").read_text().splitlines()
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == len(lines) >= 1
    assert report["lost"] == 0 or "stopped by the failure below" in err


def test_a_run_removes_the_earlier_runs_events_and_video_it_does_not_write(tmp_path, clip,
                                                                           tiny_onnx, capsys):
    """`dbrt run --track` then `dbrt run --no-video` into one folder: the first run's
    events.jsonl and annotated.mp4 stayed beside the second run's detections (a consumer of
    the folder read events of another run); a file the earlier run did not list stays."""
    out = tmp_path / "out"
    args = [str(clip), "--model", str(tiny_onnx), "--output", str(out), "--threads", "1",
            "--max-side", "128", "--quiet"]
    assert main(["run", *args, "--track"]) == 0
    assert (out / "events.jsonl").is_file() and (out / "annotated.mp4").is_file()
    (out / "notes.txt").write_text("mine")
    assert main(["run", *args, "--track"]) == 0  # the same outputs again: nothing removed
    assert "removed" not in capsys.readouterr().err and (out / "events.jsonl").is_file()
    assert main(["run", *args, "--no-video"]) == 0  # --quiet too: files deleted are news
    err = capsys.readouterr().err
    assert "removed the earlier run's annotated.mp4, events.jsonl" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["detections.jsonl", "notes.txt", "report.json"]
    assert "events" not in json.loads((out / "report.json").read_text())["outputs"]
    # the earlier run's video as this run's source is kept (it was removed, then not found)
    assert main(["run", *args]) == 0
    capsys.readouterr()
    assert main(["run", str(out / "annotated.mp4"), *args[1:], "--no-video"]) == 0
    assert (out / "annotated.mp4").is_file() and "removed" not in capsys.readouterr().err
    # nor written over: the encoder truncated it as the decoder read it (the run ended early)
    before = (out / "annotated.mp4").read_bytes()
    assert main(["run", str(out / "annotated.mp4"), *args[1:]]) == 2
    assert (f"the annotated video {out / 'annotated.mp4'} would be written over the source "
            f"{out / 'annotated.mp4'} as it is read") in capsys.readouterr().err
    assert (out / "annotated.mp4").read_bytes() == before


def test_a_run_removes_the_earlier_runs_annotated_images(tmp_path, tiny_onnx, capsys):
    """A folder of 3 images, then 1 image, into one output: the first run's other two
    annotated images stayed in annotated/ beside the second run's (report.json's "images"
    names that folder); a file of the user's there stays."""
    import cv2
    import numpy as np

    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(shots / name), np.full((64, 96, 3), 200, np.uint8))
    out = tmp_path / "out"
    args = ["--model", str(tiny_onnx), "--output", str(out), "--threads", "1", "--max-side", "128",
            "--quiet"]
    assert main(["run", str(shots), *args]) == 0
    assert len(list((out / "annotated").iterdir())) == 3
    (out / "annotated" / "notes.txt").write_text("mine")
    assert main(["run", str(shots / "b.png"), *args]) == 0
    assert "removed the earlier run's 3 annotated images" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "annotated").iterdir()) == ["0_00000_b.png", "notes.txt"]
    assert main(["run", str(shots / "b.png"), *args, "--no-video"]) == 0
    assert sorted(p.name for p in (out / "annotated").iterdir()) == ["notes.txt"]
    # images this run reads are never removed (a glob over the output folder took them)
    assert main(["run", str(shots / "b.png"), *args]) == 0
    assert main(["run", str(out / "*" / "*.png"), *args]) == 0
    assert json.loads((out / "report.json").read_text())["frames"] == 1


def test_run_writes_jsonl_video_and_report(tmp_path, clip, tiny_onnx, capsys):
    out = tmp_path / "out"
    rc = main(["run", str(clip), "--model", str(tiny_onnx), "--output", str(out), "--threads", "1",
               "--batch", "2", "--box-thresh", "0.1", "--max-side", "128"])
    assert rc == 0
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    assert [x["frame_index"] for x in lines] == list(range(8))
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 8 and report["batch"] == 2
    assert report["outputs"]["videos"] == {"0": str(out / "annotated.mp4")}  # what this run wrote
    assert set(report["stages"]) == {"decode", "preprocess", "infer", "postprocess", "sink"}
    spec = report["model"]["spec"]
    assert spec["resize"]["limit_type"] == "max" and report["model"]["post"]["box_thresh"] == 0.1
    import av

    with av.open(str(out / "annotated.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8
    printed = capsys.readouterr()
    assert "8 frames in" in printed.out and "FPS" in printed.out and "p99" in printed.out
    assert "onnxruntime" in printed.err


def test_a_variable_frame_rate_video_is_annotated_at_its_own_pace(tmp_path, tiny_onnx):
    """A phone recording at 30 fps, then 10 fps: the annotated video shows each frame when
    the recording (and the JSON lines) do, not at one average rate."""
    av = pytest.importorskip("av")
    times = [i / 30 for i in range(9)] + [0.3 + i / 10 for i in range(1, 7)]
    clip = write_vfr_video(tmp_path / "phone.mp4", times)
    out = tmp_path / "out"
    assert main(["run", str(clip), "--model", str(tiny_onnx), "-o", str(out), "--quiet",
                 "--threads", "1", "--max-side", "64"]) == 0
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    with av.open(str(out / "annotated.mp4")) as container:
        shown = [f.time for f in container.decode(video=0)]
    assert shown == pytest.approx(times, abs=1e-3)
    assert [x["timestamp"] for x in lines] == pytest.approx(times, abs=1e-3)


def test_images_and_several_sources(tmp_path, clip, tiny_onnx):
    import cv2
    import numpy as np

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((40, 60, 3), 128, np.uint8))
    out = tmp_path / "out"
    assert main(["run", str(clip), str(folder), "--model", str(tiny_onnx), "-o", str(out),
                 "--threads", "1", "--quiet", "--max-frames", "3"]) == 0
    lines = (out / "detections.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert (out / "annotated" / "1_00000_a.png").is_file()
    assert len(list(out.glob("annotated_0_clip.mp4"))) == 1


def test_image_files_named_side_by_side_are_one_source_as_their_glob_is(tmp_path, clip, tiny_onnx,
                                                                        capsys):
    """`dbrt run shots/*.jpg`, the glob expanded by the shell: each image was a source of its
    own (a decoding thread and a waiting frame each, batches of as many frames as images: 120
    photos took 17.5 GB, as a folder 0.56 GB); a run of image files is now one source, in the
    order given, each line naming its file; a video between them keeps its place."""
    import cv2
    import numpy as np

    names = ["c.png", "a.png", "b.png", "d.png"]
    for k, name in enumerate(names):
        cv2.imwrite(str(tmp_path / name), np.full((40, 60, 3), 40 * k, np.uint8))
    (tmp_path / "broken.png").write_text("not an image")
    files = [str(tmp_path / name) for name in names[:3] + ["broken.png"]]
    out = tmp_path / "out"
    rc = main(["run", *files, str(clip), str(tmp_path / "d.png"), "--model", str(tiny_onnx),
               "-o", str(out), "--threads", "1", "--quiet"])
    assert rc == 2 and "1 of 4 images could not be read" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert [(s["stream"], s["kind"], s["total_frames"]) for s in report["sources"]] == [
        (0, "images", 4), (1, "video", 8), (2, "images", 1)]
    assert report["batch"] == 3
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    images = [(x["stream"], x["frame_index"], Path(x["source"]).name) for x in lines
              if x["timestamp"] is None]
    assert sorted(images) == [(0, 0, "c.png"), (0, 1, "a.png"), (0, 2, "b.png"), (2, 0, "d.png")]
    assert (out / "annotated" / "0_00001_a.png").is_file()


def test_sessions_and_spin_give_the_same_detections(tmp_path, clip, tiny_onnx, capsys):
    """--sessions 2 (two single-thread sessions per batch) and --ort-spin off change speed only."""
    def boxes(out, *extra):
        assert main(["run", str(clip), "--model", str(tiny_onnx), "-o", str(out), "--no-video",
                     "--quiet", "--box-thresh", "0.1", "--max-side", "128", *extra]) == 0
        lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
        return [(x["frame_index"], x["detections"]) for x in lines]

    expected = boxes(tmp_path / "one", "--threads", "1")
    assert len(expected) == 8
    assert boxes(tmp_path / "two", "--sessions", "2", "--ort-spin", "off") == expected
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["batch"] == 2  # the default batch keeps both sessions busy
    assert "parallel" in capsys.readouterr().err


@pytest.mark.parametrize("make_args, message", [
    (lambda d, m: [str(d / "missing.mp4"), "--model", m], "no such file"),
    (lambda d, m: [str(d / "notes.txt"), "--model", m], "cannot open"),
    (lambda d, m: [str(d / "clip.mp4"), "--model", str(d / "missing.onnx")], "model file not found"),
    (lambda d, m: [str(d / "clip.mp4"), "--model", str(d / "notes.txt")], "unsupported model file"),
    # --reconnect 0: with reconnects, a stream down at start is waited for (test_source_down_at_start)
    (lambda d, m: [f"http://127.0.0.1:{free_port()}/live.ts", "--model", m, "--reconnect", "0"],
     "cannot open http"),
    (lambda d, m: [str(d / "clip.mp4"), "--model", m, "--thresh", "3"], "--thresh: must be a number from 0 to 1"),
    (lambda d, m: [str(d / "clip.mp4"), "--model", m, "--sessions", "0"], "--sessions: must be"),
    # the reader's files named by their flags (a folder was 'not found', a missing recognizer
    # 'model file not found' beside the detector's model)
    (lambda d, m: [str(d / "clip.mp4"), "--model", m, "--rec-model", str(d / "rec.onnx")],
     "--rec-model " + "{d}/rec.onnx: file not found"),
    (lambda d, m: [str(d / "clip.mp4"), "--model", m, "--rec-dict", str(d)],
     "--rec-dict {d} is a folder, expected a file"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, clip, tiny_onnx, capsys, make_args, message):
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    rc = main(["run", *make_args(tmp_path, str(tiny_onnx)), "-o", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    message = message.format(d=tmp_path)
    assert len([line for line in err if "error" in line]) == 1 and message in err[-1]
    assert "Traceback" not in "\n".join(err)


def _dbrt(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_missing_file_in_a_subprocess_prints_one_line(tmp_path):
    proc = _dbrt("run", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip() == f"dbrt run: error: no such file: {tmp_path / 'nope.mp4'}"


@pytest.mark.slow
def test_sigint_mid_run_leaves_complete_jsonl_video_and_report(tmp_path, tiny_onnx):
    video = write_video(tmp_path / "long.mp4", frames=400, height=72, width=128)
    out = tmp_path / "out"
    jsonl = out / "detections.jsonl"
    proc = _dbrt("run", str(video), "--model", str(tiny_onnx), "-o", str(out), "--threads", "1",
                 "--limit-side", "256")
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if jsonl.is_file() and len(jsonl.read_text().splitlines()) >= 5:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]  # every line is valid
    assert 5 <= len(lines) < 400
    assert [x["frame_index"] for x in lines] == list(range(len(lines)))
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True and report["frames"] == len(lines)
    import av

    with av.open(str(out / "annotated.mp4")) as container:  # finalised: readable to the end
        assert sum(1 for _ in container.decode(video=0)) == len(lines)


class _FullDisk:
    """A file opened for writing on a full disk: every write, flush and close fails with the
    error the system gives, which names no file."""

    def __init__(self, path):
        self.closed = False
        self.name = str(path)

    def _full(self, *args):
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")

    write = flush = _full

    def close(self):
        if not self.closed:
            self.closed = True
            self._full()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.mark.parametrize("module, name, flags", [
    ("pipeline.sinks", "detections.jsonl", []),
    ("pipeline.reading.events", "events.jsonl", ["--track"]),
    ("engine.files", "report.json", []),  # written beside it, then renamed (write_whole)
])
def test_a_full_disk_is_one_error_naming_the_output_file(tmp_path, clip, tiny_onnx, capsys,
                                                         monkeypatch, module, name, flags):
    """write() on a full disk says only 'No space left on device': the run's error did not
    say which of its files could not be written."""
    import builtins
    import importlib

    def opened(path, mode="r", *args, **kwargs):
        if Path(path).name == name and "w" in mode:
            return _FullDisk(path)
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(importlib.import_module(module), "open", opened, raising=False)
    write_text = Path.write_text

    def write_text_on_a_full_disk(self, *args, **kwargs):  # (write_whole's file beside it)
        if self.name.startswith(f"{name}.") and self.name.endswith(".partial"):
            _FullDisk(self).write()
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text_on_a_full_disk)
    out = tmp_path / "out"
    rc = main(["run", str(clip), "--model", str(tiny_onnx), "--output", str(out), "--threads", "1",
               "--max-side", "128", "--quiet", "--no-video", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1] == f"dbrt run: error: {out / name}: No space left on device", err


def test_an_annotated_image_that_cannot_be_written_is_one_error_naming_it(tmp_path, tiny_onnx,
                                                                          capsys, monkeypatch):
    import cv2
    import numpy as np

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((40, 60, 3), 128, np.uint8))
    monkeypatch.setattr(cv2, "imwrite", lambda *args: False)
    out = tmp_path / "out"
    rc = main(["run", str(folder), "--model", str(tiny_onnx), "-o", str(out), "--threads", "1",
               "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1] == (f"dbrt run: error: {out / 'annotated' / '0_00000_a.png'}: "
                       "OpenCV could not write the image"), err


def test_a_streams_video_is_named_after_its_path_or_host_and_port_never_its_credentials():
    """udp://127.0.0.1:5611's video was annotated_1_127.0.0.mp4 (cut at '.1:5611' as if a
    file suffix)."""
    from types import SimpleNamespace

    from pipeline.commands._outputs import video_names

    names = ["udp://127.0.0.1:5611", "rtsp://user:pw@cam.local:554/stream1", "/data/clip.mp4"]
    pipe = SimpleNamespace(sources=[SimpleNamespace(stream=k, name=n, kind="network")
                                    for k, n in enumerate(names)])
    assert video_names(pipe) == {0: "annotated_0_127.0.0.1_5611.mp4", 1: "annotated_1_stream1.mp4",
                                 2: "annotated_2_clip.mp4"}


def test_the_queue_size_help_states_the_capacities_a_run_has(clip):
    """`--queue-size`'s help said a run got one-batch queues only when every source was live;
    a run mixing a live source with files has them too (and the gate): the help says so."""
    import argparse
    import re

    from pipeline.cli import build_parser
    from pipeline.runner import Pipeline

    from media import FakeDetector, SimulatedCamera

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flag = next(a for a in commands.choices["run"]._actions if "--queue-size" in a.option_strings)
    stated = re.search(r"default: (\d+); with a live source in the run, (\d+)", flag.help)
    assert stated, flag.help
    files = Pipeline([clip], FakeDetector())
    mixed = Pipeline([SimulatedCamera(total=1), clip], FakeDetector())
    try:
        assert (files._prepared.capacity, mixed._prepared.capacity) == tuple(map(int, stated.groups()))
        assert files._gate is None and mixed._gate is not None
    finally:
        files.close()
        mixed.close()
