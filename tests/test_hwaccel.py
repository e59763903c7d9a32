"""`dbrt run --hwaccel cuda` / `source_options=dict(hwaccel="cuda")`: video files and network
streams decoded by NVDEC on an NVIDIA GPU (software H.264 / HEVC decoding is a GPU server's limit
at 1080p, benchmarks.host_ceiling). Without a GPU (here, CI) the flag is refused in one line
before the sources open and the model loads; the HWAccel reaches av.open for files and streams;
a codec NVDEC has no decoder for is decoded in software by PyAV's fallback, said once; without
the flag nothing changes."""
import json
import sys
from types import SimpleNamespace

import pytest
from media import FakeDetector, TsServer, mpegts_bytes, write_video

from engine.errors import SourceError
from pipeline.cli import main
from pipeline.runner import Pipeline
from pipeline.sources import VideoFileSource, hwdecode, parse_source


def _no_gpu() -> str:
    problem = hwdecode.device_problem("cuda")
    if problem is None:
        pytest.skip("a CUDA device opens here (an NVIDIA GPU with its driver)")
    return problem


def _never(*args, **kwargs):
    raise AssertionError("reached after the refusal")


def _record_hwaccels(monkeypatch) -> list:
    """av.open records the HWAccel each input is opened with (in the list returned) and opens
    it in software."""
    import av

    given, real = [], av.open

    def recording_open(*args, hwaccel=None, **kwargs):
        if kwargs.get("mode", "r") == "r":
            given.append(hwaccel)
        return real(*args, **kwargs)

    monkeypatch.setattr(av, "open", recording_open)
    return given


@pytest.fixture
def nvdec_here(monkeypatch):
    """As if a CUDA device opened; av.open records its HWAccels (`_record_hwaccels`)."""
    monkeypatch.setattr(hwdecode, "device_problem", lambda name: None)
    return _record_hwaccels(monkeypatch)


