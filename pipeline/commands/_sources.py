"""`dbrt run`'s flags for how video files and network streams are read: --hwaccel (NVDEC, on which
GPU), --rtsp-transport and --source-timeout; each refused when no source it applies to is given."""
from __future__ import annotations

from pipeline.sources.network import READ_TIMEOUT_S, RTSP_TRANSPORTS, NetworkSource

from ._validate import at_least, hwaccel


def add_stream_arguments(group) -> None:
    group.add_argument("--hwaccel", type=hwaccel, metavar="cuda[:N]",
                       help="decode video files and network streams on an NVIDIA GPU (NVDEC): "
                            "cuda on the first GPU CUDA sees, cuda:N on GPU N (as CUDA numbers "
                            "them under CUDA_VISIBLE_DEVICES; the model runs on the first), "
                            "refused when that GPU cannot be opened; a codec NVDEC cannot decode "
                            "is decoded in software, said once in the summary (default: software "
                            "decoding on the CPU)")
    group.add_argument("--rtsp-transport", choices=RTSP_TRANSPORTS,
                       help="how rtsp:// streams send their video: tcp (the default: inside the "
                            "RTSP connection, no artefacts from lost packets, through NAT), udp "
                            "(RTP over UDP, which some cameras and NVRs serve only), "
                            "udp_multicast, or http (RTSP tunnelled over HTTP, through proxies)")
    group.add_argument("--source-timeout", type=at_least(0.0, float, strict=True),
                       metavar="SECONDS",
                       help="network streams: how long each read waits for data before the "
                            "connection counts as lost and is reconnected (default "
                            f"{READ_TIMEOUT_S:g}; more than the gap between the frames of a camera "
                            "that sends few, as a timelapse or motion-only encoder; less for a "
                            f"faster failover); connecting waits up to "
                            f"{NetworkSource.OPEN_TIMEOUT:g} s, or "
                            "SECONDS if longer")


def check_stream_flags(args, specs) -> dict:
    """The network options of parse_source that the flags ask for; a flag refused when none of
    the sources is one it applies to (rather than ignored)."""
    from engine.errors import DbrtError
    from pipeline.sources.network import is_rtsp_url, is_url

    texts = [spec for spec in specs if isinstance(spec, str)]  # image runs are lists
    if args.rtsp_transport and not any(is_rtsp_url(text) for text in texts):
        raise DbrtError(f"--rtsp-transport {args.rtsp_transport} applies to rtsp:// sources; "
                        "none of the sources is one")
    if args.source_timeout is not None and not any(is_url(text) for text in texts):
        raise DbrtError("--source-timeout applies to network streams (rtsp://, http(s)://, "
                        "udp://...); none of the sources is one")
    return dict(rtsp_transport=args.rtsp_transport or "tcp",
                source_timeout=args.source_timeout or READ_TIMEOUT_S)


def camera_mode(args) -> dict:
    """The capture mode asked for on the command line, as CameraSource keywords."""
    width, height = args.camera_size or (None, None)
    mode = dict(width=width, height=height, fps=args.camera_fps, fourcc=args.camera_fourcc)
    return {key: value for key, value in mode.items() if value is not None}
