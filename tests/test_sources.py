"""Sources: PyAV files, images, spec parsing, the live newest-frame policy and reconnects."""
from __future__ import annotations

import threading
from fractions import Fraction
import time
import tracemalloc

import cv2
import numpy as np
import pytest

from engine.errors import SourceError
from pipeline.sources import (CameraSource, ImageSource, LatestSlot, NetworkSource,
                              Reconnect, VideoFileSource, open_source, open_sources, parse_source)

from media import SimulatedCamera, frame_image, index_of, write_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("vid") / "clip.mp4", frames=20, fps=10)


def test_video_file_yields_every_frame_in_order(video):
    source = open_source(video)
    assert isinstance(source, VideoFileSource)
    assert source.total_frames == 20 and source.fps == pytest.approx(10)
    frames = list(source)
    assert [f.index for f in frames] == list(range(20))
    assert [index_of(f.image) for f in frames] == [i % 16 for i in range(20)]
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    times = [f.timestamp for f in frames]
    assert times[0] == pytest.approx(0.0) and times[-1] == pytest.approx(1.9)
    assert source.stats.as_dict()["dropped"] == 0 and source.stats.read == 20


def test_video_close_stops_early(video):
    source = open_source(video)
    got = []
    for frame in source:
        got.append(frame)
        if len(got) == 3:
            source.close()
    assert len(got) == 3


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.mp4", "no such file"),
    (lambda d: (d / "notes.mp4").write_text("hello") and d / "notes.mp4", "cannot open"),
    (lambda d: (d / "sub").mkdir() or d / "sub", "no images"),
    (lambda d: str(d / "*.png"), "no images match"),
    (lambda d: d / "missing.jpg", "no such file"),
    (lambda d: (d / "bad.jpg").write_bytes(b"xx") and d / "bad.jpg", r"cannot read image .*bad.jpg \(not an image"),
    (lambda d: (d / "empty.jpg").write_bytes(b"") or d / "empty.jpg", r"cannot read image .*empty.jpg \(empty file"),
])
def test_bad_sources_raise_one_line_source_error(tmp_path, make, message):
    spec = make(tmp_path)
    with pytest.raises(SourceError, match=message) as info:
        list(open_source(spec))
    assert "\n" not in str(info.value)


def test_unopenable_camera_and_stream_fail_at_open():
    with pytest.raises(SourceError, match="cannot open camera"):
        open_source("/dev/video97")
    with pytest.raises(SourceError, match="cannot open rtsp://127.0.0.1:9"):
        open_source("rtsp://127.0.0.1:9/live", reconnect=None)  # else waited for: it may come up


class _FakeCapture:
    """cv2.VideoCapture of a camera whose driver offers 1280x720 at 30 fps in MJPG and
    640x480 at 30 in YUYV, and snaps any other request to the nearest of its modes, as V4L2
    drivers do. (No camera on the machines that run the tests.)"""

    MODES = {"MJPG": (1280, 720, 30.0), "YUYV": (640, 480, 30.0)}

    def __init__(self, device):
        self.calls, self.format = [], "YUYV"

    def isOpened(self):
        return True

    def set(self, prop, value):
        import cv2

        self.calls.append(prop)
        if prop == cv2.CAP_PROP_FOURCC:
            code = int(value)
            name = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4))
            self.format = name if name in self.MODES else self.format
        return True

    def get(self, prop):
        import cv2

        width, height, fps = self.MODES[self.format]
        if prop == cv2.CAP_PROP_FOURCC:
            return float(cv2.VideoWriter_fourcc(*self.format))
        return {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height,
                cv2.CAP_PROP_FPS: fps}.get(prop, 0.0)

    def read(self):
        width, height, _ = self.MODES[self.format]
        return True, np.zeros((height, width, 3), np.uint8)

    def release(self):
        pass


