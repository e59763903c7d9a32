"""Smoke runs of the benchmark code on tiny models: timing stats, writers, the model sweep,
run_all's index and `dbrt bench`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from engine_helpers import trt  # noqa: F401 - fixture

from benchmarks import common

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _scratch_results(tmp_path_factory, monkeypatch):
    """A benchmark that goes further than a test expects (a flag no longer checked first) writes
    into a scratch folder, never over the committed results."""
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path_factory.mktemp("results")))


def test_stats_from_known_samples():
    stats = common.Stats.from_seconds([0.001, 0.002, 0.003, 0.004, 0.100])
    assert stats.n == 5 and stats.median_ms == pytest.approx(3.0)
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(100.0)
    assert stats.p10_ms < stats.median_ms < stats.p90_ms
    assert stats.to_dict()["spread_pct"] == pytest.approx(100 * (stats.p90_ms - stats.p10_ms) / 3.0, abs=0.01)
    with pytest.raises(ValueError):
        common.Stats.from_seconds([])


def test_every_result_names_the_shipped_model_it_ran_beside(tmp_path):
    """benchmarks/README says every run records its model's hash, but the live-stream, serve,
    Triton, width and reading-throughput results named none: which shipped model they measured
    could not be told once the model was replaced."""
    shipped = common.REPO / "pipeline" / "assets" / "dbnet_default.onnx"
    if not shipped.is_file():
        pytest.skip("no shipped model in this checkout")
    info = common.machine_info()
    assert info["shipped_model_sha256"] == common.file_sha256(shipped)
    footer = common.write_markdown(tmp_path / "x.md", "T", [], info).read_text()
    assert f"Shipped model (dbnet_default.onnx) sha256 `{info['shipped_model_sha256']}`." in footer


def test_measure_runs_warmup_and_repeats_with_sync():
    calls, syncs = [], []
    stats = common.measure(lambda: calls.append(1), warmup=2, repeats=5, sync=lambda: syncs.append(1))
    assert len(calls) == 7 and len(syncs) == 7 and stats.n == 5


def test_machine_record_and_results_dir(tmp_path, monkeypatch):
    name = common.machine_name()
    assert name and name == name.lower() and " " not in name
    info = common.machine_info()
    assert info["machine"] == name and "numpy" in info["libraries"]
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path / "r"))
    assert common.results_dir() == tmp_path / "r" and (tmp_path / "r").is_dir()
    (tmp_path / "f.bin").write_bytes(b"abc")
    assert common.file_sha256(tmp_path / "f.bin") == "ba7816bf8f01cfea"  # sha256("abc")


def test_writers(tmp_path):
    rows = [{"name": "a", "ms": 1.23456, "tiny": 0.000123, "n": np.int64(3)}, {"name": "b", "ms": 2.0}]
    table = common.markdown_table(rows, ("name", "ms", "tiny"))
    assert table.splitlines()[0] == "| name | ms | tiny |"
    assert "| a | 1.23 | 0.000123 |" in table and "| b | 2.00 |  |" in table
    payload = json.loads(common.write_json(tmp_path / "x.json", {"rows": rows, "arr": np.arange(2)}).read_text())
    assert payload["rows"][0]["n"] == 3 and payload["arr"] == [0, 1]
    md = common.write_markdown(tmp_path / "x.md", "Title", [("Table", table)], common.machine_info())
    assert md.read_text().startswith("# Title") and "Machine `" in md.read_text()
    line = common.plot_lines({"s": [(1, 2), (2, 3)]}, tmp_path / "l.png", "t", "x", "y")
    bars = common.plot_stacked_bars({"a": {"decode": 1.0, "infer": 2.0}, "b": {"infer": 1.5}},
                                    tmp_path / "b.png", "t", "ms")
    assert line.read_bytes()[:8] == PNG_MAGIC and bars.read_bytes()[:8] == PNG_MAGIC


def test_stacked_bar_labels_do_not_run_into_each_other(tmp_path, monkeypatch):
    """pipeline_stages.png has a bar per pass (ten in the committed run), each labelled with its
    mode and FPS: side by side the labels overlapped into one unreadable line."""
    plt = common._pyplot()
    close, figures = plt.close, []
    monkeypatch.setattr(plt, "close", figures.append)
    names = [f"pipeline + mqtt, 1 event per frame\n{fps:.1f} FPS" for fps in range(10, 20)]
    common.plot_stacked_bars({name: {"decode": 2.0, "infer": 50.0} for name in names},
                             tmp_path / "b.png", "t", "ms")
    (figure,) = figures
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    ax = figure.axes[0]
    labels = [t for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text() in names]
    assert len(labels) == len(names)
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    close(figure)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """A tiny DBNet and its ONNX export (same weights): the PyTorch baseline and ORT side by side."""
    torch = pytest.importorskip("torch")
    from export.model import DBNet
    from export.onnx_export import export_onnx

    from benchmarks.model_bench import ModelUnderTest

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = DBNet("resnet18", width=0.25).eval()
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    export_onnx(net, path, parity_shapes=None)
    return ModelUnderTest(path, "tiny test model", net, trained=False)


def test_model_sweep_rows_agree_and_files_are_written(tiny_pair, tmp_path):
    from benchmarks import model_bench
    from dbnet.spec import ModelSpec

    targets = model_bench.default_targets(tiny_pair, threads=1)
    assert [t.name for t in targets][:2] == ["pytorch/cpu/fp32", "onnxruntime/cpu/fp32"]
    frame = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    rows = model_bench.sweep(targets, ModelSpec(), [(64, 64), (64, 96)], [1, 2], warmup=1, repeats=2,
                             frame=frame, log=lambda msg: None)
    for t in targets:
        t.close()
    assert len(rows) == 2 * 2 * 2 and not any("error" in r for r in rows)
    assert all(r["max_abs_diff"] < 1e-4 and r["images_per_s"] > 0 for r in rows)
    speedups = model_bench.speedup_rows(rows)
    assert len(speedups) == 4 and all(s["config"] == "onnxruntime/cpu/fp32" for s in speedups)
    settings = {"sizes": [64], "batches": [1, 2], "warmup": 1, "repeats": 2, "threads": 1}
    paths = model_bench.write_results(rows, tiny_pair, settings, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["model"]["sha256"] == common.file_sha256(tiny_pair.onnx) and len(data["rows"]) == 8
    assert "| pytorch | cpu | fp32 | 1 | 64x64 |" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC


def test_tensorrt_rows_on_the_test_double(trt, tiny_pair, tmp_path, monkeypatch):
    """Where TensorRT is usable the sweep adds its engines (FP16 from the builder flag on 8.6 /
    10.x, from an FP16 ONNX on 11.x), one engine per input size, built once through the cache;
    outputs match PyTorch (the double computes in FP32) and the speed-ups name both baselines."""
    from benchmarks import model_bench
    from benchmarks.model_targets import engine_plans, tensorrt_targets
    from dbnet.spec import ModelSpec
    from engine.tensorrt.build import has_weak_typing
    from export import quantize

    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "engines"))
    from engine.tensorrt.record import EngineRecord
    from engine_helpers import qdq_copy

    fp16 = quantize.to_fp16(tiny_pair.onnx, tmp_path / "tiny_fp16.onnx")
    variants = {"fp16": fp16, "int8": qdq_copy(tiny_pair.onnx, tmp_path / "tiny_int8.onnx")}
    weak = has_weak_typing(trt)
    assert [p[0] for p in engine_plans(weak, tiny_pair.onnx, {})] == (["fp32", "fp16"] if weak else ["fp32"])
    targets = model_bench.default_targets(tiny_pair, threads=1)[:1]
    built = []
    targets += tensorrt_targets(tiny_pair.onnx, variants, [1, 2], log=built.append)
    assert [t.name for t in targets] == ["pytorch/cpu/fp32", "tensorrt/cuda/fp32", "tensorrt/cuda/fp16",
                                         "tensorrt/cuda/int8"]
    frame = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    sweep = lambda: model_bench.sweep(targets, ModelSpec(), [(64, 64), (64, 96)], [1, 2], warmup=1,  # noqa: E731
                                      repeats=2, frame=frame, log=lambda msg: None)
    rows = sweep()
    assert not any("error" in r for r in rows) and len(rows) == 4 * 2 * 2
    trt_rows = [r for r in rows if r["backend"] == "tensorrt" and r["precision"] != "int8"]
    assert all(r["device"] == "cuda" and r["max_abs_diff"] < 1e-3 for r in trt_rows)
    assert sum("building the TensorRT" in m for m in built) == 6  # 3 precisions x 2 sizes
    records = [EngineRecord.load(path) for path in (tmp_path / "engines").glob("*.engine")]
    flags = {r.precision: (r.builder["flags"], r.strongly_typed) for r in records}
    if weak:  # FP16 from the FP32 ONNX and the builder flag (trtexec --fp16); INT8 from Q/DQ
        assert flags["fp32"] == ([], False) and flags["fp16"] == (["FP16"], False)
    else:     # 11.x: what each ONNX says, strongly typed
        assert flags["fp32"] == ([], True) and flags["fp16"] == ([], True)
    assert "int8" in flags
    for target in targets:
        target.close()
    built.clear()
    sweep()  # a second run reuses the cached engines
    assert not built and len(list((tmp_path / "engines").glob("*.engine"))) == 6
    speedups = model_bench.speedup_rows(rows)
    assert {s["config"] for s in speedups} == {"tensorrt/cuda/fp32", "tensorrt/cuda/fp16",
                                               "tensorrt/cuda/int8"}
    assert all("x_vs_pytorch_cpu" in s and "x_vs_pytorch_cuda" not in s for s in speedups)
    for target in targets:
        target.close()
    assert tensorrt_targets(tiny_pair.onnx, variants, [1], sizes=[]) == []  # --no-tensorrt
    only = tensorrt_targets(tiny_pair.onnx, variants, [1, 2], log=built.append, sizes=[(64, 96)])
    rows = model_bench.sweep(targets[:1] + only, ModelSpec(), [(64, 64), (64, 96)], [1], warmup=1,
                             repeats=1, frame=frame, log=lambda msg: None)
    assert {r["input"] for r in rows if r["backend"] == "tensorrt"} == {"64x96"} and not built
    for target in only:
        target.close()


def test_a_tensorrt_engine_that_fails_to_build_is_tried_once_per_size(trt, tiny_pair, tmp_path, monkeypatch):
    """A failed build (out of memory, no tactic) is each batch's error row, not a crash, and is
    not rebuilt for every batch of that size."""
    from benchmarks import model_bench
    from benchmarks.model_targets import tensorrt_targets
    from dbnet.spec import ModelSpec
    from engine.errors import ModelError
    from engine.tensorrt import cache

    monkeypatch.setenv("DBRT_ENGINE_CACHE", str(tmp_path / "engines"))
    attempts = []

    def failing(onnx, **options):
        attempts.append(options["profile"].opt)
        raise ModelError("could not find any implementation for node conv1")

    monkeypatch.setattr(cache, "cached_engine_runner", failing)
    targets = model_bench.default_targets(tiny_pair, threads=1)[:1]
    targets += tensorrt_targets(tiny_pair.onnx, {}, [1, 2, 4], log=lambda m: None)[:1]
    frame = np.zeros((48, 80, 3), np.uint8)
    rows = model_bench.sweep(targets, ModelSpec(), [(64, 64), (64, 96)], [1, 2, 4], warmup=1,
                             repeats=1, frame=frame, log=lambda m: None)
    errors = [r for r in rows if r["backend"] == "tensorrt"]
    assert len(errors) == 6 and all("no tactic" not in r["error"] and "conv1" in r["error"] for r in errors)
    assert len(attempts) == 2  # one build per size
    for target in targets:
        target.close()


def test_failing_configuration_is_a_row_not_a_crash(tiny_pair):
    from benchmarks import model_bench
    from dbnet.spec import ModelSpec

    good = model_bench.onnxruntime_target(tiny_pair.onnx, threads=1)

    def broken(batch):
        raise RuntimeError("out of memory\nsecond line")

    bad = model_bench.Target("fake", "cpu", "fp32", broken)
    frame = np.zeros((32, 32, 3), np.uint8)
    rows = model_bench.sweep([good, bad], ModelSpec(), [(32, 32)], [1], 0, 1, frame, log=lambda m: None)
    good.close()
    assert "error" not in rows[0] and rows[1]["error"] == "out of memory"


def test_run_all_index_and_dbrt_bench(tiny_pair, tmp_path, monkeypatch):
    from benchmarks import run_all
    from pipeline.cli import main

    out = tmp_path / "results"
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(out))  # run_all --out sets it too; undone after the test
    rc = run_all.main(["--only", "model", "--quick", "--out", str(out), "--model", str(tiny_pair.onnx),
                       "--model-args", "--sizes 64 --batches 1 --warmup 0 --repeats 1 --threads 1"])
    assert rc == 0
    index = (out / "index.md").read_text()
    assert "| model | ok |" in index and "| [model_bench.json](model_bench.json) | model only |" in index
    assert json.loads((out / "run_all.json").read_text())["runs"][0]["status"] == "ok"
    rows = json.loads((out / "model_bench.json").read_text())["rows"]
    assert [r["backend"] for r in rows] == ["onnxruntime"]  # no weights given: no PyTorch row
    assert main(["bench", "model", "--model", str(tiny_pair.onnx), "--sizes", "32", "--batches", "1",
                 "--warmup", "0", "--repeats", "1", "--threads", "1", "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "model_bench.md").is_file()


def test_run_all_quick_never_writes_over_the_committed_results(tmp_path, monkeypatch):
    """`run_all --quick` (tiny sweeps, "not for publishing") wrote into results/<machine>/, over
    the committed results, where a smoke run could be committed as if it were a full one."""
    import os

    from benchmarks import run_all

    monkeypatch.setattr(common, "REPO", tmp_path / "repo")
    monkeypatch.setattr(common, "RESULTS_ROOT", tmp_path / "repo" / "benchmarks" / "results")
    monkeypatch.delenv("DBRT_RESULTS_DIR")  # as a user runs it; restored after the test
    wrote = []
    monkeypatch.setattr(run_all, "run_one", lambda name, args, timeout: wrote.append(
        os.environ.get("DBRT_RESULTS_DIR")) or {"benchmark": name, "command": "x", "status": "ok"})
    assert run_all.main(["--only", "accuracy", "--quick"]) == 0
    quick = tmp_path / "repo" / "out" / "bench-quick" / common.machine_name()
    assert wrote == [str(quick)] and (quick / "index.md").is_file()
    assert not common.RESULTS_ROOT.exists()


@pytest.mark.parametrize("which,module", [("model", "model_bench"), ("postprocess", "postprocess_bench"),
                                          ("peer", "peer_rapidocr"), ("accuracy", "accuracy")])
def test_dbrt_bench_argument_errors_name_the_command(which, module, capsys):
    """A benchmark's usage errors say `dbrt bench X` when started that way, else `python -m`."""
    import importlib

    from pipeline.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", which, "--no-such-flag"])
    assert exc.value.code == 2
    assert f"dbrt bench {which}: error: unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        importlib.import_module(f"benchmarks.{module}").main(["--no-such-flag"])
    assert f"python -m benchmarks.{module}: error:" in capsys.readouterr().err


