"""The README's pictures, made from the bundled synthetic demo video (our own, see `dbrt synth`).

    python docs/make_pictures.py live_view      # docs/img/live_view.png: the --serve page
    python docs/make_pictures.py read_track     # docs/img/read_track.png: an annotated frame

live_view runs `dbrt run --serve` on the demo video (with --read and --track where the read /
track extras are installed), opens the page in headless Chromium (Debian's `chromium`) once
several texts are in view, and keeps the screenshot under 200 KB (a 256-colour PNG).
read_track runs the pipeline with reading and tracking on the demo video up to frame 135 and
draws that frame as `dbrt run --read --track` annotates it (under 150 KB).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMG = REPO / "docs" / "img"
MAX_BYTES = 200_000
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=4000"]
READ_TRACK_FRAME, READ_TRACK_MAX_BYTES = 135, 150_000  # a frame with eight texts in view
READS = all(importlib.util.find_spec(m) for m in ("rapidocr", "supervision"))  # --read --track


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as response:
        return json.load(response)


def _wait_for_texts(port: int, proc: subprocess.Popen, limit_s: float = 300.0) -> None:
    """Until the tile has shown a few seconds of video and several texts (when reading)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            streams = _status(port)["streams"]
        except OSError:
            streams = []
        if streams and all(s["frames"] >= 110 and (len(s["texts"]) >= 3 or not READS)
                           for s in streams):
            return
        time.sleep(0.2)
    raise SystemExit(f"make_pictures: the run ended or stalled before there was much to show: "
                     f"{proc.stderr.read() if proc.poll() is not None else 'timed out'}")


def live_view(out: Path = IMG / "live_view.png", size=(800, 700)) -> Path:
    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("make_pictures: chromium is not installed (apt-get install chromium)")
    from engine.triton.ports import free_port
    from pipeline.shipped import DEMO_VIDEO

    demo = DEMO_VIDEO.relative_to(REPO)  # the name the page shows
    port = free_port()
    extra = ["--read", "--track"] if READS else []
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(demo), *extra,
                                 "--serve", str(port), "--no-video",
                                 "--quiet", "-o", f"{tmp}/out"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_texts(port, proc)
            shot = Path(tmp) / "page.png"
            subprocess.run([chromium, *CHROMIUM_FLAGS, f"--window-size={size[0]},{size[1]}",
                            f"--user-data-dir={tmp}/profile", f"--screenshot={shot}",
                            f"http://127.0.0.1:{port}/"], capture_output=True, timeout=180,
                           check=True)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(shot).convert("RGB").quantize(256).save(out, optimize=True)
    if out.stat().st_size > MAX_BYTES:
        raise SystemExit(f"make_pictures: {out} is {out.stat().st_size} bytes (> {MAX_BYTES})")
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return out


def read_track(out: Path = IMG / "read_track.png", frame_index: int = READ_TRACK_FRAME) -> Path:
    """One frame of `dbrt run --read --track` on the demo video, annotated as the run's
    annotated.mp4 is (outlines and the texts read), cut from the decoded frame (no re-encoding)."""
    from PIL import Image

    from pipeline.detector import Detector
    from pipeline.draw import PolygonAnnotator, annotate
    from pipeline.runner import Pipeline
    from pipeline.shipped import DEMO_VIDEO
    from pipeline.text_draw import TextAnnotator

    if not READS:
        raise SystemExit("make_pictures: read_track needs the read and track extras "
                         "(pip install 'dbrt[read,track]')")
    picked = []
    with Pipeline([str(DEMO_VIDEO)], Detector(read=True, device="cpu"), close_detector=True,
                  track=True, max_frames=frame_index + 1) as pipe:
        for frame, detections in pipe:
            if frame.index == frame_index:
                picked.append(annotate(frame.image, detections,
                                       (PolygonAnnotator(), TextAnnotator())))
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picked[0][:, :, ::-1]).quantize(256).save(out, optimize=True)
    size = out.stat().st_size
    if size > READ_TRACK_MAX_BYTES:
        raise SystemExit(f"make_pictures: {out} is {size} bytes (> {READ_TRACK_MAX_BYTES})")
    print(f"wrote {out} ({size // 1024} KB)")
    return out


PICTURES = {"live_view": live_view, "read_track": read_track}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python docs/make_pictures.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pictures", nargs="*", choices=sorted(PICTURES), metavar="PICTURE",
                   help=f"which pictures (default: all of {', '.join(sorted(PICTURES))})")
    for name in p.parse_args(argv).pictures or sorted(PICTURES):
        PICTURES[name]()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
