"""NVIDIA hardware video decoding (NVDEC) for video files and network streams, through FFmpeg's
CUDA hwaccel in PyAV (`hwaccel="cuda"`; None, the default, decodes in software on the CPU,
whose H.264 / HEVC decoding is a GPU server's limit at 1080p: benchmarks/host_ceiling.py).

FFmpeg decodes on the GPU and copies each frame back to system memory (NV12, inside PyAV's
decode call), where it becomes an upright BGR picture as a software-decoded one does. PyAV is
asked to fall back to software (allow_software_fallback; without it a stream NVDEC refuses
fails to decode): a stream whose codec has no NVDEC decoder (PNG, ProRes) opens on FFmpeg's
software decoder, and one whose profile NVDEC refuses (4:2:2 H.264, a frame larger than the
chip decodes) is decoded in software from its first frame; either is said once in the source's
events (`Decoding`). A CUDA device that cannot be opened (no NVIDIA GPU or driver), or a driver
without its NVDEC library, is no fallback: it is refused before the run. "cuda:N" decodes on
GPU N (as CUDA counts them, under CUDA_VISIBLE_DEVICES), "cuda" on CUDA's first."""
from __future__ import annotations

import re
from typing import Optional, Tuple

from engine.errors import DbrtError, SourceError
from engine.lazy import require

HWACCELS = ("cuda",)  # each also as NAME:N, the index of the GPU that decodes
_INDEXED = re.compile(r"([a-z]+)(?::([0-9]+))?")
NVDEC_NEEDS = "NVDEC needs an NVIDIA GPU and its driver"
_OPENED = set()  # "cuda", "cuda:1"... whose device opened here once (each try makes a CUDA context)


def parse_hwaccel(name: str) -> Tuple[str, Optional[str]]:
    """'cuda' -> ('cuda', None): FFmpeg's default device; 'cuda:1' -> ('cuda', '1'), the device
    string FFmpeg's CUDA hwaccel takes (a GPU index); ValueError for anything else."""
    match = _INDEXED.fullmatch(name) if isinstance(name, str) else None
    if match is None or match.group(1) not in HWACCELS:
        raise ValueError("must be " + " or ".join(f"{n} or {n}:N" for n in HWACCELS)
                         + " (N: the GPU's index, from 0)")
    index = match.group(2)
    return match.group(1), None if index is None else str(int(index))


def device_problem(name: str) -> Optional[str]:
    """Why FFmpeg cannot open a `name` device here (its log's reason, e.g. 'Cannot load
    libcuda.so.1'), or None when it can."""
    if name in _OPENED:
        return None
    kind, device = parse_hwaccel(name)
    av = require("av")
    try:
        from av.codec.hwaccel import HWAccel, hwdevices_available
    except ImportError:
        return (f"this PyAV ({av.__version__}) has no hardware decoding (PyAV 17 and later "
                "have it: pip install -U av)")
    if kind not in hwdevices_available():
        return f"this FFmpeg (PyAV {av.__version__}) has no {kind} hardware decoding"
    logging = require("av.logging")
    level = logging.get_level()
    logging.set_level(logging.ERROR)  # FFmpeg says why in its log, not in the error
    logs = []
    try:
        with logging.Capture() as logs:
            HWAccel(kind, device=device).create(av.codec.Codec("h264", "r"))
    except NotImplementedError:
        return f"this FFmpeg (PyAV {av.__version__}) has no NVDEC H.264 decoder"
    except (av.FFmpegError, OSError, ValueError) as exc:
        said = [text.strip() for _, _, text in logs if text.strip()]
        return said[0] if said else (getattr(exc, "strerror", None) or str(exc))
    finally:
        logging.set_level(level)
    problem = decoder_library_problem()
    if problem is None:
        _OPENED.add(name)
    return problem