@pytest.mark.parametrize("argv, fragment", [
    (["model", "--no-such-flag"], "dbrt bench model: error: unrecognized arguments: --no-such-flag"),
    (["pipeline", "--no-such-flag"], "dbrt bench pipeline: error: unrecognized arguments"),
    (["all", "--timeout", "-1"], "dbrt bench all: error: argument --timeout: must be a number > 0, got '-1'"),
    (["all", "--timeout", "0"], "argument --timeout: must be a number > 0, got '0'"),
    # an --out that cannot be written was found only after the whole benchmark had run
    (["model", "--out", __file__], f"dbrt bench model: error: argument --out: {__file__!r} is a file"),
    (["all", "--out", f"{__file__}/sub"], "argument --out: cannot create folder"),
    (["peer", "--out", __file__], "argument --out: "),
])
def test_dbrt_bench_usage_errors_are_one_line_like_every_command(argv, fragment, capsys):
    """The benchmarks' parsers printed their usage block before the error; run_all took a
    timeout of -1 (every benchmark then 'timed out' at once)."""
    from pipeline.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench"] + argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_run_all_sizes_given_replace_the_default_tensorrt_sizes():
    from benchmarks import run_all

    quick = run_all.default_args("model", quick=True)
    assert quick[quick.index("--tensorrt-sizes") + 1] == "512"
    given = ["--sizes", "64", "--threads", "1"]
    assert "--tensorrt-sizes" not in run_all.default_args("model", quick=True, given=given)
    assert run_all.default_args("model", quick=True, given=["--threads", "1"]) == quick