def test_camera_capture_mode_is_asked_for_and_what_the_camera_gives_is_reported(monkeypatch):
    """The pixel format is set before the size (V4L2 lists sizes per format); a request the
    driver does not take is noted in the source's events, and `describe()` has the real mode."""
    import cv2

    from pipeline.sources import camera as camera_module

    made = []
    monkeypatch.setattr(camera_module.cv2, "VideoCapture", lambda d: made.append(_FakeCapture(d)) or made[-1])
    source = open_source("0", camera=dict(width=1280, height=720, fps=30, fourcc="MJPG"))
    assert made[0].calls[0] == cv2.CAP_PROP_FOURCC
    assert source.describe()["mode"] == dict(width=1280, height=720, fps=30.0, fourcc="MJPG")
    assert not source.stats.events  # everything asked for was given
    source.close()
    source = open_source("/dev/video2", camera=dict(width=1920, height=1080, fps=60))
    assert source.mode == dict(width=640, height=480, fps=30.0, fourcc="YUYV")
    assert source.stats.events == ["asked for {'width': 1920, 'height': 1080, 'fps': 60}; the camera "
                                   "gives {'width': 640, 'height': 480, 'fps': 30.0, 'fourcc': 'YUYV'}"]
    frame = next(iter(source))
    assert frame.image.shape == (480, 640, 3)
    source.close()
    with pytest.raises(SourceError, match="four characters"):
        CameraSource(0, fourcc="MJPEG")


def test_a_camera_that_does_not_say_its_rate_is_not_reported_as_refusing_it(monkeypatch):
    """V4L2 answers -1 (other backends 0) when the driver does not report a rate: unknown,
    neither a refusal nor a crash."""
    import cv2

    from pipeline.sources import camera as camera_module

    class Silent(_FakeCapture):
        def get(self, prop):
            return -1.0 if prop == cv2.CAP_PROP_FPS else super().get(prop)

    monkeypatch.setattr(camera_module.cv2, "VideoCapture", Silent)
    source = open_source("0", camera=dict(fps=30))
    assert source.mode["fps"] is None and not source.stats.events
    source.close()


def test_a_camera_that_does_not_say_its_rate_has_no_fps(monkeypatch):
    """V4L2's -1 was the source's fps (report.json's "fps": -1.0, and the annotated video's
    nominal rate) where the mode said None."""
    import cv2

    from pipeline.sources import camera as camera_module

    class Silent(_FakeCapture):
        def get(self, prop):
            return -1.0 if prop == cv2.CAP_PROP_FPS else super().get(prop)

    monkeypatch.setattr(camera_module.cv2, "VideoCapture", Silent)
    source = open_source("0")
    assert source.fps is None and source.describe()["fps"] is None
    source.close()


@pytest.mark.parametrize("spec, kind", [
    ("0", CameraSource), (3, CameraSource), ("/dev/video1", CameraSource),
    ("rtsp://cam.local/stream", NetworkSource), ("http://host/live.ts", NetworkSource),
    ("https://host/index.m3u8", NetworkSource), ("udp://0.0.0.0:5000", NetworkSource),
    ("shots/*.png", ImageSource), ("photo.JPG", ImageSource), ("movie.mkv", VideoFileSource),
])
def test_parse_source_picks_the_kind(spec, kind):
    assert isinstance(parse_source(spec), kind)


def test_http_file_is_not_live_but_ts_is():
    assert NetworkSource("http://h/video.mp4").live is False
    assert NetworkSource("https://h/clip.m4v?token=1").live is False
    assert NetworkSource("http://h/live.ts").live is True
    assert NetworkSource("rtsp://h/x").reconnect is not None


def test_images_folder_and_glob_sorted(tmp_path):
    for name, index in (("b.png", 1), ("a.png", 0), ("c.jpg", 2)):
        cv2.imwrite(str(tmp_path / name), frame_image(index))
    (tmp_path / "readme.txt").write_text("not an image")
    frames = list(open_source(tmp_path))
    assert [f.source.split("/")[-1] for f in frames] == ["a.png", "b.png", "c.jpg"]
    assert [f.index for f in frames] == [0, 1, 2] and frames[0].timestamp is None
    assert [index_of(f.image) for f in frames] == [0, 1, 2]
    assert len(list(open_source(str(tmp_path / "*.png")))) == 2


