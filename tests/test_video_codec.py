"""`dbrt run --video-codec`: x264 on the CPU by default, NVENC's H.264 / HEVC on an NVIDIA GPU
(software H.264 is the host's limit at 1080p, benchmarks.host_ceiling); an encoder that cannot
open here is refused before the run, naming the flag."""
import pytest
from media import write_video

from engine.errors import DbrtError
from pipeline.cli import main
from pipeline.encoder import VIDEO_CODECS, check_encoder, encoder_options


def _nvenc_refused(codec: str) -> str:
    try:
        check_encoder(codec)
    except DbrtError as exc:
        return str(exc)
    pytest.skip(f"{codec} encodes here (an NVIDIA GPU with its driver)")


def test_each_encoder_gets_its_quality_and_latency_settings():
    assert encoder_options("libx264", 23, False) == {"crf": "23", "preset": "veryfast"}
    assert encoder_options("libx264", 23, True)["tune"] == "zerolatency"
    nvenc = encoder_options("h264_nvenc", 23, False)
    assert nvenc == {"preset": "p3", "rc": "vbr", "cq": "23", "b": "0",  # constant quality
                     "forced-idr": "1"}
    assert encoder_options("hevc_nvenc", 30, True) == dict(nvenc, cq="30", tune="ll", zerolatency="1",
                                                           delay="0")
    assert VIDEO_CODECS[0] == "libx264"


@pytest.mark.parametrize("codec", VIDEO_CODECS)
@pytest.mark.parametrize("live", [False, True])
def test_every_encoder_option_is_one_this_ffmpeg_knows(codec, live):
    """FFmpeg ignores an option it does not know (PyAV hands it back unused): a misspelt one
    would change nothing, silently. NVENC's options are known without an NVIDIA GPU."""
    import av

    context = av.CodecContext.create(codec, "w")
    if not hasattr(context, "supported_options"):  # PyAV 18's; Python 3.10 has PyAV 17 at most
        pytest.skip(f"PyAV {av.__version__} cannot list FFmpeg's encoder options (PyAV 18 can)")
    supported = context.supported_options
    names = {option.name for option in [*supported.private, *supported.generic]}
    assert set(encoder_options(codec, 23, live)) <= names


@pytest.mark.parametrize("live", [False, True])
def test_nvenc_forces_idr_keyframes(live):
    """An MP4 starts a fragment at each keyframe the encoder asks for every 2 s (a file's as a
    live stream's); NVENC makes a frame asked for as I an IDR frame (a keyframe) only with
    forced-idr."""
    for codec in ("h264_nvenc", "hevc_nvenc"):
        assert encoder_options(codec, 23, live)["forced-idr"] == "1"


def test_x264_opens_and_an_unknown_encoder_is_named():
    check_encoder("libx264")
    with pytest.raises(DbrtError, match="--video-codec vp9: choose one of libx264, h264_nvenc"):
        check_encoder("vp9")


@pytest.mark.parametrize("codec", ["h264_nvenc", "hevc_nvenc"])
def test_nvenc_without_an_nvidia_gpu_is_one_line_before_the_run(codec, tmp_path, capsys):
    message = _nvenc_refused(codec)
    assert message.startswith(f"--video-codec {codec} cannot encode here: ")
    assert "NVENC needs an NVIDIA GPU and its driver" in message
    video = write_video(tmp_path / "v.mp4", frames=3)
    assert main(["run", str(video), "-o", str(tmp_path / "out"), "--video-codec", codec]) == 2
    err = capsys.readouterr().err
    assert f"--video-codec {codec} cannot encode here" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "report.json").exists()  # refused before the run


def test_a_codec_without_a_video_is_refused(tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", frames=3)
    assert main(["run", str(video), "-o", str(tmp_path / "out"), "--no-video",
                 "--video-codec", "hevc_nvenc"]) == 2
    err = capsys.readouterr().err
    assert "--video-codec hevc_nvenc encodes the annotated video; with --no-video there is none" in err


def test_the_default_codec_writes_h264(tmp_path, tiny_onnx):
    import av

    video = write_video(tmp_path / "v.mp4", frames=4, height=64, width=96)
    out = tmp_path / "out"
    assert main(["run", str(video), "--model", str(tiny_onnx), "-o", str(out), "--quiet",
                 "--video-codec", "libx264"]) == 0
    with av.open(str(out / "annotated.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) == 4


def test_the_gpu_proof_times_each_encoder_or_says_why_it_cannot_open():
    import numpy as np

    from benchmarks import gpu_checks

    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)]
    rows = {r["codec"]: r for r in gpu_checks.check_video_encoders(frames, size=(128, 96))}
    x264 = rows["libx264"]
    assert x264["frames"] == 3 and x264["cpu_ms_per_frame"] >= 0 and x264["kib_per_frame"] > 0
    for codec in ("h264_nvenc", "hevc_nvenc"):
        assert "error" in rows[codec] and "NVENC needs" in rows[codec]["error"] or \
            rows[codec]["frames"] == 3


def test_hevc_in_mp4_is_tagged_hvc1(tmp_path):
    """FFmpeg tags HEVC in MP4 hev1, which Safari and Apple's players refuse; hvc1 plays
    everywhere HEVC does. (x265 stands in for NVENC's HEVC: the tag is the muxer's.)"""
    import av
    import numpy as np

    from pipeline.encoder import VideoEncoder

    if "libx265" not in av.codecs_available:
        pytest.skip("this FFmpeg has no x265")
    encoder = VideoEncoder(tmp_path / "v.mp4", 96, 64, 25.0, "libx265", 28)
    for i in range(3):
        encoder.encode(np.full((64, 96, 3), 60 * i, np.uint8), i / 25)
    encoder.close()
    with av.open(str(tmp_path / "v.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "hevc" and stream.codec_tag == "hvc1"
        assert sum(1 for _ in container.decode(stream)) == 3


def test_the_gpu_proof_skips_the_encoders_without_frames():
    """Without its video the proof passed no frames: x264's row divided by zero, and the step
    read as failed rather than skipped."""
    from benchmarks import gpu_checks

    with pytest.raises(gpu_checks.Skip, match="no video frames"):
        gpu_checks.check_video_encoders([])


def test_the_encoder_forgets_durations_of_packets_it_never_sees(tmp_path):
    """Durations wait for the packet of their frame (by pts); an encoder whose packets carried
    other pts would leave them all waiting, a few bytes a frame for the whole run."""
    import numpy as np

    from pipeline.encoder import VideoEncoder

    encoder = VideoEncoder(tmp_path / "v.mp4", 64, 48, 25.0, "libx264", 23)
    encoder._durations.update({-i - 1: 1 for i in range(300)})  # never to be popped
    encoder.encode(np.zeros((48, 64, 3), np.uint8), 0.0)
    assert len(encoder._durations) <= 256
    encoder.close()
