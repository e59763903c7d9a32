"""Bad command lines end with one error line naming the flag and the value, and a non-zero exit,
before any work starts; never a traceback, never silently accepted."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working folder holding a plain file `afile` and a small image `photo.jpg`."""
    import cv2
    import numpy as np

    (tmp_path / "afile").write_text("not a folder")
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.full((40, 60, 3), 128, np.uint8))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_error_line(capsys, argv, code=2) -> str:
    """Run `dbrt argv` in-process; the exit code and a single 'error' line on stderr."""
    rc = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert rc == code, captured.err
    assert len(errors) == 1, captured.err
    return errors[0]


RUN = ["run", "clip.mp4", "--quiet"]


@pytest.mark.parametrize("argv, fragment", [
    (RUN + ["-o", "afile"], "-o/--output: 'afile' is a file, not a folder"),
    (RUN + ["-o", "afile/sub"], "-o/--output: cannot create folder 'afile/sub': 'afile' is a file"),
    (RUN + ["--input-size", "0x0"], "--input-size: expected HxW with sides from 32 to 4000"),
    (RUN + ["--input-size", "736x5000"], "got '736x5000'"),
    (RUN + ["--max-side", "0"], "--max-side: must be an integer from 32 to 4000, got '0'"),
    (RUN + ["--limit-side", "100000"], "--limit-side: must be an integer from 32 to 4000"),
    (RUN + ["--device", "bogus"], "--device: invalid choice: 'bogus'"),
    (RUN + ["--decode-threads", "-1"], "--decode-threads: must be an integer >= 0, got '-1'"),
    (RUN + ["--batch-timeout-ms", "-5"], "--batch-timeout-ms: must be a number >= 0, got '-5'"),
    (RUN + ["--batch-timeout-ms", "nan"], "--batch-timeout-ms: must be a number >= 0, got 'nan'"),
    (RUN + ["--batch", "-1"], "--batch: must be an integer >= 0"),
    (RUN + ["--queue-size", "0"], "--queue-size: must be an integer >= 1"),
    (RUN + ["--reconnect-delay", "-1"], "--reconnect-delay: must be a number >= 0"),
    (RUN + ["--threads", "two"], "--threads: must be an integer >= 0, got 'two'"),
    (RUN + ["--threads", "257"], "--threads: must be at most 256, got '257'"),
    (RUN + ["--sessions", "100000"], "--sessions: must be at most 64, got '100000'"),
    (RUN + ["--decode-threads", "100000"], "--decode-threads: must be at most 256, got '100000'"),
    (RUN + ["--max-side", "640", "--limit-side", "320"], "not --max-side with --limit-side"),
    (RUN + ["--input-size", "736x1280", "--max-side", "640"], "give --input-size or --max-side, not both"),
    (RUN + ["--input-size", "736x1280", "--limit-side", "640"], "give --input-size or --limit-side, not both"),
    (RUN + ["--serve-token", "x"], "--serve-token applies to --serve only"),
    (RUN + ["--show-scores", "--no-video"], "--show-scores writes scores on the annotated video"),
    (RUN + ["--camera-size", "1920"], "--camera-size: expected WIDTHxHEIGHT, e.g. 1920x1080, got '1920'"),
    (RUN + ["--camera-size", "0x480"], "--camera-size: expected WIDTHxHEIGHT"),
    (RUN + ["--camera-fps", "0"], "--camera-fps: must be a number > 0, got '0'"),
    (RUN + ["--camera-fourcc", "MJPEG"], "--camera-fourcc: expected four characters"),
    (RUN + ["--camera-fourcc", "MJPÉ"], "--camera-fourcc: expected four characters"),
    (["run", "rtsp://127.0.0.1:9/x", "--camera-fps", "30"], "apply to cameras (0, /dev/video0, csi://0)"),
    (RUN + ["--serve", "0", "--serve-token", ""], "--serve-token is empty"),
    (RUN + ["--hwaccel", "cuda:x"], "--hwaccel: must be cuda or cuda:N (N: the GPU's index, from 0), got 'cuda:x'"),
    (RUN + ["--hwaccel", "cuda:-1"], "--hwaccel: must be cuda or cuda:N"),
    (RUN + ["--hwaccel", "cuda:"], "--hwaccel: must be cuda or cuda:N"),
    (RUN + ["--hwaccel", "vaapi"], "--hwaccel: must be cuda or cuda:N"),
    (RUN + ["--rtsp-transport", "udp"], "--rtsp-transport udp applies to rtsp:// sources; none of the sources is one"),
    (["run", "gst:rtspsrc location=rtsp://cam/1 ! decodebin", "--rtsp-transport", "tcp"],
     "--rtsp-transport tcp applies to rtsp:// sources"),
    (["run", "http://127.0.0.1:9/live.ts", "--rtsp-transport", "http"], "--rtsp-transport http applies to rtsp://"),
    (RUN + ["--rtsp-transport", "quic"], "--rtsp-transport: invalid choice: 'quic'"),
    (RUN + ["--source-timeout", "10"], "--source-timeout applies to network streams (rtsp://, http(s)://, udp://...)"),
    (RUN + ["--source-timeout", "0"], "--source-timeout: must be a number > 0, got '0'"),
    (RUN + ["--source-timeout", "inf"], "--source-timeout: must be a number > 0, got 'inf'"),
])
def test_run_flags(place, capsys, argv, fragment):
    assert fragment in one_error_line(capsys, argv)