def test_open_sources_numbers_streams_and_closes_on_failure(video, tmp_path):
    sources = open_sources([video, video])
    assert [s.stream for s in sources] == [0, 1]  # frames are stamped by the pipeline's decode stage
    with pytest.raises(SourceError, match="no such file"):
        open_sources([video, tmp_path / "nope.mp4"])
    with pytest.raises(SourceError, match="no source"):
        open_sources([])


def test_latest_slot_overwrites_and_counts():
    slot = LatestSlot()
    assert slot.put(1) is False and slot.put(2) is True and len(slot) == 1
    assert slot.get() == 2
    slot.finish()
    assert slot.get() is None


def test_latest_slot_without_overwrite_waits_for_the_reader():
    slot = LatestSlot(overwrite=False)
    slot.put("a")
    done = threading.Event()
    threading.Thread(target=lambda: (slot.put("b"), done.set()), daemon=True).start()
    assert not done.wait(0.2)  # blocked: "a" not read yet
    assert slot.get() == "a"
    assert done.wait(30) and slot.get() == "b"


def test_latest_slot_drops_what_is_put_after_it_finished():
    """A frame the reader puts while the run stops is never taken: dropped, not kept."""
    drops = []
    slot = LatestSlot(overwrite=False, on_drop=lambda: drops.append(1))
    slot.put("a")
    threading.Timer(0.2, slot.finish).start()
    assert slot.put("b") is True and drops == [1]  # waited for "a" to be read, then finished
    assert slot.get() == "a" and slot.get() is None


def test_reconnect_delays_back_off_and_cap():
    assert list(Reconnect(retries=5, delay=0.5, factor=2, max_delay=3).delays()) == [0.5, 1, 2, 3, 3]
    assert list(Reconnect(retries=0).delays()) == []


def test_a_zero_reconnect_delay_retries_at_once_then_still_backs_off():
    """--reconnect-delay 0 doubled stayed 0: with --reconnect -1 a refusing camera was
    retried in a tight loop for ever."""
    assert list(Reconnect(retries=5, delay=0, max_delay=0.5).delays()) == [0, 0.2, 0.4, 0.5, 0.5]


def test_live_source_outpacing_consumer_drops_newest_wins_and_memory_stays_flat():
    source = SimulatedCamera(total=400, reconnect=None).open()
    tracemalloc.start()
    got, peak_slot = [], 0
    try:
        for frame in source:
            got.append(frame.index)
            peak_slot = max(peak_slot, len(source._slot))
            time.sleep(0.01)  # a slow consumer
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stats = source.stats.as_dict()
    assert stats["dropped"] > 0
    assert stats["read"] == 400 and stats["delivered"] == len(got)
    assert stats["delivered"] + stats["dropped"] == stats["read"]
    assert got == sorted(got) and len(set(got)) == len(got)  # newest first is never re-ordered
    assert peak_slot <= 1
    frame_bytes = 240 * 320 * 3
    assert peak < 20 * frame_bytes  # a backlog of 400 frames would be 400 frames


def test_live_source_reconnects_after_a_failure():
    source = SimulatedCamera(total=10_000, fps=500, fail_at={10}, refuse=2).open()
    frames = []
    for frame in source:
        frames.append(frame)
        if frame.index >= 25:
            source.close()
    stats = source.stats.as_dict()
    assert stats["reconnects"] == 1 and source.connects == 2
    assert any("attempt 1 failed" in e for e in stats["events"])
    assert any("reconnected after 3 attempt" in e for e in stats["events"])
    assert frames[-1].index >= 25
    # the frames carry the connection they came on: tracks end at a reconnect
    # (a live source may drop a frame the consumer was too slow for: a loaded machine)
    before = [f.connection for f in frames if f.index < 9]
    assert before and set(before) == {0}
    assert {f.connection for f in frames if f.index >= 10} == {1}
    source.join(30)
    assert not source._thread.is_alive()