def decoder_library_problem() -> Optional[str]:
    """Why the driver's NVDEC library cannot be loaded, or None. FFmpeg loads it at a stream's
    first frame and, failing, decodes in software (PyAV's fallback): a CUDA device without it
    (a container not given the driver's 'video' capability; a Jetson, whose driver has no
    such library) would decode every stream in software, each said to be one NVDEC refused."""
    import ctypes
    import sys

    library = "nvcuvid.dll" if sys.platform == "win32" else "libnvcuvid.so.1"
    try:
        ctypes.CDLL(library)
    except OSError:
        return f"Cannot load {library}"
    return None


def check_hwaccel(name: Optional[str]) -> None:
    """`dbrt run --hwaccel`: refused in one line, before the model loads, when the device
    cannot be opened here (rather than at the first video's open)."""
    if name is None:
        return
    try:
        parse_hwaccel(name)
    except ValueError as exc:
        raise DbrtError(f"--hwaccel {name}: {exc}") from None
    problem = device_problem(name)
    if problem is not None:
        raise DbrtError(f"--hwaccel {name} cannot decode here: {problem} ({NVDEC_NEEDS})")


def hwaccel_for(name: Optional[str], source: str):
    """The PyAV HWAccel that av.open takes for `name`, or None (software decoding); a device
    that cannot be opened here is the source's SourceError."""
    if name is None:
        return None
    try:
        kind, device = parse_hwaccel(name)
    except ValueError as exc:
        raise SourceError(f"{source}: hwaccel {name!r} {exc}") from None
    problem = device_problem(name)
    if problem is not None:
        raise SourceError(f"cannot decode {source} with NVDEC (hwaccel {name}): {problem} "
                          f"({NVDEC_NEEDS})")
    from av.codec.hwaccel import HWAccel

    return HWAccel(kind, device=device, allow_software_fallback=True)


class Decoding:
    """Which decoder a source's video stream runs on, for its report: 'nvdec' or 'software'
    (None while NVDEC was asked for and no frame has said yet). `opened` after each open (a
    stream's reconnect opens a new decoder), `decoded` after a frame of it; each returns a
    note to keep in the source's events the first time NVDEC was asked for and software
    decodes, else None."""

    def __init__(self, hwaccel: Optional[str]):
        self.hwaccel = hwaccel
        self.decoder: Optional[str] = "software" if hwaccel is None else None
        self.note: Optional[str] = None
        self._checked = True  # whether the open's first frame was looked at

    def opened(self, stream) -> Optional[str]:
        if self.hwaccel is None:
            return None
        context = stream.codec_context
        if context.is_hwaccel:  # NVDEC has this codec; its first frame says if it took it
            self._checked = False
            return None
        self.decoder = "software"
        return self._fell_back(f"NVDEC has no {context.name} decoder")

    def decoded(self, stream) -> Optional[str]:
        if self._checked:
            return None
        self._checked = True
        context = stream.codec_context
        # FFmpeg's decoder asks for its output format once it knows the stream: the GPU's
        # ('cuda') when NVDEC set up, a software one when it refused the stream (frame threads
        # copy the choice back to this context)
        chosen = getattr(context.format, "name", None)
        if chosen == "cuda":
            self.decoder = "nvdec"
            return None
        self.decoder = "software"
        profile = f" {context.profile}" if context.profile else ""
        return self._fell_back(f"NVDEC cannot decode this {context.name}{profile} stream "
                               f"({chosen})")

    def _fell_back(self, why: str) -> Optional[str]:
        if self.note is not None:
            return None
        self.note = f"{why}: decoded in software"
        return self.note

    def describe(self) -> dict:
        return dict(hwaccel=self.hwaccel, decoder=self.decoder)


class ReportsDecoding:
    """For a source with a `decoding` (Decoding): its notes kept in the source's events, its
    `hwaccel` and `decoder` in the source's description."""

    def _note(self, note: Optional[str]) -> None:
        if note is not None:
            self.stats.note(note)

    def describe(self) -> dict:
        return {**super().describe(), **self.decoding.describe()}