@pytest.mark.parametrize("argv, said", [
    (["run", "--frames", "10"], "dbrt run: error: unrecognized arguments: --frames (see dbrt run --help)"),
    (["eval", "--dataset", "d", "--bogus", "x"],
     "dbrt eval: error: unrecognized arguments: --bogus x (see dbrt eval --help)"),
    (["--nope"], "dbrt: error: unrecognized arguments: --nope (see dbrt --help)"),
    (["triton", "serve", "repo", "--nope"],
     "dbrt triton serve: error: unrecognized arguments: --nope (see dbrt triton serve --help)"),
])
def test_an_unknown_flag_is_named_by_its_command(place, capsys, argv, said):
    """It was 'dbrt: error: ... (see dbrt --help)', whose help lists the commands, not the
    flags of the one given."""
    assert one_error_line(capsys, argv) == said


def test_usage_errors_exit_2_in_a_subprocess_with_one_line(place):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", "--max-side", "0"], cwd=place,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "dbrt run: error: argument --max-side: must be an integer from 32 to 4000, got '0' "
        "(see dbrt run --help)"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write into a read-only folder")
def test_read_only_output_folder(place, capsys):
    ro = place / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = one_error_line(capsys, RUN + ["-o", "ro/out"])
    finally:
        ro.chmod(0o755)
    assert "cannot create folder 'ro/out': 'ro' is not writable" in line


@pytest.mark.parametrize("argv, fragment", [
    (["export", "-o", "afile/x.onnx"], "-o/--output: 'afile' is a file, not a folder"),
    (["export", "-o", "."], "-o/--output: '.' is a folder, expected a file name"),
    (["export", "--calib-count", "0"], "--calib-count: must be an integer >= 1, got '0'"),
    (["export", "--width", "0"], "--width: must be a number > 0, got '0'"),
    (["export", "--width", "10"], "--width: must be at most 4, got '10'"),
    (["export", "-o", "model"], "-o/--output: 'model' must end in .onnx"),
    (["export", "-o", "model.txt"], "-o/--output: 'model.txt' must end in .onnx"),
    # the model settings' own check said 'thresh must be a number in [0, 1]', naming no flag
    (["export", "--thresh", "2"], "--thresh: must be a number from 0 to 1, got '2'"),
    (["export", "--unclip-ratio", "-1"], "--unclip-ratio: must be a number >= 0, got '-1'"),
    # 0 was taken for "not given" and exported at 17; 21 was refused after the model loaded
    (["export", "--opset", "0"], "--opset: must be an integer from 13 to 20, got '0'"),
    (["export", "--opset", "21"], "--opset: must be an integer from 13 to 20, got '21'"),
    (["triton", "export", "--box-thresh", "1.5"], "--box-thresh: must be a number from 0 to 1, got '1.5'"),
    (["eval", "--dataset", "d", "--thresh", "-0.1"], "--thresh: must be a number from 0 to 1, got '-0.1'"),
    (RUN + ["--box-thresh", "nan"], "--box-thresh: must be a number from 0 to 1, got 'nan'"),
    (RUN + ["--unclip-ratio", "inf"], "--unclip-ratio: must be a number >= 0, got 'inf'"),
    (["eval", "--dataset", "d", "--json", "afile/x.json"], "--json: 'afile' is a file, not a folder"),
    (["eval", "--dataset", "d", "--vis", "afile"], "--vis: 'afile' is a file, not a folder"),
    (["eval", "--dataset", "d", "--iou", "1.5"], "--iou: must be a number between 0 and 1, got '1.5'"),
    (["eval", "--dataset", "d", "--device", "gpu0"], "--device: invalid choice: 'gpu0'"),
    (["eval", "--dataset", "d", "--threads", "100000"], "--threads: must be at most 256"),
    (["eval", "--dataset", "d", "--rec-model", "r.onnx"], "--rec-cls flags apply to reading, which dbrt eval does with --e2e only"),
    (["eval", "--dataset", "d", "--rec-margin", "0.1", "--tune"], "add --e2e"),
    (["build", "m.onnx", "-o", "afile/m.engine"], "-o/--output: 'afile' is a file, not a folder"),
    (["build", "m.onnx", "--timing-cache", "."], "--timing-cache: '.' is a folder, expected a file"),
    (["synth", "--dataset", "afile"], "--dataset: 'afile' is a file, not a folder"),
    (["synth", "--video", "afile/v.mp4"], "--video: 'afile' is a file, not a folder"),
    (["synth", "--count", "-3"], "--count: must be an integer >= 1, got '-3'"),
    (["train", "--out", "afile"], "--out: 'afile' is a file, not a folder"),
    (["train", "--out", "afile/run"], "--out: cannot create folder 'afile/run': 'afile' is a file"),
    (["train", "--out", "r", "--lr", "-1"], "--lr: must be a number > 0, got '-1'"),
    (["train", "--out", "r", "--log-every", "0"], "--log-every: must be an integer >= 1, got '0'"),
    (["train", "--out", "r", "--threads", "0"], "--threads: must be an integer >= 1, got '0'"),
])
def test_other_commands_check_flags_and_output_paths_first(place, capsys, argv, fragment):
    assert fragment in one_error_line(capsys, argv)