def test_run_all_reports_missing_benchmarks(monkeypatch):
    from benchmarks import run_all

    monkeypatch.setitem(run_all.BENCHMARKS, "pipeline", ("benchmarks.no_such_module", "absent"))
    record = run_all.run_one("pipeline", [], timeout_s=5, log=lambda m: None)
    assert record["status"] == "missing"


def test_run_all_says_skipped_for_a_benchmark_that_measured_nothing(monkeypatch, tmp_path):
    """A benchmark without its data printed "skipped" and exited 0: the index said "ok"."""
    from benchmarks import run_all

    record = run_all.run_one("pipeline", ["--video", str(tmp_path / "none.mp4")], timeout_s=60,
                             log=lambda m: None)
    assert record["status"].startswith("failed (exit 2)")  # a video the user named: an error
    monkeypatch.setenv("DBRT_SHARED_DATA", str(tmp_path))  # the benchmark's own process
    record = run_all.run_one("pipeline", [], timeout_s=60, log=lambda m: None)
    assert record["status"].startswith("skipped: pipeline_overlap: skipped:"), record


# -- GPU proof machinery (the CPU-side parts here; the GPU parts under -m gpu) -------------------

def test_dense_map_and_box_comparison():
    from benchmarks import gpu_checks
    from pipeline.detections import Detections

    prob = gpu_checks.dense_map(128, 192, 12, seed=3)
    assert prob.shape == (128, 192) and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 0.98 and (prob > 0.6).any()
    quad = np.array([[0, 0], [10, 0], [10, 5], [0, 5]], np.float32)
    a = [Detections.from_quads(quad[None], [0.9])]
    same = gpu_checks.compare_detections(a, [Detections.from_quads(quad[None], [0.9])])
    assert same == {"boxes": 1, "same_count": True, "max_vertex_diff": 0.0, "max_score_diff": 0.0}
    moved = gpu_checks.compare_detections(a, [Detections.from_quads(quad[None] + 2, [0.8])])
    assert moved["max_vertex_diff"] == 2.0 and moved["max_score_diff"] == pytest.approx(0.1)
    assert not gpu_checks.compare_detections(a, [Detections.empty()])["same_count"]


