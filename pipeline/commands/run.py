"""`dbrt run`: detect text in videos, streams, cameras or images; write JSON lines, an annotated
video and a report; print live progress and a FPS / latency summary."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from pipeline.encoder import VIDEO_CODECS

from ._network import (add_mqtt_arguments, check_mqtt_flags, check_restream, network_sinks,
                       print_network_summary)
from ._outputs import (clear_earlier_outputs, input_files, plain_outputs, refuse_video_over_input,
                       visual_sinks)
from ._report import add_report_argument, live_report, run_report
from . import _segments
from ._sources import add_stream_arguments, camera_mode, check_stream_flags
from ._starting import StartSignals  # loaded with the command: installed the moment it runs
from ._model import (DLA_HELP, REC_MARGIN_HELP, THREADS_HELP, TRUST_ENGINE_HELP, add_direction_arguments,
                     add_ignore_argument, add_reconnect_arguments, add_triton_arguments, check_ignore_zones)
from ._validate import (DEVICES, MAX_CPU_THREADS, MAX_SESSIONS, at_least, fourcc, frame_size,
                        input_size, listen_address, output_folder, region, restream_url, side_length,
                        zero_to_one)

NAME = "run"
ORDER = 10
DRAIN_LIMIT_S = 5.0  # with the closing that follows, within docker stop's 10 s before SIGKILL
HELP = "detect text in videos, streams, cameras or images (default: the bundled demo video)"
DESCRIPTION = (
    "Run the threaded detection pipeline. SOURCE may be a video file, an rtsp:// http(s):// "
    "(MPEG-TS, HLS) rtmp:// udp:// URL, a camera index (0) or device (/dev/video0), a Jetson CSI "
    "camera (csi://0), a GStreamer pipeline (gst:'nvv4l2camerasrc ! ...', without a sink), an "
    "image, a folder of images or a glob (image files named one after another are one source). "
    "Several sources are batched together. Writes "
    "OUTPUT/detections.jsonl (one line per frame, flushed as it goes), annotated video(s) or "
    "images, and OUTPUT/report.json (FPS, per-stage p50/p95/p99, drops, reconnects; "
    "rewritten while the run goes on).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="inputs (default: pipeline/assets/demo.mp4); a stream's password stays "
                        "out of the process list as rtsp://USER@HOST/... with the "
                        "DBRT_SOURCE_PASSWORD environment variable, or as "
                        "rtsp://USER:{DBRT_NAME}@HOST/..., the variable DBRT_NAME holding it"),
    p.add_argument("-o", "--output", default="out/run", type=output_folder, help="output folder")
    m = p.add_argument_group("model")
    m.add_argument("--model", help=".onnx, TensorRT .engine, or triton://HOST[:PORT]/NAME: a model "
                                   "served by Triton Inference Server, reached over gRPC "
                                   "(pip install 'dbrt[triton]'); default: the shipped model")
    m.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "onnxruntime"))
    m.add_argument("--device", default="auto", choices=DEVICES, help="where the model runs")
    m.add_argument("--preset", help="pre/post-processing preset for foreign models (db, ppocr, mmocr)")
    m.add_argument("--threads", type=at_least(0, at_most=MAX_CPU_THREADS), default=0,
                   help=THREADS_HELP)
    m.add_argument("--sessions", type=at_least(1, at_most=MAX_SESSIONS), default=1,
                   help="ONNX Runtime on the CPU: N sessions (of --threads threads, default 1) "
                        "share each batch of >= N frames; often faster than one N-thread session "
                        f"(at most {MAX_SESSIONS}: each holds a copy of the model)")
    m.add_argument("--ort-spin", choices=("on", "off"),
                   help="ONNX Runtime: idle inference threads busy-wait (on) or sleep (off); "
                        "default: ONNX Runtime's (on)")
    m.add_argument("--trust-engine-code", action="store_true", help=TRUST_ENGINE_HELP)
    m.add_argument("--dla-core", type=at_least(0), metavar="N", help=DLA_HELP)
    add_triton_arguments(p)
    t = p.add_argument_group("reading text")
    t.add_argument("--read", action="store_true",
                   help="read the text in every polygon (PP-OCR rec from the rapidocr wheel: "
                        "pip install 'dbrt[read]')")
    t.add_argument("--rec-model",
                   help="a CTC recognizer .onnx, (N,3,48,W) -> (N,T,classes) (implies --read)")
    t.add_argument("--rec-dict",
                   help="its dictionary, one character per line (default: the model's own "
                        "'character' metadata; implies --read)")
    t.add_argument("--rec-margin", type=zero_to_one, metavar="FRACTION",
                   help=REC_MARGIN_HELP)
    add_direction_arguments(t)
    t.add_argument("--track", action="store_true",
                   help="follow texts across frames (ByteTrack, pip install 'dbrt[track]'): "
                        "track ids per detection and OUTPUT/events.jsonl: a 'start' line per "
                        "track as it appears, an 'end' line as it ends (with --read: its text)")
    t.add_argument("--events-every", type=at_least(0.0, float, strict=True), metavar="SECONDS",
                   help="also write an 'update' line to events.jsonl every SECONDS of stream "
                        "time while a track lives, when it was seen since its last line "
                        "(between its 'start' and 'end' lines; implies --track)")
    r = p.add_argument_group("input size and thresholds (default: from the model)")
    r.add_argument("--max-side", type=side_length,
                   help="cap the long side at N pixels (limit_type max)")
    r.add_argument("--limit-side", type=side_length, help="the resize rule's side length")
    r.add_argument("--input-size", type=input_size, help="fixed network input HxW for every frame")
    r.add_argument("--keep-aspect", action="store_true", help="letterbox instead of stretching")
    r.add_argument("--roi", type=region, metavar="X,Y,W,H",
                   help="detect only in this region of each frame (resized by the rule above as "
                        "if it were the frame; boxes stay in frame pixels): frame pixels "
                        "(100,400,800,300) or, written with a decimal point, fractions of the "
                        "frame (0.1,0.5,0.8,0.4; for sources of different sizes); clipped to "
                        "the frame")
    add_ignore_argument(r)
    r.add_argument("--thresh", type=zero_to_one, help="binarisation threshold of the probability map")
    r.add_argument("--box-thresh", type=zero_to_one, help="minimum mean probability of a box")
    r.add_argument("--unclip-ratio", type=at_least(0.0, float), help="box expansion ratio")
    q = p.add_argument_group("pipeline")
    q.add_argument("--batch", type=at_least(0), default=0,
                   help="max frames per engine call (0: one per source, and at least what a model "
                        "of a fixed batch size takes)")
    q.add_argument("--batch-timeout-ms", type=at_least(0.0, float), default=10.0,
                   help="wait this long for more frames once a batch has its first")
    q.add_argument("--queue-size", type=at_least(1),
                   help="capacity of each stage queue, in batches (default: 4; with a live "
                        "source in the run, 1, and a source's next frame is taken only once "
                        "fewer than a batch of frames waits in them and, when files share the "
                        "run, none of its own, so that results stay fresh; given, the queues "
                        "fill instead)")
    q.add_argument("--max-frames", type=at_least(1),
                   help="stop each source after N frames (frames run, under --sample-fps)")
    q.add_argument("--sample-fps", type=at_least(0.0, float, strict=True), metavar="FPS",
                   help="run at most FPS frames per second of each video or stream, spread "
                        "evenly by their timestamps (a long recording scanned quickly, a camera "
                        "at less power); the others are counted as sampled out, never as lost")
    q.add_argument("--drain-limit", type=at_least(0.0, float), default=DRAIN_LIMIT_S, metavar="S",
                   help="after Ctrl-C or SIGTERM, write the frames already read for at most S "
                        "seconds, then stop at once (those left are counted as lost) and write "
                        f"the report (default {DRAIN_LIMIT_S:g}: docker stop kills after 10 s; "
                        "--restream servers that take no more frames are waited for up to 5 s "
                        "after the drain)")
    q.add_argument("--decode-threads", type=at_least(0, at_most=MAX_CPU_THREADS), default=0,
                   help=f"FFmpeg decoding threads (0: auto; at most {MAX_CPU_THREADS})")
    add_stream_arguments(q)
    add_reconnect_arguments(q, "network streams, gst: pipelines and a triton:// model: reconnect "
                               "attempts per outage (-1: forever, 0: none); a stream or model "
                               "server down at the start is waited for the same way, a stream "
                               "while the other sources run (0: it fails at start)")
    c = p.add_argument_group("cameras (0, /dev/video0, csi://0): the capture mode to ask for; report.json "
                             "has the one the camera gives")
    c.add_argument("--camera-size", type=frame_size, metavar="WxH", help="e.g. 1920x1080")
    c.add_argument("--camera-fps", type=at_least(0.0, float, strict=True), metavar="FPS")
    c.add_argument("--camera-fourcc", type=fourcc, metavar="CODE", help="pixel format, e.g. MJPG "
                   "(USB cameras send large sizes at full rate only compressed)")
    o = p.add_argument_group("outputs")
    o.add_argument("--no-video", action="store_true", help="do not write annotated video / images")
    o.add_argument("--video-codec", choices=VIDEO_CODECS, default="libx264",
                   help="the annotated video's encoder (and --restream's): x264 on the CPU "
                        "(default), or NVENC's H.264 / HEVC on an NVIDIA GPU, which takes the "
                        "encoding off the CPU")
    o.add_argument("--show", action="store_true", help="show annotated frames in a window (q quits)")
    o.add_argument("--show-scores", action="store_true", help="write each box's score")
    o.add_argument("--quiet", action="store_true", help="no progress line")
    _segments.add_segment_arguments(o)
    add_report_argument(o)
    w = p.add_argument_group("live view and events")
    w.add_argument("--serve", type=listen_address, metavar="[HOST:]PORT",
                   help="serve a live web view, /metrics (Prometheus), /healthz and /api/status "
                        "(HOST defaults to 127.0.0.1; 0.0.0.0 listens on every interface)")
    w.add_argument("--serve-token", metavar="TOKEN",
                   help="require this token from every request (Bearer header, ?token= or the "
                        "cookie a valid ?token= sets); "
                        "default: the DBRT_SERVE_TOKEN environment variable, else none")
    w.add_argument("--serve-fps", type=at_least(0.1, float), default=10.0,
                   help="most pictures per second and stream sent to viewers")
    w.add_argument("--restream", type=restream_url, metavar="URL",
                   help="also send the annotated video of each video, stream and camera source (not "
                        "images) live to URL: rtsp://HOST:PORT/PATH "
                        "(published to an RTSP server, e.g. MediaMTX, over TCP), rtmp://HOST/APP/KEY, "
                        "udp://HOST:PORT or srt://HOST:PORT (MPEG-TS); with several sources, "
                        "{stream} (the source's index) or {name} (its name, as in its annotated "
                        "video's) in URL gives each its own; a server that is down is retried, "
                        "frames it misses are dropped and counted; the run never waits for it, but "
                        "for up to 5 s at its end while the streams finish")
    add_mqtt_arguments(w)


def run(args) -> int:
    with StartSignals() as start:  # until the run's own handlers take over
        try:
            pipe, progress, out = build_pipeline(args, start)
        except BaseException as exc:
            if start.stopped_by(exc) is None:
                raise
            return start.say_stopped(start.stopped_by(exc))
        start.end()  # a signal from here on is the run's: it stops before its first frame
        try:
            with live_report(pipe, out, args):  # ended before the final report below
                pipe.run()
        except BaseException as exc:  # also after Ctrl-C: every frame that reached the sinks is in the report
            finish(pipe, progress, out, args, error=exc)
            raise
        finish(pipe, progress, out, args)
    failed = pipe.metrics.failed_frames
    if failed:  # like a damaged input: everything else is written, the exit status says so
        from engine.errors import InferenceFailed

        raise InferenceFailed(f"{failed} frames failed in inference and were not written "
                              f"(last: {pipe.metrics.failures[-1]}); see {out / 'report.json'}")
    start.check_after_the_run()  # a stop while the report was written: 143 / 130 all the same
    return 0


def _check_flag_pairs(args) -> None:
    """A flag that only means something with another one is refused alone rather than ignored."""
    import os

    from engine.errors import DbrtError

    from ._model import check_dla_flag, check_trust_engine_code, spec_changes

    spec_changes(args)  # --max-side with --limit-side / --limit-type
    check_trust_engine_code(args)
    check_dla_flag(args)
    _segments.check_segment_flags(args)
    if args.serve and args.serve_token is None and "DBRT_SERVE_TOKEN" in os.environ:
        args.serve_token = os.environ["DBRT_SERVE_TOKEN"]
        if not args.serve_token.strip():
            raise DbrtError("DBRT_SERVE_TOKEN is set but empty (an unset variable in a service "
                            "file?); give it a token, or unset it to serve without one")
    if args.serve_token is not None and not args.serve_token.strip():
        raise DbrtError("--serve-token is empty (an unset variable?); give a token, or set "
                        "DBRT_SERVE_TOKEN, which also keeps it out of the process list")
    check_mqtt_flags(args)
    if args.serve_token and not args.serve:
        raise DbrtError("--serve-token applies to --serve only; add --serve or drop --serve-token")
    if args.video_codec != "libx264":
        if args.no_video and not args.restream:
            raise DbrtError(f"--video-codec {args.video_codec} encodes the annotated video; with "
                            "--no-video there is none: drop one")
        from pipeline.encoder import check_encoder

        check_encoder(args.video_codec)  # NVENC without an NVIDIA GPU: now, not at the first frame
    from pipeline.sources.hwdecode import check_hwaccel

    check_hwaccel(args.hwaccel)  # NVDEC likewise: before the sources open and the model loads
    if args.show_scores and args.no_video and not (args.show or args.serve or args.restream):
        raise DbrtError("--show-scores writes scores on the annotated video / images, the --show "
                        "window, the --serve view or the --restream video; with --no-video there "
                        "is none: drop one")


def build_pipeline(args, start):
    """Sources are opened first (a bad path fails before the model loads), then the model."""
    import signal

    from engine.errors import DbrtError
    from pipeline.shipped import DEMO_VIDEO
    from pipeline.metrics import Progress
    from pipeline.runner import Pipeline
    from pipeline.sources import Reconnect, is_camera_spec, open_sources
    from pipeline.sources.images import image_file_runs

    from ._model import build_detector

    _check_flag_pairs(args)
    retries = None if args.reconnect < 0 else args.reconnect
    reconnect = Reconnect(retries=retries, delay=args.reconnect_delay) if retries != 0 else None
    specs, camera = args.sources or [str(DEMO_VIDEO)], camera_mode(args)
    if camera and not any(is_camera_spec(spec) for spec in specs):
        raise DbrtError("--camera-size / --camera-fps / --camera-fourcc apply to cameras "
                        "(0, /dev/video0, csi://0); none of the sources is one")
    from ._passwords import source_password

    streams = check_stream_flags(args, specs)  # --rtsp-transport, --source-timeout
    start.phase = "opening the sources"
    sources = open_sources(image_file_runs(specs), made=start.watch, reconnect=reconnect,
                           decode_threads=args.decode_threads, camera=camera,
                           password=source_password(specs), hwaccel=args.hwaccel, **streams)
    try:
        start.check()
        if args.hwaccel and not any(s.kind in ("video", "network") for s in sources):
            raise DbrtError(f"--hwaccel {args.hwaccel} decodes video files and network streams; "
                            "none of the sources is one")
        for source in sources:  # a pixel --roi no frame of a video meets: before the model loads
            size = getattr(source, "coded_size", None)
            if args.roi is not None and size:
                args.roi.check_coded_size(*size)
            check_ignore_zones(args, size)
        if args.restream:
            check_restream(args.restream, sources)
        _segments.check_segment_sources(args, sources)
        start.phase, args.stopping = "loading the model", start.stopping  # ends a server wait
        detector = build_detector(args)
    except BaseException:
        for source in sources:
            source.close()
        raise
    pipe = Pipeline(
        sources, detector, close_detector=True, batch=args.batch,
        batch_timeout=args.batch_timeout_ms / 1e3, queue_size=args.queue_size,
        max_frames=args.max_frames, sample_fps=args.sample_fps,
        stop_signals=(signal.SIGINT, signal.SIGTERM), drain_limit=args.drain_limit,
        track=args.track or args.events_every is not None)
    out = Path(args.output)
    try:
        start.check()  # a stop during the model load: no web view, broker or file is started
        start.outputs(pipe.sources)  # a stop from here on is the run's, which owns the sources
        if not args.no_video:
            refuse_video_over_input(pipe, out)
        pipe.sinks.extend(_sinks(pipe, out, args))
    except BaseException:
        pipe.close()
        raise
    clear_earlier_outputs(out, plain_outputs(pipe, args), input_files(pipe))
    progress = None
    if not args.quiet:
        progress = Progress(pipe.metrics, pipe.total_frames)
        pipe.callbacks.append(lambda frame, dets: progress.update(pipe.dropped))
    _print_header(pipe, out)
    return pipe, progress, out


def _sinks(pipe, out: Path, args) -> list:
    """The run's sinks, results files first. The sinks a user's flag can make fail (a busy
    port, no display, a bad certificate) are made before the files are opened, so a run that
    cannot start leaves the previous run's results as they were."""
    from pipeline.draw import BannerAnnotator, PolygonAnnotator, region_annotators
    from pipeline.sinks import ImageSink, JsonlSink, VideoSink, WindowSink

    annotators = region_annotators(pipe.detector)  # --roi / --ignore first: boxes go over them
    annotators.append(PolygonAnnotator(show_score=args.show_scores))
    if pipe.detector.recognizer is not None:
        from pipeline.text_draw import TextAnnotator

        annotators.append(TextAnnotator(show_score=args.show_scores))
    if pipe.detector.untrained:
        annotators.append(BannerAnnotator("UNTRAINED MODEL: boxes are meaningless"))
    outputs, files, segments = [], [], _segments.run_segments(args, input_files(pipe))
    try:  # a sink that cannot start closes those made before it
        if args.show:
            outputs.append(WindowSink(on_quit=pipe.stop, annotators=annotators))
        outputs.extend(network_sinks(pipe, args, annotators))
        files.append(JsonlSink(out / "detections.jsonl", segments=segments))
        if pipe.tracker is not None:
            from pipeline.reading.events import TextEventSink

            files.append(TextEventSink(out / "events.jsonl", every=args.events_every, segments=segments))
            mqtt = [sink for sink in outputs if hasattr(sink, "publish_text_event")]
            files[-1].listeners.extend(sink.publish_text_event for sink in mqtt)
        if not args.no_video:
            files.extend(visual_sinks(pipe, out, annotators, ImageSink, VideoSink, args.video_codec, segments))
    except BaseException:
        for sink in files + outputs:
            sink.close()
        raise
    # outputs first: a frame's MQTT event precedes the text events it brings (their last_frame)
    return outputs + files