@pytest.fixture
def no_work(monkeypatch):
    """Training and writing a synthetic set or video fail the test at once: a value a check
    missed would otherwise start hours of work."""
    import export.synth.dataset
    import export.synth.video

    def started(*args, **kwargs):
        raise AssertionError("the command started its work")

    targets = [(export.synth.dataset, "write_dataset"), (export.synth.video, "write_demo_video")]
    if importlib.util.find_spec("torch"):  # training's loop imports it (train cases skip without)
        import export.train.loop
        targets.append((export.train.loop, "train"))
    for module, name in targets:
        monkeypatch.setattr(module, name, started)


def skip_without_what_the_command_needs(argv) -> None:
    """`dbrt train` without torch, and an FP16 export without onnxconverter-common, say that
    they need it before they check their other flags (Python 3.10 runs the suite without them)."""
    if argv[0] == "train":
        pytest.importorskip("torch", reason="dbrt train needs torch")
    if argv[0] == "export" and "fp16" in argv:
        pytest.importorskip("onnxconverter_common", reason="an FP16 export needs onnxconverter-common")


TINY_TRAIN = ["train", "--out", "r", "--steps", "1", "--batch", "1", "--crop", "64", "--width", "0.25",
              "--workers", "0", "--threads", "1"]
TINY_SYNTH = ["synth", "--dataset", "sd", "--count", "1", "--size", "64x64"]


@pytest.mark.parametrize("argv, fragment", [
    (TINY_SYNTH + ["--seed", "-1"],
     "--seed: must be an integer from 0 to 4294967295, got '-1'"),
    (["synth", "--video", "v.mp4", "--seconds", "0.1", "--video-seed", "4294967296"],
     "--video-seed: must be an integer from 0 to 4294967295, got '4294967296'"),
    (["synth", "--video", "v.mp4", "--seconds", "inf"], "--seconds: must be a number > 0, got 'inf'"),
    (TINY_TRAIN + ["--seed", "-1"], "--seed: must be an integer from 0 to 4294967295"),
    (TINY_TRAIN + ["--lr", "inf"], "--lr: must be a number > 0, got 'inf'"),
    (TINY_TRAIN + ["--lr", "nan"], "--lr: must be a number > 0, got 'nan'"),
    (TINY_TRAIN + ["--time-limit", "inf"], "--time-limit: must be a number >= 0, got 'inf'"),
    (TINY_TRAIN + ["--crop", "100000"], "--crop: must be a multiple of 32 from 32 to 4000"),
    (TINY_TRAIN + ["--crop", "100"], "--crop: must be a multiple of 32 from 32 to 4000"),
    (RUN + ["--reconnect-delay", "inf"], "--reconnect-delay: must be a number >= 0, got 'inf'"),
    (RUN + ["--camera-fps", "inf"], "--camera-fps: must be a number > 0, got 'inf'"),
])
def test_seeds_and_non_finite_numbers_are_refused(place, capsys, no_work, argv, fragment):
    """A negative seed was a NumPy traceback, 'inf' a float nobody can run with (an infinite
    learning rate trained to NaN weights, infinite seconds an OverflowError)."""
    skip_without_what_the_command_needs(argv)
    assert fragment in one_error_line(capsys, argv)
    assert not (place / "sd").exists() and not (place / "r").exists()