def test_gpu_proof_report_from_recorded_steps(tmp_path, monkeypatch):
    from benchmarks import gpu_proof

    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path / "res"))
    stage = {"count": 10, "mean_ms": 2.0, "p50_ms": 1.9, "p95_ms": 2.5, "p99_ms": 3.0}
    pipe = {"batch": 1, "frames": 10, "pipeline_fps": 95.0, "model_alone_fps": 100.0, "ratio": 0.95,
            "gpu_in_model_share": 0.9, "gpu_idle_share": 0.1, "end_to_end": stage,
            "stages": {name: stage for name in ("decode", "preprocess", "infer", "postprocess", "sink")}}
    proof = gpu_proof.Proof(log=lambda m: None)
    proof.step("environment", lambda: {"gpus": ["NVIDIA H200"]})
    proof.step("preprocess", lambda: [{"batch": 1, "gpu_ms_per_frame": 0.1, "max_abs_diff": 1e-6}])
    proof.step("pipeline batch 1", lambda: pipe)
    proof.step("postprocess", lambda: (_ for _ in ()).throw(RuntimeError("boxes differ")))

    def skipped():
        raise gpu_proof.Skip("no GPU")
    proof.step("pipeline batch 4", skipped)
    assert [s["status"] for s in proof.steps] == ["ok", "ok", "ok", "failed: RuntimeError: boxes differ",
                                                  "skipped: no GPU"]
    md = gpu_proof.write_report(proof.steps, tmp_path / "out").read_text()
    assert "| 1 | 10 | 95.00 | 100.00 | 0.95 | 0.90 | 0.10 |" in md
    assert "| 1 | infer | 10 | 2.00 | 1.90 | 2.50 | 3.00 |" in md
    assert "postprocess: failure" in md and "boxes differ" in md
    assert (tmp_path / "out" / "results_res.tar.gz").is_file()
    assert (tmp_path / "res" / "gpu_proof_stages.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.gpu
def test_gpu_checks_on_the_gpu():
    from engine.lazy import cupy_or_none

    if cupy_or_none() is None:
        pytest.skip("needs CuPy and a CUDA device")
    from benchmarks import gpu_checks
    from dbnet.spec import ModelSpec

    frames = [np.random.default_rng(i).integers(0, 255, (90, 160, 3), dtype=np.uint8) for i in range(2)]
    pre = gpu_checks.check_preprocess(frames, ModelSpec().replace(limit_side=96), batches=(1, 2), repeats=3)
    assert len(pre) == 2 and all(r["max_abs_diff"] < 1e-2 for r in pre)
    post = gpu_checks.time_postprocess(gpu_checks.dense_map(256, 256, 20)[None], "tiny", repeats=3)
    assert post["same_count"] and post["max_vertex_diff"] <= 1.0


def test_pipeline_check_runs_on_cpu(tmp_path, tiny_onnx):
    """The pipeline measurement of the GPU proof, exercised with a CPU runner on a tiny video."""
    pytest.importorskip("av")
    from media import write_video

    from benchmarks import gpu_checks
    from engine.loader import RunnerOptions
    from pipeline.detector import Detector

    video = write_video(tmp_path / "clip.mp4", frames=12, height=48, width=64)
    with Detector(tiny_onnx, backend="onnxruntime", device="cpu",
                  options=RunnerOptions(threads=1)) as detector:
        result = gpu_checks.check_pipeline(video, detector, frames=12, batch=2)
        assert "infer" not in vars(detector.runner)  # the timing wrapper is gone again
    assert result["frames"] == 12 and result["batch"] == 2
    assert result["pipeline_fps"] > 0 and result["model_alone_fps"] > 0
    assert 0 < result["gpu_in_model_share"] <= 1 and result["gpu_idle_share"] == pytest.approx(
        1 - result["gpu_in_model_share"], abs=1e-3)
    assert {"decode", "preprocess", "infer", "postprocess"} <= set(result["stages"])


def test_dbrt_bench_missing_module_is_one_line(monkeypatch, capsys):
    from pipeline.cli import main
    from pipeline.commands import bench

    monkeypatch.setitem(bench.MODULES, "pipeline", "benchmarks.no_such_benchmark")
    assert main(["bench", "pipeline"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dbrt bench: error: benchmarks/no_such_benchmark.py is not in this checkout"]


def test_gpu_proof_skips_steps_past_its_budget():
    from benchmarks import gpu_proof

    written = []
    proof = gpu_proof.Proof(log=lambda m: None, budget_s=0.0, on_step=lambda steps: written.append(len(steps)))
    proof.step("late", lambda: "never runs")
    assert proof.steps[0]["status"].startswith("skipped: out of time") and "result" not in proof.steps[0]
    assert written == [1]


def test_model_maps_from_any_runner(tiny_onnx):
    from benchmarks import gpu_checks
    from dbnet.spec import ModelSpec
    from engine.onnxruntime.runner import OnnxRuntimeRunner

    frames = [np.full((40, 60, 3), 200, np.uint8), np.zeros((40, 60, 3), np.uint8)]
    with OnnxRuntimeRunner(tiny_onnx, device="cpu", threads=1) as runner:
        maps = gpu_checks.model_maps(runner, frames, ModelSpec(), [(32, 64), (64, 96)])
    assert list(maps) == ["model on video frames, 32x64", "model on video frames, 64x96"]
    assert maps["model on video frames, 64x96"].shape == (2, 64, 96)
    assert all(m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1 for m in maps.values())


def test_accuracy_benchmark_writes_protocol_tables(tmp_path, tiny_onnx, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    from benchmarks import accuracy

    data = tmp_path / "set"
    data.mkdir()
    cv2.imwrite(str(data / "img_1.jpg"), np.full((48, 64, 3), 255, np.uint8))
    (data / "gt_img_1.txt").write_text("4,4,40,4,40,20,4,20,word\n")
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path / "res"))
    assert accuracy.main(["--model", str(tiny_onnx), "--dataset", str(data), "--threads", "1"]) == 0
    payload = json.loads((tmp_path / "res" / "accuracy_set.json").read_text())
    assert payload["gt_care"] == 1 and payload["images"] == 1 and payload["model"]["file"] == tiny_onnx.name
    assert "| img_1.jpg |" in (tmp_path / "res" / "accuracy_set.md").read_text()
    with pytest.raises(SystemExit) as named:  # a model the user named: a mistake, exit 2
        accuracy.main(["--model", str(tmp_path / "none.onnx")])
    assert named.value.code == 2
    monkeypatch.setattr(accuracy, "SHIPPED", tmp_path / "none.onnx")
    assert accuracy.main([]) == common.SKIPPED  # nothing shipped: a note, no files


def test_pipeline_stage_bars_from_overlap_results(tmp_path):
    from benchmarks import run_all

    assert run_all.plot_pipeline_stages(tmp_path) is None
    row = {"mode": "pipeline (JSON lines)", "fps": 30.0, "decode_p50_ms": 2.0, "preprocess_p50_ms": 3.0,
           "infer_p50_ms": 20.0, "postprocess_p50_ms": 4.0, "sink_p50_ms": 0.5}
    common.write_json(tmp_path / "pipeline_overlap.json",
                      {"rows": [{"mode": "inference only", "fps": 40.0, "infer_p50_ms": 20.0}, row]})
    path = run_all.plot_pipeline_stages(tmp_path)
    assert path.name == "pipeline_stages.png" and path.read_bytes()[:8] == PNG_MAGIC


def test_pipeline_overlap_draws_the_stage_bars_of_its_own_passes():
    """Only run_all drew pipeline_stages.png, so a pipeline_overlap run on its own left the plot
    of an older run beside its results."""
    from types import SimpleNamespace

    from benchmarks import pipeline_overlap as overlap

    stages = {f"{s}_p50_ms": 1.0 for s in ("decode", "preprocess", "infer", "postprocess", "sink")}
    rows = [dict(mode="inference only", frames=10, seconds=1.0, fps=10.0),
            dict(mode=overlap.JSONL, frames=10, seconds=1.25, fps=8.0, cpu_s=1.0, infer_busy=0.9, **stages)]
    args = SimpleNamespace(video="v.mp4", threads=1, batch=1)
    assert overlap.write_results(args, rows, 10, "tiny", (64, 64), (0.5,), (0.5,)) == 0
    plot = common.results_dir() / "pipeline_stages.png"
    assert plot.read_bytes()[:8] == PNG_MAGIC


def test_fold_batchnorm_keeps_the_output_and_removes_bn():
    torch = pytest.importorskip("torch")
    from export.torch_runner import fold_batchnorm
    from export.model import DBNet

    torch.manual_seed(0)
    net = DBNet("resnet18", width=0.25).eval()
    bn = net.decoder.binarize[1]
    bn.running_var.fill_(2.5e5)  # like the shipped model's head: inf in fp16
    folded = fold_batchnorm(net)
    left = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(left) < sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert all(float(m.running_var.max()) < 6e4 for m in left)  # the overflowing one is folded
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(folded(x), net(x), atol=1e-5)
    assert torch.isfinite(torch.cat([p.half().flatten() for p in folded.parameters()])).all()


def test_postprocess_compiled_compares_both_paths_and_restores_the_modules(tmp_path, monkeypatch):
    from benchmarks import postprocess_compiled
    from pipeline.postprocess import compiled

    if not all(compiled.status().values()):
        pytest.skip("the C modules are not built here")
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path / "res"))
    assert postprocess_compiled.main(["--quick", "--repeats", "1", "--no-real"]) == 0
    payload = json.loads((tmp_path / "res" / "postprocess_compiled.json").read_text())
    assert len(payload["rows"]) == 8 and all(r["identical_boxes"] for r in payload["rows"])
    assert all(compiled.status().values())  # the benchmark leaves the modules in use