def _print_header(pipe, out: Path) -> None:
    det = pipe.detector
    spec = det.spec
    rule = (f"{det.input_size[0]}x{det.input_size[1]}" if det.input_size
            else f"{spec.resize.limit_type} side {spec.resize.limit_side}")
    names = ", ".join(s.describe()["name"] for s in pipe.sources)  # without credentials
    reading = "" if det.recognizer is None else f", reading with {Path(det.recognizer.model_name).name}"
    if reading and det.recognizer.direction is not None:
        reading += " (upside-down text turned first)"
    rule += "" if det.roi is None else f" for region {det.roi}"
    server = f" {det.runner.url}" if getattr(det.runner, "remote", False) else ""
    print(f"dbrt run: {names} -> {out}/  [{det.runner.name}{server}, {spec.arch}, input {rule}, "
          f"batch {pipe.batch}{reading}]", file=sys.stderr)
    if det.untrained:
        print("dbrt run: WARNING: this model is UNTRAINED (random weights, a demo of the pipeline "
              "only): its detections are meaningless", file=sys.stderr)


def finish(pipe, progress, out: Path, args, error: Optional[BaseException] = None) -> None:
    """Write report.json and print the summary; after an `error` other than Ctrl-C the
    annotated output is not claimed (a failing video file is often the error)."""
    from pipeline.metrics import format_summary, write_report

    if progress is not None:
        progress.finish(pipe.dropped)
    report = run_report(pipe, out)
    out.mkdir(parents=True, exist_ok=True)
    write_report(report, out / "report.json")
    print(format_summary(report))
    print_network_summary(report)
    if report["lost"]:
        why = "stopped at once" if error is None or isinstance(error, KeyboardInterrupt) else \
            "stopped by the failure below"
        if report.get("drain_expired"):
            why = f"the --drain-limit of {args.drain_limit:g} s passed before every frame read was written"
        print(f"dbrt run: {why}: {report['lost']} frames read were never written", file=sys.stderr)
    if pipe.detector.untrained:
        print("note: the model is untrained; train one with `dbrt train` or pass --model")
    annotated = report["outputs"].keys() & {"videos", "images"}  # none before a first frame
    print(f"wrote {_segments.results_named(report['outputs'], out)}, {out / 'report.json'}"
          + ("" if not annotated or not isinstance(error, (type(None), KeyboardInterrupt))
             else f" and annotated output under {out}/"))