@pytest.mark.parametrize("argv, fragment", [
    (TINY_TRAIN + ["--threads", "1000"], "--threads: must be at most 256, got '1000'"),
    (TINY_TRAIN + ["--workers", "1000"], "--workers: must be at most 128, got '1000'"),
    (TINY_TRAIN + ["--width", "10"], "--width: must be at most 4, got '10'"),
    (TINY_SYNTH + ["--count", "1000000"], "--count: must be at most 100000, got '1000000'"),
    (["synth", "--video", "v.mp4", "--seconds", "36000"], "--seconds: must be at most 3600, got '36000'"),
])
def test_sizes_of_work_have_an_upper_bound(place, capsys, no_work, argv, fragment):
    """A mistyped extra zero is refused before it starts hours of work or a thousand processes."""
    skip_without_what_the_command_needs(argv)
    assert fragment in one_error_line(capsys, argv)
    assert not (place / "sd").exists() and not (place / "r").exists()


@pytest.mark.parametrize("flag", [["--distill", "2"], ["--teacher-scale", "1.5"], ["--val-every", "5"],
                                  ["--val-tune"], ["--val-images", "3"]])
def test_a_train_flag_without_the_one_it_works_with_is_refused(place, capsys, no_work, flag):
    """--distill without --teacher, --val-every without --val, ... were ignored without a word."""
    skip_without_what_the_command_needs(TINY_TRAIN)
    needed = "--teacher CHECKPOINT" if "teacher" in flag[0] or "distill" in flag[0] else "--val DATASET"
    line = one_error_line(capsys, TINY_TRAIN + flag)
    assert f"{flag[0]} needs {needed} (it has no effect without it)" in line
    assert not (place / "r").exists()



@pytest.mark.parametrize("key, value, fragment", [
    ("seed", -1, "\"seed\" must be an integer from 0 to 4294967295, got '-1'"),
    ("lr", float("inf"), "\"lr\" must be a number > 0, got 'inf'"),
    ("width", 10, "\"width\" must be at most 4, got '10'"),
    ("crop", 65, "\"crop\" must be a multiple of 32"),
    ("threads", 0, "\"threads\" must be an integer >= 1, got '0'"),
    ("workers", True, "\"workers\" must be an integer >= 0, got 'True'"),
    ("scale", [0, 1], "\"scale\" must be 0 < LO <= HI, got '0,1'"),
    ("arch", "resnet1000", "\"arch\" must be one of resnet18, resnet34, resnet50, got 'resnet1000'"),
    # settings no flag sets
    ("keep_every", 0, "\"keep_every\" must be an integer >= 1, got '0'"),
    ("ema", 1.5, "\"ema\" must be a number between 0 and 1, got '1.5'"),
    ("weight_decay", float("nan"), "\"weight_decay\" must be a number >= 0, got 'nan'"),
])
def test_a_resumed_runs_settings_meet_the_flags_bounds(place, capsys, key, value, fragment):
    """config.json's values were taken as they were: a hand-edited seed -1 or lr Infinity
    failed deep in training, or trained on them."""
    skip_without_what_the_command_needs(["train"])
    import json
    from dataclasses import asdict

    from export.train.config import TrainConfig

    run = place / "r"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")  # not read: the settings are checked first
    saved = dict(asdict(TrainConfig(out_dir=str(run), width=0.25, crop=64)), **{key: value})
    (run / "config.json").write_text(json.dumps(saved))
    line = one_error_line(capsys, ["train", "--out", "r", "--resume"])
    assert f"--resume: {Path('r') / 'config.json'}: {fragment}" in line


def _named_later(message: str, filename: str) -> OSError:
    error = OSError(message)
    error.filename = filename  # as dbnet.files.naming_the_file does
    return error