def test_width_cost_times_every_width_in_turns_and_checks_the_budget(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from benchmarks import width_cost

    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path))
    assert width_cost.main(["--widths", "0.25", "0.5", "--frames", "60x90", "--limit-side", "64",
                            "--repeats", "1", "--threads", "1"]) == 0
    payload = json.loads((tmp_path / "width_cost.json").read_text())
    rows = {row["model"]: row for row in payload["rows"]}
    assert {"width 0.25", "width 0.5"} <= set(rows)
    assert rows["width 0.5"]["input"] == "64x96" and rows["width 0.5"]["latency_vs_shipped_width"] == 1.0
    assert rows["width 0.25"]["parameters_m"] < rows["width 0.5"]["parameters_m"]
    assert rows["width 0.25"]["onnx_mb"] < rows["width 0.5"]["onnx_mb"] and rows["width 0.5"]["under_15_mb"]
    assert "| width 0.25 | 60x90 | 64x96 |" in (tmp_path / "width_cost.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--widths", "1.0"], "--widths must include 0.5"),
    (["--frames", "720by1280"], "expected HEIGHTxWIDTH"),
    (["--repeats", "0"], "--repeats must be at least 1"),
])
def test_width_cost_argument_errors_are_one_line(argv, message, capsys):
    from benchmarks import width_cost

    with pytest.raises(SystemExit) as stop:
        width_cost.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_input_size_scores_and_times_every_side_against_the_default(tmp_path, monkeypatch):
    from benchmarks import input_size
    from export.synth.dataset import write_dataset

    write_dataset(tmp_path / "val", 3, height=256, width=384)
    monkeypatch.setenv("DBRT_RESULTS_DIR", str(tmp_path / "out"))
    said = []
    assert input_size.main(["--val", str(tmp_path / "val"), "--sides", "736", "256", "320", "256",
                            "--repeats", "1", "--threads", "1"], log=said.append) == 0
    payload = json.loads((tmp_path / "out" / "input_size.json").read_text())
    rows = payload["rows"]
    assert [r["short_side"] for r in rows] == [256, 320, 736]  # sorted, once each
    assert [r["photo_input"] for r in rows] == ["256x384", "320x480", "736x1088"]
    assert rows[0]["video_input"] == "256x448" and rows[2]["video_input"] == "736x1312"
    assert rows[2]["photo_time_vs_736"] == 1.0 and rows[2]["video_time_vs_736"] == 1.0
    for row in rows:  # the model's own settings are on the grid, so tuning never scores lower
        assert row["own_settings"] == "0.25 / 0.4 / 1.1" and row["tuned_hmean"] >= row["own_hmean"]
    assert rows[2]["own_hmean"] > 0.5 and payload["images"] == 3
    assert "| 320 | 320x480 |" in (tmp_path / "out" / "input_size.md").read_text()
    assert (tmp_path / "out" / "input_size.png").stat().st_size > 0
    assert any(line.startswith("short side 736: photo 736x1088") for line in said)