def test_live_source_gives_up_after_retries():
    source = SimulatedCamera(total=30, fps=500, fail_at={5}, refuse=10,
                             reconnect=Reconnect(retries=2, delay=0.01)).open()
    with pytest.raises(SourceError, match="gave up after 2 reconnect attempts"):
        list(source)
    once = SimulatedCamera(total=30, fps=500, fail_at={5}, refuse=10,
                           reconnect=Reconnect(retries=1, delay=0.01)).open()
    with pytest.raises(SourceError, match=r"gave up after 1 reconnect attempt \("):  # not "attempts"
        list(once)


def test_a_server_that_accepts_and_sends_nothing_still_runs_out_of_retries():
    """Each reconnect succeeds but the stream ends before a frame: the attempts of one outage
    run on across those connections (they started over, so the run never ended)."""
    from pipeline.sources import LiveSource

    class AcceptsThenEnds(LiveSource):
        def __init__(self):
            super().__init__("rtsp://cam/s", Reconnect(retries=3, delay=0.01, max_delay=0.01))
            self.connects, self.sent = 0, False

        def _connect(self):
            self.connects += 1

        def _read(self):
            if self.sent:
                return None
            self.sent = True
            return np.zeros((4, 4, 3), np.uint8), 0.0

        def _disconnect(self):
            pass

    source = AcceptsThenEnds().open()
    with pytest.raises(SourceError, match="gave up after 3 reconnect attempts"):
        list(source)
    assert source.connects == 4


def test_a_reopened_camera_keeps_its_clock(monkeypatch):
    """Timestamps go on after a reconnect (they restarted at 0 while indices went on)."""
    from pipeline.sources import camera as camera_module

    class Flaky(_FakeCapture):
        made = 0

        def __init__(self, device):
            super().__init__(device)
            Flaky.made += 1
            self.reads = 0

        def read(self):
            self.reads += 1
            time.sleep(0.01)
            if Flaky.made == 1 and self.reads > 5:
                return False, None
            return super().read()

    monkeypatch.setattr(camera_module.cv2, "VideoCapture", Flaky)
    source = CameraSource(0, reconnect=Reconnect(retries=2, delay=0.01)).open()
    stamps = []
    for frame in source:
        stamps.append(frame.timestamp)
        if len(stamps) == 10:
            break
    source.close()
    source.join(10)
    assert Flaky.made == 2 and stamps == sorted(stamps), stamps


def test_a_video_file_closed_without_being_read_lets_go_of_it(video, tmp_path):
    import os
    import shutil

    def open_files():
        return [os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]

    # a copy of its own: an earlier test's source of the shared clip may not be collected yet
    video = shutil.copy(video, tmp_path / "own.mp4")

    with open_source(str(video)) as source:
        assert str(video) in open_files()
    assert str(video) not in open_files()
    assert list(source) == []  # closed: nothing more, and no reopened file left behind
    assert str(video) not in open_files()


def test_credentials_in_a_source_url_stay_out_of_result_lines_and_reports():
    from pipeline.detections import FrameResult, Detections, frame_fields
    from pipeline.sources import Frame, NetworkSource

    frame = Frame(np.zeros((4, 4, 3), np.uint8), 0, None, "rtsp://user:s3cret@cam/1")
    assert frame_fields(frame)["source"] == "rtsp://cam/1"
    assert "s3cret" not in FrameResult(frame, Detections.empty()).to_json()
    source = NetworkSource("rtsp://user:s3cret@127.0.0.1:1/x")
    source.stats.note("cannot open rtsp://user:s3cret@127.0.0.1:1/x: refused")
    described = str(source.describe())
    assert "s3cret" not in described and "rtsp://127.0.0.1:1/x" in described