@pytest.mark.parametrize("error, said", [
    (OSError(28, "No space left on device", "out/x.jpg"), "out/x.jpg: No space left on device"),
    (OSError(28, "No space left on device"), "No space left on device"),
    (OSError("cannot write the image"), "cannot write the image"),
    (_named_later("cannot write the image", "out/y.jpg"), "out/y.jpg: cannot write the image"),
])
def test_a_file_error_names_the_file_it_carries(place, capsys, monkeypatch, error, said):
    """Python's "[Errno 28] ...: 'FILE'" as 'FILE: reason'; an error given its file name later
    printed "[Errno None] None: 'FILE'", without its message."""
    import pipeline.commands.synth as synth

    def fail(args):
        raise error

    monkeypatch.setattr(synth, "run", fail)
    assert one_error_line(capsys, ["synth", "--dataset", "sd"]) == f"dbrt synth: error: {said}"


@pytest.mark.parametrize("argv, flag", [
    (RUN + ["-o", ""], "-o/--output"),
    (RUN + ["--output", "  "], "-o/--output"),
    (["export", "-o", ""], "-o/--output"),
    (["eval", "--dataset", "d", "--vis", ""], "--vis"),
    (["eval", "--dataset", "d", "--json", ""], "--json"),
    (["build", "m.onnx", "-o", ""], "-o/--output"),
    (["build", "m.onnx", "--calib-cache", ""], "--calib-cache"),
    (["triton", "export", "-o", ""], "-o/--output"),
])
def test_an_empty_output_path_is_refused_not_the_current_folder(place, capsys, argv, flag):
    line = one_error_line(capsys, argv)
    assert f"argument {flag}: empty path" in line
    assert sorted(p.name for p in place.iterdir()) == ["afile", "photo.jpg"]  # nothing written


def test_eval_json_into_a_bad_place_fails_before_scoring(place, capsys, shared_data):
    rc = main(["eval", "--dataset", str(shared_data / "realdev"), "--json", "afile/r.json"])
    captured = capsys.readouterr()
    assert rc == 2 and "--json: 'afile' is a file" in captured.err
    assert captured.out == ""  # no image was scored


@pytest.mark.parametrize("name, content, fragment", [
    ("empty.onnx", b"", "empty.onnx is not a readable ONNX model: no graph (0 bytes)"),
    ("random.engine", bytes(range(256)) * 8, "cannot describe random.engine"),
    ("empty.engine", b"", "cannot describe empty.engine"),
])
def test_info_refuses_files_that_are_not_models(place, capsys, monkeypatch, name, content, fragment):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on any machine without TensorRT
    (place / name).write_bytes(content)
    assert fragment in one_error_line(capsys, ["info", name])


def test_info_refuses_random_bytes_even_where_tensorrt_runs(place, capsys, monkeypatch):
    import trt_double

    trt_double.install(monkeypatch, "10.x")
    (place / "random.engine").write_bytes(bytes(range(256)) * 8)
    assert "cannot load engine" in one_error_line(capsys, ["info", "random.engine"])


@pytest.mark.parametrize("name, content, fragment", [
    ("garbage.onnx", b"\x00garbage\xff" * 50, "garbage.onnx is not a readable ONNX model"),
    ("empty.onnx", b"", "empty.onnx is not a readable ONNX model: no graph"),
])
def test_check_refuses_files_that_are_not_onnx(place, capsys, name, content, fragment):
    (place / name).write_bytes(content)
    assert fragment in one_error_line(capsys, ["check", name])


def test_export_opset_flag_takes_what_the_exporter_writes():
    from export.onnx_export import EXPORTER_OPSETS
    from pipeline.commands.export import MAX_OPSET, MIN_OPSET

    assert range(MIN_OPSET, MAX_OPSET + 1) == EXPORTER_OPSETS


@pytest.mark.parametrize("name", ["photo.jpg", "notes.pt", "empty.pth"])
def test_export_of_a_file_that_is_not_a_checkpoint(place, capsys, name):
    pytest.importorskip("torch")
    (place / "notes.pt").write_text("hello, not a checkpoint\n")  # legacy unpickling: KeyError
    (place / "empty.pth").write_bytes(b"")
    line = one_error_line(capsys, ["export", name, "-o", "x.onnx"])
    assert f"{name} is not a PyTorch checkpoint" in line
    assert not (place / "x.onnx").exists()