def test_input_size_bad_input_is_one_line(tmp_path, capsys):
    from benchmarks import input_size

    for argv, message in ((["--sides", "736"], "--val"), (["--val", "x", "--sides", "16"], "from 32 to 4096"),
                          (["--val", "x", "--repeats", "0"], "--repeats must be at least 1")):
        with pytest.raises(SystemExit) as stop:
            input_size.main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err
    said = []
    assert input_size.main(["--val", str(tmp_path / "none"), "--model", str(tmp_path / "m.onnx")],
                           log=said.append) == 2
    assert said == [f"input_size: --model {tmp_path / 'm.onnx'}: no such file"]
    assert input_size.main(["--val", str(tmp_path / "none")], log=said.append) == 2
    assert "dataset not found" in said[-1] and len(said) == 2


@pytest.mark.parametrize("module, argv, fragment", [
    ("model_bench", ["--sizes", "0"], "--sizes: must be an integer >= 32"),
    ("model_bench", ["--batches", "0"], "--batches: must be an integer >= 1"),
    ("model_bench", ["--repeats", "0"], "--repeats: must be an integer >= 1"),
    ("int8_qat", ["--val", "/no/such/folder"], "--val /no/such/folder: not a folder"),
    ("peer_accuracy", ["--val", "/no/such/folder"], "--val /no/such/folder: not a folder"),
    ("reading_bench", ["--val", "/no/such/folder"], "--val /no/such/folder: not a folder"),
    ("reading_bench", ["--rounds", "0"], "--rounds: must be an integer >= 1"),
    ("reading_throughput", ["--chunks", "0"], "--chunks: must be an integer >= 1"),
    ("reading_throughput", ["--frames", "0"], "--frames: must be an integer >= 1"),
    ("peer_rapidocr", ["--rounds", "0"], "--rounds: must be an integer >= 1"),
    ("peer_rapidocr", ["--every", "0"], "--every: must be an integer >= 1"),
    ("pipeline_overlap", ["--rounds", "0"], "--rounds: must be an integer >= 1"),
    ("live_latency", ["--seconds", "0"], "--seconds: must be a number > 0"),
    ("serve_overhead", ["--rounds", "0"], "--rounds: must be an integer >= 1"),
    ("postprocess_compiled", ["--repeats", "0"], "--repeats: must be an integer >= 1"),
    ("triton_bench", ["--repeats", "0"], "--repeats: must be an integer >= 1"),
])
def test_benchmark_flags_are_checked_before_any_work(capsys, module, argv, fragment):
    """--sizes 0 ended in an OpenCV traceback, --repeats 0 wrote empty results over the
    committed ones, and int8_qat found a wrong --val only after minutes of fine-tuning;
    peer_accuracy and reading_bench ran every other set first and wrote results without the
    validation rows over the committed ones; a count of 0 rounds, repeats, chunks or frames
    ended after minutes of work in a traceback (no timing samples, a division by zero)."""
    import importlib

    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(f"benchmarks.{module}").main(argv)
    assert stopped.value.code == 2 and fragment in capsys.readouterr().err