def test_file_names_with_glob_characters_are_files(tmp_path):
    from pipeline.sources import open_source

    video = write_video(tmp_path / "clip [1].mp4", frames=3)
    image = tmp_path / "scan [1].png"
    cv2.imwrite(str(image), np.full((20, 30, 3), 90, np.uint8))
    with open_source(str(video)) as source:
        assert len(list(source)) == 3
    with open_source(str(image)) as source:
        assert [f.image.shape for f in source] == [(20, 30, 3)]


def test_stills_as_they_are_meant_to_be_seen(tmp_path):
    """A TIFF turned by its EXIF orientation (OpenCV's imread fails on 5-8) and a transparent
    PNG, black text on transparent black (its content is on white, not lost in black)."""
    from PIL import Image

    from pipeline.sources.images import read_image

    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "turned.tif",
                                                          exif={0x0112: 6})
    assert read_image(str(tmp_path / "turned.tif")).shape == (64, 48, 3)
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[5:15, 5:25, 3] = 255  # opaque black text; the rest transparent black
    cv2.imwrite(str(tmp_path / "logo.png"), rgba)
    image = read_image(str(tmp_path / "logo.png"))
    assert image[0, 0].tolist() == [255, 255, 255] and image[10, 10].tolist() == [0, 0, 0]


def test_timestamps_are_seconds_into_the_file_whatever_its_clock(tmp_path):
    import av

    from pipeline.sources import open_source

    offset = tmp_path / "offset.ts"  # a recording whose clock starts at 1000 s
    with av.open(str(offset), "w", format="mpegts") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 25)
        for i in range(6):
            vframe = av.VideoFrame.from_ndarray(frame_image(i, 48, 64), format="bgr24")
            vframe.pts, vframe.time_base = 25_000 + i, Fraction(1, 25)
            container.mux(stream.encode(vframe))
        container.mux(stream.encode(None))
    with open_source(str(offset)) as source:
        stamps = [f.timestamp for f in source]
    assert stamps[0] == pytest.approx(0.0, abs=1e-3) and stamps[-1] == pytest.approx(0.2, abs=1e-3)
    raw = tmp_path / "raw.h264"  # an elementary stream: no timestamps at all
    with av.open(str(raw), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(4):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame_image(i, 48, 64), format="bgr24")))
        container.mux(stream.encode(None))
    with open_source(str(raw)) as source:
        assert [f.timestamp for f in source] == pytest.approx([0.0, 0.04, 0.08, 0.12])


@pytest.mark.parametrize("orientation", [3, 6, 7])
def test_an_image_with_transparency_is_turned_as_its_exif_says(tmp_path, orientation):
    """OpenCV applies EXIF orientation when it decodes 3 channels, not 4: a transparent PNG
    was read sideways while the same picture without transparency was turned."""
    image_module = pytest.importorskip("PIL.Image")
    from pipeline.sources.images import read_image

    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[5:15, 5:25, :3] = (255, 0, 0)
    for name, pixels, mode in (("alpha.png", rgba, "RGBA"), ("plain.png", rgba[..., :3], "RGB")):
        picture = image_module.fromarray(np.ascontiguousarray(pixels), mode)
        exif = picture.getexif()
        exif[0x0112] = orientation
        picture.save(tmp_path / name, exif=exif)
    turned = read_image(str(tmp_path / "plain.png"))
    assert turned.shape[:2] == ((60, 40) if orientation > 4 else (40, 60))
    assert np.array_equal(read_image(str(tmp_path / "alpha.png")), turned)


@pytest.mark.parametrize("name", ["empty.jpg", "empty.png"])
def test_an_empty_image_file_is_named_not_a_decoder_assertion(tmp_path, name):
    """OpenCV's imdecode asserts on a 0-byte buffer (cv2.error) instead of returning None."""
    from pipeline.sources.images import read_image

    (tmp_path / name).write_bytes(b"")
    with pytest.raises(SourceError, match=f"cannot read image .*{name} \\(empty file, 0 bytes\\)"):
        read_image(str(tmp_path / name))