def test_export_of_an_onnx_model_says_what_to_do_with_it(place, capsys, tiny_onnx):
    pytest.importorskip("torch")
    line = one_error_line(capsys, ["export", str(tiny_onnx), "-o", "x.onnx"])
    assert "is not a PyTorch checkpoint" in line
    assert "an ONNX model is exported already: `dbrt build` makes a TensorRT engine of it" in line


def test_train_init_of_another_architecture(place, capsys):
    torch = pytest.importorskip("torch")
    from export.model import DBNet

    torch.save(DBNet("resnet50", width=0.25).state_dict(), str(place / "r50.pt"))
    line = one_error_line(capsys, ["train", "--out", "run", "--init", "r50.pt", "--steps", "1",
                                   "--batch", "1", "--crop", "64", "--workers", "0"])
    assert "r50.pt" in line and "do not fit" in line and "--arch / --width" in line


@pytest.mark.parametrize("h, w, limit, kind, expected", [
    (2, 4000, 736, "min", (32, 4000)),            # min side 736 would ask for 736 x 1,472,000
    (4000, 2, 736, "min", (4000, 32)),
    (5, 3000, 736, "min_at_least", (32, 4000)),
    (3000, 5000, 4000, "min", (2400, 4000)),
    (720, 1280, 736, "min", (736, 1312)),          # ordinary frames are untouched
])
def test_the_resize_rule_is_capped_at_the_maximum_input_side(h, w, limit, kind, expected):
    from dbnet.spec import target_size

    assert target_size(h, w, limit, kind) == expected


def test_a_long_thin_image_runs_capped_with_one_warning(place, capsys, tiny_onnx):
    import json

    import cv2
    import numpy as np

    cv2.imwrite("strip.png", np.full((2, 4000, 3), 200, np.uint8))
    rc = main(["run", "strip.png", "strip.png", "--model", str(tiny_onnx), "-o", "out", "--quiet",
               "--no-video", "--limit-side", "736"])
    err = capsys.readouterr().err
    assert rc == 0, err
    warned = [line for line in err.splitlines() if "warning" in line]
    assert warned == ["dbrt run: warning: a 2x4000 frame would need a 736x1472000 input (min side "
                      "736); inputs are capped at 4000 pixels a side, so it runs at 32x4000 "
                      "(further frames are capped without a message)"]
    lines = (place / "out" / "detections.jsonl").read_text().splitlines()
    assert [json.loads(x)["frame_size"] for x in lines] == [[2, 4000], [2, 4000]]


def test_a_fixed_input_size_must_fit_the_model_stride(place, capsys, tiny_onnx):
    line = one_error_line(capsys, ["run", "photo.jpg", "--model", str(tiny_onnx), "-o", "o",
                                   "--input-size", "100x100", "--quiet"])
    assert "--input-size: each side must be a multiple of 32 (the network's stride), e.g. 96x96, got " \
        "'100x100'" in line


@pytest.mark.parametrize("argv", [
    ["run", "photo.jpg", "-o", "o", "--quiet", "--trust-engine-code", "--model", "MODEL"],
    ["run", "photo.jpg", "-o", "o", "--quiet", "--trust-engine-code"],  # the shipped ONNX
    ["eval", "--dataset", "photo.jpg", "--trust-engine-code", "--model", "MODEL"],
    ["info", "MODEL", "--trust-engine-code"],
])
def test_trusting_engine_code_of_an_onnx_model_names_the_flag(place, capsys, tiny_onnx, argv):
    """The flag means nothing for an ONNX model: refused by its name (it was the option name
    engine_host_code, or nothing at all for dbrt info)."""
    argv = [str(tiny_onnx) if a == "MODEL" else a for a in argv]
    line = one_error_line(capsys, argv)
    assert "--trust-engine-code applies to a prebuilt TensorRT .engine" in line


def test_the_library_names_the_flag_for_an_onnx_on_onnx_runtime_too(tiny_onnx):
    from engine.errors import ModelError
    from engine.loader import RunnerOptions, load_runner

    with pytest.raises(ModelError, match=r"engine_host_code \(--trust-engine-code\) applies to a "
                                         r"prebuilt .engine only, not "):
        load_runner(tiny_onnx, backend="onnxruntime", options=RunnerOptions(engine_host_code=True))