def test_the_triton_benchmark_skips_in_one_line_without_a_server(capsys, tmp_path):
    from benchmarks import triton_bench

    assert triton_bench.main(["--venv", str(tmp_path / "none")]) == common.SKIPPED
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("triton_bench: skipped: no virtual environment")


def test_postprocess_bench_records_the_command_it_ran():
    """The results' command kept only --quick: a run of some settings, without the real maps or
    with fewer repeats, was recorded as the full benchmark."""
    from benchmarks import postprocess_bench

    argv = ["--quick", "--no-real", "--settings", "quad/fast", "--repeats", "1"]
    assert postprocess_bench.main(argv) == 0
    written = json.loads((common.results_dir() / "postprocess.json").read_text())
    assert written["command"] == "python -m benchmarks.postprocess_bench " + " ".join(argv)
    assert f"Command: `{written['command']}`" in (common.results_dir() / "postprocess.md").read_text()


def test_reading_bench_without_the_shared_data_says_skipped(capsys, tmp_path, monkeypatch):
    """It said so but exited 0, which run_all and scripts read as a benchmark that measured."""
    from benchmarks import reading_bench

    monkeypatch.setattr(common, "SHARED_DATA", tmp_path / "none")
    assert reading_bench.main([]) == common.SKIPPED
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("reading_bench: skipped: ")