@pytest.mark.parametrize("files, summary", [
    ({"empty.jpg": b""}, "1 of 2 images in {} could not be read (empty file, 0 bytes; skipped): "),
    ({"bad.jpg": b"xx"}, "1 of 2 images in {} could not be read (not an image, or unsupported format; skipped)"),
    ({"bad.jpg": b"xx", "empty.jpg": b"", "empty2.png": b""},
     "3 of 4 images in {} could not be read (2 empty file, 0 bytes; 1 not an image, or unsupported format; "
     "skipped)"),
])
def test_a_folders_unreadable_images_are_summed_up_with_their_reasons(tmp_path, files, summary):
    """The summary said '(not an image, or unsupported format)' for an empty 0-byte file too."""
    cv2.imwrite(str(tmp_path / "good.png"), np.full((8, 8, 3), 9, np.uint8))
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(SourceError) as info:
        list(open_source(str(tmp_path)))
    assert str(info.value).startswith(summary.format(tmp_path)), str(info.value)


def test_a_live_source_is_read_from_its_opening_so_its_first_frame_is_fresh():
    """Opened while the run got ready (models loading), a stream's frames piled up unread and
    came in a burst: the first frame seconds old, the clock seeming to jump (the annotated
    video then ran seconds ahead of the JSON lines)."""
    source = SimulatedCamera(total=10_000, fps=200).open()
    time.sleep(0.5)  # the run getting ready
    first = next(iter(source))
    source.close()
    source.join(10)
    assert first.index > 20 and source.stats.dropped > 20


def test_credentials_with_an_at_sign_or_in_the_query_are_hidden_whole():
    """The password ended at its first "@": `rtsp://admin:S3cr@tPW@cam/1` showed `tPW@cam`
    (FFmpeg opens such URLs), and snapshot URLs' `?pwd=` went out in clear."""
    from pipeline.sources.base import without_credentials

    assert without_credentials("cannot open rtsp://admin:S3cr@tPW@127.0.0.1:1/s: refused") == \
        "cannot open rtsp://127.0.0.1:1/s: refused"
    assert without_credentials("mqtt://u:a@b@broker/t?ca=/etc/ca.pem") == \
        "mqtt://broker/t?ca=/etc/ca.pem"
    assert without_credentials("http://cam/snap.cgi?user=admin&pwd=Hunter2&res=1 up") == \
        "http://cam/snap.cgi?user=admin&pwd=***&res=1 up"
    assert without_credentials("rtsp://cam/1?token=abc#x") == "rtsp://cam/1?token=***#x"
    # an "@" after the host (a path, a query) is no login: kept
    assert without_credentials("https://host/@chan/live?email=a@b.c") == \
        "https://host/@chan/live?email=a@b.c"


def test_an_error_opening_a_source_holds_no_password():
    """`cannot open rtsp://u:S3cr3t@127.0.0.1:1/x` was the SourceError's own message: the CLI
    hid it, an application logging the exception did not."""
    import pickle

    from engine.errors import SourceError
    from pipeline.sources import open_source

    with pytest.raises(SourceError) as caught:
        next(iter(open_source("rtsp://u:S3cr3t@127.0.0.1:1/x", reconnect=None)))
    assert "S3cr3t" not in str(caught.value) and "rtsp://127.0.0.1:1/x" in str(caught.value)
    assert "S3cr3t" not in repr(pickle.loads(pickle.dumps(caught.value)))


def test_the_traceback_of_an_error_opening_a_source_holds_no_password():
    """The SourceError's message had lost the password, but it was raised from FFmpeg's error,
    whose own message quotes the URL: an application logging the exception with its traceback
    (`logging.exception`) printed the password."""
    import traceback

    from engine.errors import SourceError
    from pipeline.sources import open_source

    url = "rtsp://u:%s@127.0.0.1:1/x" % "S3cr3t"  # the traceback quotes this file's lines
    with pytest.raises(SourceError) as caught:
        open_source(url, reconnect=None)
    printed = "".join(traceback.format_exception(caught.type, caught.value, caught.tb))
    assert "S3cr3t" not in printed and "Connection refused" in printed