def test_an_unknown_device_is_refused_not_replaced_by_auto(tiny_onnx):
    from engine.errors import ModelError
    from pipeline.detector import Detector

    with pytest.raises(ModelError, match="unknown device 'gpu0'"):
        Detector(tiny_onnx, device="gpu0")


@pytest.mark.parametrize("argv, fragment", [
    (["synth", "--video", "out.txt"], "--video out.txt: the demo video is H.264 in .mp4"),
    (["synth", "--dataset", "sd", "--size", "100000x100000"], "--size must be between 64x64"),
    (["export", "--precision", "int8"], "--precision int8 needs --calib"),
    (["export", "--precision", "int8", "--calib", "missing"], "--calib: no such file: missing"),
    (["export", "--target-trt", "bogus"], "bad TensorRT target 'bogus'"),
    # exported first, then failed the compatibility check with exit 1
    (["export", "--target-trt", "8.6", "--opset", "19"],
     "--opset 19: TensorRT 8.6's ONNX parser reads opsets 9..17; give --opset 17"),
    (["export", "--keep-fp32-head"], "--keep-fp32-head applies to --precision int8 only"),
    (["export", "--accuracy", "photo.jpg"], "--accuracy compares FP16 / INT8 with FP32"),
    (["export", "--fp16-converter", "modelopt"], "--fp16-converter applies to --precision fp16 only"),
    (["export", "--precision", "int8", "--fp16-converter", "modelopt", "--calib", "photo.jpg"],
     "--fp16-converter applies to --precision fp16 only"),
    (["export", "--calib-method", "mse"], "--calib-method applies to --precision int8 only"),
    (["export", "--precision", "fp16", "--calib-count", "8"], "--calib-count applies to --precision int8"),
    (["export", "--calib-side", "320"], "--calib-side applies to --precision int8 only"),
    (["export", "--precision", "fp16", "--accuracy-count", "4"],
     "--accuracy-count applies to --accuracy IMAGES only"),
    (["eval", "--dataset", "empty.json"], "no images in empty.json"),
    (["eval", "--dataset", "empty.json", "--e2e", "--tune"], "--tune scores detection only"),
    (["eval", "--dataset", "photo.jpg", "--gt", "missing"], "ground-truth folder not found: missing"),
])
def test_flag_mistakes_found_before_any_work(place, capsys, argv, fragment):
    skip_without_what_the_command_needs(argv)
    (place / "empty.json").write_text("[]")
    assert fragment in one_error_line(capsys, argv)
    assert not (place / "sd").exists()


def test_synth_never_writes_over_the_bundled_demo_video(place, capsys):
    """`dbrt synth --video pipeline/assets/demo.mp4` replaced the video `dbrt run` plays by
    default (and the README's numbers came from) with one the generator makes today."""
    import pipeline

    demo = Path(pipeline.__file__).parent / "assets" / "demo.mp4"
    before = demo.read_bytes()
    assert "is a file dbrt ships" in one_error_line(capsys, ["synth", "--video", str(demo),
                                                             "--seconds", "0.2"])
    assert demo.read_bytes() == before


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_export_refuses_an_unwritable_fp16_or_int8_file_before_any_work(place, capsys, precision):
    """NAME_fp16.onnx / NAME_int8.onnx are written after the FP32 export (and the calibration):
    a folder in their place is found first, with nothing written."""
    skip_without_what_the_command_needs(["export", "--precision", precision])
    (place / f"db_{precision}.onnx").mkdir()
    calib = ["--calib", "photo.jpg"] if precision == "int8" else []
    line = one_error_line(capsys, ["export", "-o", "db.onnx", "--precision", precision, *calib])
    assert f"--precision {precision}: cannot write db_{precision}.onnx" in line
    assert "is a folder" in line
    assert not (place / "db.onnx").exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--min", "abc", "--opt", "64x64"], "--min: bad shape 'abc'"),
    (["--opt", "64x64", "--max", "1x3x64"], "--max: bad shape '1x3x64'"),
    (["--opt", "64x64", "--batch", "0"], "--batch: bad batch range '0'"),
    (["--opt", "64x64", "--max", "32x32"], "needs min <= opt <= max"),
    (["--batch", "2"], "--batch needs --opt"),
    (["--calib", "missing_folder"], "--calib: no such file: missing_folder"),
    (["--calib", "no_images"], "--calib: no images (.jpg"),
    (["-o", "m.onnx"], "-o/--output: 'm.onnx' must end in .engine, .plan, .trt"),
    (["-o", "m.txt"], "-o/--output: 'm.txt' must end in .engine, .plan, .trt"),
    (["--timing-cache", "tc.bin", "--no-timing-cache"], "--timing-cache FILE or --no-timing-cache"),
])
def test_build_shape_and_calib_flags_are_checked_before_tensorrt_is_looked_for(
        place, capsys, monkeypatch, tiny_onnx, flags, fragment):
    """On a machine without TensorRT a mistyped shape or --calib folder said only that
    TensorRT was missing."""
    (place / "no_images").mkdir()
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    line = one_error_line(capsys, ["build", str(tiny_onnx), "-o", "m.engine"] + flags)
    assert fragment in line and "tensorrt" not in line.lower()