def test_live_latency_pools_fps_over_frames_and_takes_the_median_latency():
    from benchmarks.live_latency import pooled

    passes = [dict(fps=10.0, frames=100, e2e_p50_ms=300.0, e2e_p95_ms=600.0, read=400, dropped=300),
              dict(fps=5.0, frames=50, e2e_p50_ms=500.0, e2e_p95_ms=900.0, read=400, dropped=350),
              dict(fps=8.0, frames=80, e2e_p50_ms=400.0, e2e_p95_ms=700.0, read=400, dropped=320)]
    result = pooled(passes)
    assert result["fps"] == round(230 / 30, 2)  # frames over summed seconds, not a mean of FPS
    assert (result["e2e_p50_ms"], result["e2e_p95_ms"]) == (400.0, 700.0)
    assert result["dropped_share"] == round(970 / 1200, 3)


def _builds_its_own_parser(path) -> bool:
    """Whether a benchmark's source calls argparse.ArgumentParser(...) itself."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "ArgumentParser":
            return True
    return False


def test_every_benchmark_parser_comes_from_common():
    """Benchmarks that `dbrt bench` does not run built their own argparse parser and printed
    the whole usage block on a mistake; common.argument_parser makes it one line everywhere."""
    from pathlib import Path

    folder = Path(common.__file__).parent
    own = sorted(p.name for p in folder.glob("*.py") if p.name != "common.py" and _builds_its_own_parser(p))
    assert own == []



def test_every_benchmark_parser_is_named_after_its_module():
    """live_latency passed `__name__`, which is '__main__' under `python -m`: its usage, its
    errors and its results' command said 'python -m __main__'."""
    import re
    from pathlib import Path

    folder = Path(common.__file__).parent
    for path in sorted(folder.glob("*.py")):
        for named in re.findall(r"(?:argument_parser|command_line)\(\s*([^,)]+)", path.read_text()):
            if path.name != "common.py":
                assert named == f'"benchmarks.{path.stem}"', (path.name, named)

@pytest.mark.parametrize("module", ["gpu_proof", "int8_qat", "int8_calibration", "triton_bench",
                                    "serve_soak", "postprocess_floor", "reading_bench"])
def test_benchmark_usage_mistakes_are_one_line(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(f"benchmarks.{module}").main(["--bogus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2
    assert len(err) == 1 and err[0].startswith(f"python -m benchmarks.{module}: error: "), err
    assert err[0].endswith(f"(see python -m benchmarks.{module} --help)")


# pytest plugin: the optional packages a bare GPU image lacks (dev and feature extras) cannot be
# imported, and importlib.util.find_spec does not find them
BARE_IMAGE_PLUGIN = '''
import importlib.abc, importlib.util, sys
MISSING = set(NAMES)
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError("No module named " + repr(name), name=name)
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in MISSING else _find_spec(name, package))
sys.meta_path.insert(0, _Missing())
'''
EXTRAS = ("shapely", "hypothesis", "scipy", "onnxconverter_common", "rapidocr", "supervision",
          "trackers", "prometheus_client", "paho", "tritonclient", "tensorrt")


def test_gpu_tests_are_collected_without_the_dev_extras(tmp_path):
    """The GPU proof's pytest run on a machine with only the runtime packages (+ torch, CuPy): no
    test module may fail to import, since one collection error stopped the whole run (the H200
    rerun had no shapely) and the GPU tests with it."""
    import os
    import subprocess
    import sys

    from benchmarks import gpu_proof

    (tmp_path / "bare_image.py").write_text(BARE_IMAGE_PLUGIN.replace("NAMES", repr(EXTRAS)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(common.REPO)])}
    args = [a for a in gpu_proof.GPU_TEST_ARGS if a != "--continue-on-collection-errors"]
    proc = subprocess.run([sys.executable, "-m", "pytest", *args, "--collect-only", "-p",
                           "no:hypothesispytest", "-p", "bare_image", "tests"],
                          cwd=common.REPO, env=env, capture_output=True, text=True, timeout=300)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "error" not in said.lower(), said[-3000:]
    assert "test_cuda_kernel_matches_emulation_and_cpu" in said


def test_the_model_sweep_times_its_targets_in_turns():
    """Each target was timed for all its repetitions before the next began, so a change of the
    machine's load (another process, a frequency step) fell on one backend's numbers only."""
    from benchmarks import model_bench
    from dbnet.spec import ModelSpec

    calls = []

    def target(name):
        def prepare(batch):
            return (lambda: calls.append(name)), (lambda: np.zeros((1, 1, 8, 8), np.float32))
        return model_bench.Target(name, "cpu", "fp32", prepare)

    frame = np.zeros((32, 32, 3), np.uint8)
    rows = model_bench.sweep([target("a"), target("b")], ModelSpec(), [(32, 32)], [1], warmup=1,
                             repeats=3, frame=frame, log=lambda m: None)
    assert [r["backend"] for r in rows] == ["a", "b"] and all(r["n"] == 3 for r in rows)
    timed = calls[-6:]  # after the reference call and one warm-up each
    assert timed == ["a", "b"] * 3