def _ffv1(tmp_path, frames=6):
    """A video whose codec NVDEC has no decoder for (FFV1): PyAV opens it in software with a
    HWAccel given, creating no CUDA device, so the fallback runs for real without a GPU."""
    return write_video(tmp_path / "v.mkv", frames=frames, codec="ffv1")


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_hwaccel_cuda_without_an_nvidia_gpu_is_one_line_before_the_sources_and_the_model(
        tmp_path, capsys, monkeypatch, name):
    _no_gpu()
    import pipeline.commands._model as model
    import pipeline.sources as sources

    monkeypatch.setattr(model, "build_detector", _never)
    monkeypatch.setattr(sources, "open_sources", _never)
    video = write_video(tmp_path / "v.mp4", frames=3)
    assert main(["run", str(video), "-o", str(tmp_path / "out"), "--hwaccel", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dbrt run: error: --hwaccel {name} cannot decode here: ")
    assert "(NVDEC needs an NVIDIA GPU and its driver)" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_pyav_without_hardware_decoding_is_told_an_upgrade_its_python_can_install(monkeypatch):
    # PyAV 18 needs Python 3.11: `pip install 'av>=18'` fails on Ubuntu 22.04's and JetPack 6's
    # 3.10, whose newest PyAV, 17, decodes on NVDEC as well
    import av  # noqa: F401  (imported whole first: av imports av.codec.hwaccel itself)

    monkeypatch.setitem(sys.modules, "av.codec.hwaccel", None)  # as if PyAV had no such module
    problem = hwdecode.device_problem("cuda")
    assert problem.startswith("this PyAV (") and "has no hardware decoding" in problem
    assert "pip install -U av" in problem and "av>=18" not in problem


def test_a_source_asked_for_nvdec_without_a_gpu_fails_to_open_in_one_line(tmp_path):
    problem = _no_gpu()
    video = write_video(tmp_path / "v.mp4", frames=3)
    with pytest.raises(SourceError, match="NVDEC needs an NVIDIA GPU and its driver") as caught:
        VideoFileSource(video, hwaccel="cuda").open()
    assert problem in str(caught.value) and str(video) in str(caught.value)
    with pytest.raises(SourceError, match="cannot decode .* with NVDEC"):
        Pipeline(str(video), FakeDetector(), source_options=dict(hwaccel="cuda"))


def test_the_device_check_says_ffmpegs_reason_and_leaves_its_log_level():
    import av.logging

    before = av.logging.get_level()
    problem = _no_gpu()
    assert problem.strip() and "\n" not in problem
    assert av.logging.get_level() == before


def test_the_hwaccel_reaches_av_open_for_a_video_file(tmp_path, nvdec_here):
    from av.codec.hwaccel import HWAccel

    video = write_video(tmp_path / "v.mp4", frames=4)
    assert len([frame.image for frame in parse_source(str(video), hwaccel="cuda")]) == 4
    assert isinstance(nvdec_here[0], HWAccel)
    assert nvdec_here[0].allow_software_fallback  # what NVDEC cannot decode, software does


def test_the_hwaccel_reaches_av_open_for_a_network_stream(nvdec_here):
    from av.codec.hwaccel import HWAccel

    server = TsServer(mpegts_bytes(frames=30)).start()
    try:
        source = parse_source(server.url, hwaccel="cuda", reconnect=None)
        assert source.decoding.hwaccel == "cuda"
        source.open()
        source.close()
        source.join(5)
    finally:
        server.stop()
    assert isinstance(nvdec_here[0], HWAccel) and nvdec_here[0].allow_software_fallback


def test_without_the_flag_no_device_is_asked_for_and_decoding_is_software(tmp_path, monkeypatch):
    monkeypatch.setattr(hwdecode, "device_problem", _never)
    given = _record_hwaccels(monkeypatch)
    source = VideoFileSource(write_video(tmp_path / "v.mp4", frames=3))
    assert len(list(source)) == 3 and given == [None]
    report = source.describe()
    assert report["hwaccel"] is None and report["decoder"] == "software"
    assert not report["events"]


def test_a_codec_nvdec_lacks_is_decoded_in_software_the_same_pictures_said_once(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setattr(hwdecode, "device_problem", lambda name: None)
    video = _ffv1(tmp_path)
    software = [frame.image for frame in VideoFileSource(video)]
    source = VideoFileSource(video, hwaccel="cuda")
    fallen_back = [frame.image for frame in source]
    assert len(fallen_back) == len(software) == 6
    assert all(np.array_equal(a, b) for a, b in zip(fallen_back, software))
    report = source.describe()
    assert report["hwaccel"] == "cuda" and report["decoder"] == "software"
    assert report["events"] == ["NVDEC has no ffv1 decoder: decoded in software"]


def test_frames_left_out_make_no_picture_with_nvdec_asked_for(tmp_path, monkeypatch):
    import pipeline.sources.video as video_module

    monkeypatch.setattr(hwdecode, "device_problem", lambda name: None)
    pictures = []
    real = video_module.upright_bgr
    monkeypatch.setattr(video_module, "upright_bgr", lambda vframe: pictures.append(1) or real(vframe))
    source = VideoFileSource(_ffv1(tmp_path, frames=10), hwaccel="cuda")
    source.frame_filter = lambda timestamp, connection: round(timestamp * 10) % 2 == 0
    kept = list(source)
    assert len(kept) == len(pictures) == 5 and source.stats.sampled_out == 5


def test_the_run_reports_the_decoder_and_says_the_fallback_once(tmp_path, tiny_onnx, capsys,
                                                                monkeypatch):
    monkeypatch.setattr(hwdecode, "device_problem", lambda name: None)
    out = tmp_path / "out"
    assert main(["run", str(_ffv1(tmp_path)), "--model", str(tiny_onnx), "-o", str(out), "--quiet",
                 "--no-video", "--hwaccel", "cuda"]) == 0
    source = json.loads((out / "report.json").read_text())["sources"][0]
    assert (source["hwaccel"], source["decoder"]) == ("cuda", "software")
    note = "NVDEC has no ffv1 decoder: decoded in software"
    assert source["events"] == [note]
    assert capsys.readouterr().out.count(note) == 1


def test_a_run_without_a_video_or_stream_is_refused_with_the_flag(tmp_path, capsys, monkeypatch):
    import cv2
    import numpy as np

    import pipeline.commands._model as model

    monkeypatch.setattr(hwdecode, "device_problem", lambda name: None)
    monkeypatch.setattr(model, "build_detector", _never)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    assert main(["run", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--hwaccel", "cuda"]) == 2
    assert "--hwaccel cuda decodes video files and network streams; none of the sources is one" in \
        capsys.readouterr().err


def _stream(is_hwaccel, chosen, name="h264", profile="High 4:2:2"):
    context = SimpleNamespace(is_hwaccel=is_hwaccel, format=SimpleNamespace(name=chosen), name=name,
                              profile=profile)
    return SimpleNamespace(codec_context=context)


def test_nvdec_is_reported_once_its_first_frame_comes_from_the_gpu():
    decoding = hwdecode.Decoding("cuda")
    assert decoding.decoder is None  # not known before a frame
    assert decoding.opened(_stream(True, "cuda")) is None
    assert decoding.decoded(_stream(True, "cuda")) is None
    assert decoding.describe() == {"hwaccel": "cuda", "decoder": "nvdec"}


def test_a_profile_nvdec_refuses_is_software_said_once_across_reconnects():
    """FFmpeg's NVDEC set-up refuses the stream (4:2:2 H.264) and PyAV's fallback hands the
    decoder a software format: the first frame says so; a reconnect opens it again, unsaid."""
    decoding = hwdecode.Decoding("cuda")
    decoding.opened(_stream(True, "cuda"))
    note = decoding.decoded(_stream(True, "yuv422p"))
    assert note == "NVDEC cannot decode this h264 High 4:2:2 stream (yuv422p): decoded in software"
    assert decoding.decoder == "software"
    decoding.opened(_stream(True, "cuda"))
    assert decoding.decoded(_stream(True, "yuv422p")) is None


def test_the_gpu_proof_times_software_decoding_beside_nvdec_or_says_why_not(tmp_path):
    from benchmarks import gpu_checks

    rows = {row["hwaccel"]: row for row in gpu_checks.check_video_decoders(
        write_video(tmp_path / "v.mp4", frames=5))}
    software = rows[None]
    assert software["decoder"] == "software" and software["frames"] == 5
    assert software["fps"] > 0 and software["cpu_ms_per_frame"] >= 0
    nvdec = rows["cuda"]
    assert "NVDEC needs an NVIDIA GPU" in nvdec.get("error", "") or nvdec["frames"] == 5
    with pytest.raises(gpu_checks.Skip, match="video not found"):
        gpu_checks.check_video_decoders(None)


def test_a_cuda_device_without_the_nvdec_library_is_refused_not_decoded_in_software(monkeypatch):
    """FFmpeg loads libnvcuvid at a stream's first frame and, failing, decodes in software: a
    container without the driver's video capability would decode everything on the CPU."""
    import ctypes

    def missing(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert hwdecode.decoder_library_problem() in ("Cannot load libnvcuvid.so.1", "Cannot load nvcuvid.dll")
    monkeypatch.setattr(ctypes, "CDLL", lambda name, *args, **kwargs: object())
    assert hwdecode.decoder_library_problem() is None


@pytest.mark.parametrize("name, device_id", [("cuda", 0), ("cuda:1", 1), ("cuda:02", 2)])
def test_the_gpu_index_reaches_pyavs_hwaccel_for_files_and_streams(tmp_path, nvdec_here, name,
                                                                   device_id):
    """Servers with several GPUs decode on the one asked for: `cuda:N` is HWAccel's device N
    (only `cuda`, GPU 0, was taken)."""
    video = write_video(tmp_path / "v.mp4", frames=2)
    source = parse_source(str(video), hwaccel=name)
    assert len(list(source)) == 2 and source.describe()["hwaccel"] == name
    server = TsServer(mpegts_bytes(frames=30)).start()
    try:
        stream = parse_source(server.url, hwaccel=name, reconnect=None).open()
        stream.close()
        stream.join(5)
    finally:
        server.stop()
    assert [accel.device_id for accel in nvdec_here] == [device_id, device_id]
    assert all(accel.allow_software_fallback for accel in nvdec_here)


def test_the_device_check_opens_the_gpu_asked_for_and_remembers_each_apart(monkeypatch):
    import av.codec.hwaccel

    created = []

    class RecordingHWAccel:
        def __init__(self, kind, device=None, **kwargs):
            self.kind, self.device = kind, device

        def create(self, codec):
            created.append((self.kind, self.device))
            return self

    monkeypatch.setattr(av.codec.hwaccel, "HWAccel", RecordingHWAccel)
    monkeypatch.setattr(av.codec.hwaccel, "hwdevices_available", lambda: ["cuda"])
    monkeypatch.setattr(hwdecode, "decoder_library_problem", lambda: None)
    monkeypatch.setattr(hwdecode, "_OPENED", set())
    assert hwdecode.device_problem("cuda:1") is None
    assert hwdecode.device_problem("cuda:1") is None  # opened once: not asked again
    assert hwdecode.device_problem("cuda") is None  # another device: asked
    assert created == [("cuda", "1"), ("cuda", None)]


@pytest.mark.parametrize("name", ["cuda:x", "cuda:", "cuda:-1", "cuda1", "CUDA", "vaapi", ""])
def test_an_hwaccel_that_is_not_cuda_or_cuda_n_is_refused_by_name(tmp_path, name):
    from engine.errors import DbrtError

    with pytest.raises(ValueError, match=r"must be cuda or cuda:N \(N: the GPU's index, from 0\)"):
        hwdecode.parse_hwaccel(name)
    with pytest.raises(DbrtError, match=f"^--hwaccel {name}: must be cuda or cuda:N"):
        hwdecode.check_hwaccel(name)
    video = write_video(tmp_path / "v.mp4", frames=2)
    with pytest.raises(SourceError, match=f"hwaccel '{name}' must be cuda or cuda:N"):
        Pipeline(str(video), FakeDetector(), source_options=dict(hwaccel=name))