def test_build_never_writes_over_its_model(place, capsys, monkeypatch, tiny_onnx):
    """An ONNX named like an engine: the default output (MODEL with .engine) is the model."""
    model = place / "m.engine"
    model.write_bytes(tiny_onnx.read_bytes())
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    line = one_error_line(capsys, ["build", "m.engine"])
    assert "would overwrite the model m.engine" in line
    line = one_error_line(capsys, ["build", "m.engine", "-o", "./m.engine"])
    assert "would overwrite the model m.engine" in line
    assert model.read_bytes() == tiny_onnx.read_bytes()


def test_a_truncated_checkpoint_is_named_damaged(place, capsys):
    pytest.importorskip("torch")
    shipped = REPO / "export" / "assets" / "dbnet_default.pt"
    (place / "cut.pt").write_bytes(shipped.read_bytes()[:50_000])
    line = one_error_line(capsys, ["export", "cut.pt", "-o", "m.onnx"])
    assert "cut.pt: the file is damaged or truncated" in line


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_folder_nobody_can_write_is_named_even_for_root(place, capsys):
    """os.access says yes to root everywhere; writing is tried instead."""
    line = one_error_line(capsys, RUN + ["-o", "/proc/dbrt_out"])
    assert "-o/--output: cannot create folder '/proc/dbrt_out': '/proc' is not writable" in line


@pytest.mark.parametrize("command", ["run", "eval", "export", "build", "train"])
def test_help_shows_only_defaults_that_say_something(command, capsys):
    """No '(default: None)' / '(default: False)' noise, and no default given twice."""
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: pipeline/assets/demo.mp4) (default" not in text
    if command == "run":
        assert "output folder (default: out/run)" in text
        assert "of a fixed batch size takes) (default: 0)" in text  # a default of 0 is a value, shown


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_token_variable_is_refused_like_an_empty_flag(place, capsys, monkeypatch, value):
    """An empty DBRT_SERVE_TOKEN (an unset variable in a service file) served without a token:
    on a loopback address without a word."""
    monkeypatch.setenv("DBRT_SERVE_TOKEN", value)
    assert "DBRT_SERVE_TOKEN is set but empty" in one_error_line(capsys, RUN + ["--serve", "0"])


def test_a_missing_fp16_converter_is_said_before_the_fp32_export(tmp_path, capsys):
    """`--fp16-converter modelopt` without modelopt failed only after the FP32 file was written."""
    import importlib.util

    if importlib.util.find_spec("modelopt") is not None:
        pytest.skip("modelopt is installed here")
    out = tmp_path / "model.onnx"
    line = one_error_line(capsys, ["export", "-o", str(out), "--precision", "fp16",
                                   "--fp16-converter", "modelopt"])
    assert "pip install nvidia-modelopt" in line and not out.exists()


def test_runner_options_of_the_wrong_type_are_refused_when_made():
    """spin="off" (the flag's word) was truthy and turned spinning on; threads=2.5 failed in
    ONNX Runtime's bindings with a page of signatures."""
    from engine.errors import ModelError
    from engine.loader import RunnerOptions

    for wrong in (dict(spin="off"), dict(threads=2.5), dict(sessions="2"), dict(threads=True)):
        with pytest.raises(ModelError, match="threads and sessions take whole numbers"):
            RunnerOptions(**wrong)
    assert RunnerOptions(threads=2, sessions=1, spin=False).threads == 2


def test_load_runner_refuses_options_that_are_not_runner_options(tiny_onnx):
    from engine.loader import load_runner

    with pytest.raises(TypeError, match="expected an engine.loader.RunnerOptions"):
        load_runner(tiny_onnx, options={"threads": 2})  # was: 'dict' has no 'engine_host_code'
