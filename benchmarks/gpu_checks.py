"""The GPU measurements of issue 9, each comparing the GPU path with its CPU twin on the same data:

* preprocess:  pipeline.gpu_preprocess (one CuPy kernel) vs pipeline.preprocess (OpenCV / NumPy):
               max abs difference of the network input, ms per frame.
* postprocess: DBPostprocessor on CuPy maps vs NumPy maps (dense synthetic 1 MP / 4 MP maps, and
               real maps of the model on video frames): identical boxes (count, max vertex
               difference, max score difference), ms per map including the compact copy, ratio.
* pipeline:    the threaded Pipeline on a video with a GPU runner vs that runner alone on the same
               frames (already preprocessed on the GPU): FPS ratio (target >= 0.9), per-stage
               latencies, and the share of wall time the GPU spent outside the model's calls.

Every function returns plain dicts (rows for a table); benchmarks.gpu_proof runs them in order.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from . import common


class Skip(Exception):
    """A step that cannot run here (no GPU, no data, a module not written yet). Defined here, not
    in gpu_proof, so that steps in other modules raise the class `python -m benchmarks.gpu_proof`
    catches (run as __main__, gpu_proof's own classes are a second copy)."""


def read_frames(video, count: int) -> List[np.ndarray]:
    """The first `count` frames of a video as BGR uint8 arrays (OpenCV; no PyAV needed)."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise RuntimeError(f"no frames could be read from {video}")
    return frames


def _cuda_sync():
    """Wait for all GPU work (whatever stream the runner or kernel used)."""
    import cupy

    cupy.cuda.runtime.deviceSynchronize()


# -- preprocessing -----------------------------------------------------------------------------

def check_preprocess(frames: Sequence[np.ndarray], spec, batches=(1, 8), repeats: int = 20) -> List[dict]:
    """GPU time includes the pinned copy and upload of the uint8 frames (what the pipeline pays)."""
    from pipeline.gpu_preprocess import GpuPreprocessor
    from pipeline.preprocess import preprocess_batch

    gpu = GpuPreprocessor(spec)
    h, w = frames[0].shape[:2]
    size = spec.resize.input_size(h, w)
    rows = []
    for batch in batches:
        group = list(frames[:batch])
        cpu_batch, _ = preprocess_batch(group, spec, size)
        gpu_batch, _ = gpu(group, size)
        diff = float(np.abs(gpu_batch.get() - cpu_batch).max())
        g = common.measure(lambda: gpu(group, size), 3, repeats, _cuda_sync)
        c = common.measure(lambda: preprocess_batch(group, spec, size), 2, max(3, repeats // 4))
        rows.append({"frame": f"{h}x{w}", "input": f"{size[0]}x{size[1]}", "batch": batch,
                     "gpu_ms_per_frame": round(g.median_ms / batch, 3),
                     "cpu_ms_per_frame": round(c.median_ms / batch, 3),
                     "speedup": round(c.median_ms / g.median_ms, 1), "max_abs_diff": diff})
    return rows


# -- post-processing ---------------------------------------------------------------------------

def dense_map(h: int, w: int, components: int, seed: int = 0) -> np.ndarray:
    """A synthetic probability map: `components` rotated text-like boxes on a low background."""
    import cv2

    rng = np.random.default_rng(seed)
    prob = rng.uniform(0.0, 0.1, (h, w)).astype(np.float32)
    for _ in range(components):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        bw, bh = rng.uniform(8, max(12, w / 12)), rng.uniform(5, max(8, h / 40))
        angle = rng.uniform(-30, 30)
        box = cv2.boxPoints(((cx, cy), (bw, bh), angle)).astype(np.int32)
        cv2.fillPoly(prob, [box], float(rng.uniform(0.65, 0.98)))
    return prob


def compare_detections(a, b) -> dict:
    """Box agreement of two Detections lists (same order expected from the same maps)."""
    count_equal, vertex, score = True, 0.0, 0.0
    for da, db in zip(a, b):
        if len(da) != len(db):
            count_equal = False
            continue
        for pa, pb in zip(da.polygons, db.polygons):
            vertex = max(vertex, float(np.abs(pa - pb).max()) if pa.shape == pb.shape else np.inf)
        if len(da):
            score = max(score, float(np.abs(da.scores - db.scores).max()))
    return {"boxes": sum(len(d) for d in a), "same_count": count_equal,
            "max_vertex_diff": vertex, "max_score_diff": score}


def time_postprocess(maps: np.ndarray, label: str, repeats: int = 10) -> dict:
    """GPU vs CPU DBPostprocessor on (N, H, W) maps at input resolution."""
    import cupy

    from pipeline.postprocess import DBPostprocessor, PostprocessConfig
    from pipeline.preprocess import make_letterbox

    n, h, w = maps.shape
    boxes = [make_letterbox(h, w, h, w)] * n
    post_cpu = DBPostprocessor(PostprocessConfig(), device="cpu")
    post_gpu = DBPostprocessor(PostprocessConfig(), device="gpu")
    on_gpu = cupy.asarray(maps)
    agreement = compare_detections(post_cpu(maps, boxes), post_gpu(on_gpu, boxes))
    g = common.measure(lambda: post_gpu(on_gpu, boxes), 3, repeats, _cuda_sync)
    c = common.measure(lambda: post_cpu(maps, boxes), 1, max(3, repeats // 3))
    return {"maps": label, "size": f"{h}x{w}", "mpix": round(h * w / 1e6, 2),
            "gpu_ms_per_map": round(g.median_ms / n, 3), "cpu_ms_per_map": round(c.median_ms / n, 3),
            "speedup": round(c.median_ms / g.median_ms, 1), **agreement}


def check_postprocess(real_maps: Dict[str, np.ndarray] = None, components=(10, 100, 1000)) -> List[dict]:
    rows = []
    for h, w in ((1024, 1024), (2048, 2048)):
        for n in components:
            rows.append(time_postprocess(dense_map(h, w, n, seed=n)[None], f"synthetic, {n} boxes"))
    for label, maps in (real_maps or {}).items():
        rows.append(time_postprocess(maps, label))
    return rows


def model_maps(runner, frames: Sequence[np.ndarray], spec, sizes: Sequence[Tuple[int, int]]) -> Dict[str, np.ndarray]:
    """Real probability maps: the model on video frames, at each network input size."""
    from pipeline.preprocess import preprocess_batch

    out = {}
    for size in sizes:
        batch, _ = preprocess_batch(list(frames[:2]), spec, size)
        prob = runner.infer(batch)[runner.output_names[0]]
        prob = prob.get() if hasattr(prob, "get") else np.asarray(prob)
        out[f"model on video frames, {size[0]}x{size[1]}"] = prob[:, 0].astype(np.float32)
    return out


# -- the full pipeline -------------------------------------------------------------------------

class InferSpanRecorder:
    """Wraps a runner's `infer` to add up the time spanned by the model's calls: CUDA events on the
    current stream for a GPU runner (no synchronisation inside the pipeline), the host clock
    otherwise. The PyTorch stand-in synchronises its stream before returning, so a span covers
    its GPU work."""

    def __init__(self, runner, gpu: bool):
        self.runner, self.gpu = runner, gpu
        self.spans: List[tuple] = []
        self._own_attr = "infer" in vars(runner)  # usually the class's method
        self._infer = runner.infer
        runner.infer = self._timed

    def _mark(self):
        if not self.gpu:
            return time.perf_counter()
        import cupy

        event = cupy.cuda.Event()
        event.record()
        return event

    def _timed(self, feed):
        start = self._mark()
        out = self._infer(feed)
        self.spans.append((start, self._mark()))
        return out

    def busy_ms(self) -> float:
        if not self.spans:
            return 0.0
        if not self.gpu:
            return 1e3 * sum(end - start for start, end in self.spans)
        import cupy

        self.spans[-1][1].synchronize()
        return float(sum(cupy.cuda.get_elapsed_time(start, end) for start, end in self.spans))

    def restore(self) -> None:
        if self._own_attr:
            self.runner.infer = self._infer
        else:
            del self.runner.infer


def check_pipeline(video, detector, frames: int, batch: int = 1) -> dict:
    """Pipeline FPS vs the same runner alone on the same frames (already preprocessed, on the
    GPU for a GPU runner); per-stage latencies; share of wall time outside the model's calls."""
    from pipeline.runner import Pipeline

    gpu = detector.runner.output_device == "cuda"
    images = read_frames(video, frames)
    prepared = [detector.prepare(images[i:i + batch]) for i in range(0, len(images) - batch + 1, batch)]
    alone = _model_alone_fps(detector, prepared, batch, gpu)
    recorder = InferSpanRecorder(detector.runner, gpu)
    try:
        report = Pipeline([str(video)], detector, batch=batch, max_frames=frames).run()
        busy = recorder.busy_ms()
    finally:
        recorder.restore()
    wall_ms = report["wall_s"] * 1e3
    return {"video": Path(str(video)).name, "frames": report["frames"], "batch": batch,
            "pipeline_fps": report["fps"], "model_alone_fps": round(alone, 2),
            "ratio": round(report["fps"] / alone, 3) if alone else None,
            "gpu_in_model_share": round(busy / wall_ms, 3) if wall_ms else None,
            "gpu_idle_share": round(1 - busy / wall_ms, 3) if wall_ms else None,
            "stages": report["stages"], "end_to_end": report["end_to_end"],
            "queues": report.get("queues"), "model": report.get("model")}


def _model_alone_fps(detector, prepared, batch: int, gpu: bool) -> float:
    sync = _cuda_sync if gpu else (lambda: None)
    for array, _ in prepared[:3]:
        detector.infer(array)
    sync()
    start = time.perf_counter()
    for array, _ in prepared:
        detector.infer(array)
    sync()
    return len(prepared) * batch / (time.perf_counter() - start)


def check_video_encoders(frames: Sequence[np.ndarray], codecs=("libx264", "h264_nvenc", "hevc_nvenc"),
                         size=(1920, 1080)) -> List[dict]:
    """The annotated video's encoders on the same 1080x1920 frames: CPU and wall ms per frame
    and bytes per frame, x264 beside NVENC (`dbrt run --video-codec`), or why one cannot open."""
    import tempfile
    import time
    from pathlib import Path

    import cv2

    from engine.errors import DbrtError
    from pipeline.encoder import VideoEncoder, check_encoder

    if not frames:  # the proof passes [] when its video is missing
        raise Skip("no video frames to encode")
    pictures = [cv2.resize(f, size[::-1]) for f in frames]
    rows = []
    for codec in codecs:
        try:
            check_encoder(codec)
        except DbrtError as exc:
            rows.append({"codec": codec, "error": str(exc)})
            continue
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{codec}.mp4"
            encoder = VideoEncoder(path, size[1], size[0], 30.0, codec, 23)
            cpu, wall = time.process_time(), time.perf_counter()
            for index, picture in enumerate(pictures):
                encoder.encode(picture, index / 30.0)
            encoder.close()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            rows.append({"codec": codec, "frames": len(pictures),
                         "cpu_ms_per_frame": round(1e3 * cpu / len(pictures), 2),
                         "wall_ms_per_frame": round(1e3 * wall / len(pictures), 2),
                         "kib_per_frame": round(path.stat().st_size / 1024 / len(pictures), 1)})
    return rows


def check_video_decoders(video, max_frames: int = 600, hwaccels=(None, "cuda")) -> List[dict]:
    """A video file decoded to the pipeline's BGR pictures as `dbrt run` reads it
    (VideoFileSource): frames per second, CPU and wall ms per frame (CPU: the whole process,
    FFmpeg's threads included), software beside NVDEC (`dbrt run --hwaccel cuda`), or why
    NVDEC cannot open here. `decoder` is the one that ran (software, when NVDEC refused the
    stream)."""
    import itertools

    from engine.errors import DbrtError
    from pipeline.sources import VideoFileSource
    from pipeline.sources.hwdecode import check_hwaccel

    if video is None or not Path(video).is_file():  # the proof passes None when it has none
        raise Skip(f"video not found: {video}")
    rows = []
    for hwaccel in hwaccels:
        try:
            check_hwaccel(hwaccel)
        except DbrtError as exc:
            rows.append({"hwaccel": hwaccel, "decoder": "nvdec", "error": str(exc)})
            continue
        source = VideoFileSource(video, hwaccel=hwaccel).open()  # a CUDA context: not timed
        frames = iter(source)
        cpu, wall = time.process_time(), time.perf_counter()
        count = sum(1 for _ in itertools.islice(frames, max_frames))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        frames.close()
        width, height = source.coded_size or (None, None)
        rows.append({"hwaccel": hwaccel, "decoder": source.decoding.decoder, "video": Path(video).name,
                     "size": f"{width}x{height}", "frames": count,
                     "fps": round(count / wall, 1) if wall > 0 else None,
                     "cpu_ms_per_frame": round(1e3 * cpu / max(count, 1), 2),
                     "wall_ms_per_frame": round(1e3 * wall / max(count, 1), 2)})
    return rows
