"""argparse `type=` checks shared by the subcommands: numbers in range, HxW sizes, and output
locations that can really be written.

argparse calls these while parsing (also on string defaults), so a bad value stops the command
before any work starts, with one line naming the flag and the value:
`dbrt run: error: argument --max-side: must be an integer from 32 to 4000, got '0'`.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Optional

from dbnet.spec import MAX_INPUT_SIDE
from engine.loader import ENGINE_SUFFIXES  # what dbrt run / dbrt info take for an engine

MIN_INPUT_SIDE = 32  # the network stride of every DB-family model
# Caps on the CPU flags of `dbrt run` / `dbrt eval`: above any core count where more threads
# still pay, and low enough that a typo (--sessions 100000: a model copy each) fails at once
# instead of loading for hours
MAX_CPU_THREADS = 256
MAX_SESSIONS = 64
DEVICES = ("auto", "cpu", "cuda")
# backbone width multipliers (--width): 4x the standard ResNet's channels, 2048 in its last stage
MAX_WIDTH = 4.0


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake is one line naming the flag and the value (no usage block), exit 2: the
    parser of every dbrt command and of the benchmarks `dbrt bench` runs."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parse(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):  # 'inf', 'nan': no setting
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _show(value) -> str:
    """A bound as the user types it: integers in full (4294967295, not 4.29497e+09)."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def at_least(low, kind: type = int, strict: bool = False, at_most=None) -> Callable[[str], object]:
    """A finite number >= low (> low when strict) and, when given, <= at_most; the error names
    the bound the value is past."""
    noun = "an integer" if kind is int else "a number"
    what = f"{noun} {'>' if strict else '>='} {_show(low)}"

    def check(text: str):
        value = _parse(text, kind, what)
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"must be at most {_show(at_most)}, got {text!r}")
        return value

    check.__name__ = f"{kind.__name__}_at_least_{low}"
    return check


def between(low, high, kind: type = int, open_ends: bool = False) -> Callable[[str], object]:
    """A number in [low, high] (in (low, high) when open_ends)."""
    noun = "an integer" if kind is int else "a number"
    what = (f"{noun} {'between' if open_ends else 'from'} {_show(low)} "
            f"{'and' if open_ends else 'to'} {_show(high)}")

    def check(text: str):
        value = _parse(text, kind, what)
        inside = low < value < high if open_ends else low <= value <= high
        if not inside:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    check.__name__ = f"{kind.__name__}_between_{low}_{high}"
    return check


def seed(text: str) -> int:
    """A random seed: NumPy takes 0 to 2**32 - 1."""
    return between(0, 2 ** 32 - 1)(text)


def width_multiplier(text: str) -> float:
    """A backbone width multiplier (--width of train and export): > 0, at most MAX_WIDTH."""
    return at_least(0.0, float, strict=True, at_most=MAX_WIDTH)(text)


def number_list(low, high) -> Callable[[str], tuple]:
    """Comma-separated numbers, each in [low, high]: '0.1,0.15,0.2' -> (0.1, 0.15, 0.2), sorted."""
    what = f"comma-separated numbers from {low:g} to {high:g}"

    def check(text: str) -> tuple:
        try:
            values = tuple(sorted(float(part) for part in text.split(",")))
        except ValueError:
            values = ()
        if not values or not all(low <= v <= high for v in values):  # NaN fails too
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return values

    check.__name__ = f"numbers_between_{low}_{high}"
    return check


def side_length(text: str) -> int:
    """A resize side (--limit-side, --max-side): the stride up to the maximum input side."""
    return between(MIN_INPUT_SIDE, MAX_INPUT_SIDE)(text)


def input_size(text: str):
    """HxW (or H,W), each side from 32 to the maximum input side."""
    match = re.fullmatch(r"\s*(\d+)\s*[x,]\s*(\d+)\s*", text)
    sides = (int(match.group(1)), int(match.group(2))) if match else None
    if sides is None or not all(MIN_INPUT_SIDE <= s <= MAX_INPUT_SIDE for s in sides):
        raise argparse.ArgumentTypeError(
            f"expected HxW with sides from {MIN_INPUT_SIDE} to {MAX_INPUT_SIDE}, e.g. 736x1280, "
            f"got {text!r}")
    if any(s % MIN_INPUT_SIDE for s in sides):  # else refused after the model loads, unnamed
        raise argparse.ArgumentTypeError(
            f"each side must be a multiple of {MIN_INPUT_SIDE} (the network's stride), e.g. "
            f"{_stride_multiple(sides[0])}x{_stride_multiple(sides[1])}, got {text!r}")
    return sides


def _stride_multiple(side: int) -> int:
    return max(MIN_INPUT_SIDE, round(side / MIN_INPUT_SIDE) * MIN_INPUT_SIDE)


def region(text: str, flag: str = "--roi"):
    """X,Y,W,H of --roi (or --ignore): frame pixels (whole numbers) or fractions of the frame
    (0..1) -> a pipeline.region.Region."""
    from pipeline.region import Region, RegionError

    try:
        return Region.parse(text, flag)
    except RegionError as exc:
        raise argparse.ArgumentTypeError(f"{exc.reason}, got {text!r}") from None


def ignore_zone(text: str):
    """X,Y,W,H of an --ignore zone, as --roi takes a region."""
    return region(text, "--ignore")


def frame_size(text: str):
    """WxH of a camera's capture mode (width first, as cameras list them) -> (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", text)
    if match is None or not all(0 < int(s) <= 16384 for s in match.groups()):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1920x1080, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def fourcc(text: str) -> str:
    """A four-character pixel format code such as MJPG or YUYV."""
    if len(text) != 4 or not (text.isascii() and text.isprintable()):
        raise argparse.ArgumentTypeError(f"expected four characters, e.g. MJPG or YUYV, got {text!r}")
    return text


def _writable(folder: Path) -> bool:
    """A file can be made in `folder`: tried, since os.access says yes to root everywhere
    (read-only mounts, /proc)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _folder_problem(path: Path) -> Optional[str]:
    """Why files cannot be written in folder `path` (created if missing), or None."""
    if path.exists():
        if not path.is_dir():
            return f"{str(path)!r} is a file, not a folder"
        if not _writable(path):
            return f"folder {str(path)!r} is not writable"
        return None
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"cannot create folder {str(path)!r}: {str(parent)!r} is a file"
            if not _writable(parent):
                return f"cannot create folder {str(path)!r}: {str(parent)!r} is not writable"
            return None
    return None


def _file_problem(path: Path) -> Optional[str]:
    """Why file `path` cannot be written (its folder created if missing), or None."""
    if path.is_dir():
        return f"{str(path)!r} is a folder, expected a file name"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{str(path)!r} is not writable"
    return _folder_problem(path.parent)


def _empty_path(text: str) -> Optional[str]:
    """An empty name (an unset variable: -o "$OUT") would be the current folder: refused."""
    return "empty path (an unset variable?); give a name" if not text.strip() else None


def output_folder(text: str) -> str:
    """A folder the command will write into: it exists and is writable, or can be created."""
    problem = _empty_path(text) or _folder_problem(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def output_file(text: str) -> str:
    """A file the command will write: not a folder, in a folder that is or can be made writable."""
    problem = _empty_path(text) or _file_problem(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


# a probability or a share (--thresh, --box-thresh, --iou, ...)
zero_to_one = between(0.0, 1.0, float)


def output_file_problem(path) -> Optional[str]:
    """Why a file the command derives from its flags (not typed itself) cannot be written, or None."""
    return _file_problem(Path(path))


def output_file_with_suffix(suffix: str) -> Callable[[str], str]:
    """An `output_file` whose name ends in `suffix` (e.g. ".onnx"): the other commands open a
    file by its suffix, so one written under another name could not be used."""

    def check(text: str) -> str:
        output_file(text)
        if Path(text).suffix.lower() != suffix:
            raise argparse.ArgumentTypeError(f"{text!r} must end in {suffix} (the other dbrt "
                                             f"commands recognise the file by it)")
        return text

    return check




def engine_file(text: str) -> str:
    """An `output_file` named as a TensorRT engine: under another name the engine written would
    be refused by the commands meant to use it (and -o model.onnx overwrote the model)."""
    output_file(text)
    if Path(text).suffix.lower() not in ENGINE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r} must end in {', '.join(ENGINE_SUFFIXES)} (the "
                                         "other dbrt commands recognise an engine by it)")
    return text


def listen_address(text: str):
    """[HOST:]PORT (HOST defaults to 127.0.0.1; [::1]:PORT for IPv6) -> (host, port)."""
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]:|([A-Za-z0-9.-]*):)?(\d{1,5})", text.strip())
    port = int(match.group(3)) if match else -1
    if not match or not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected [HOST:]PORT with a port from 0 to 65535, e.g. 8080 or 0.0.0.0:8080, got {text!r}")
    return (match.group(1) or match.group(2) or "127.0.0.1"), port


def broker_url(text: str) -> str:
    """mqtt[s]://[user:pass@]HOST[:PORT]/TOPIC[?ca=FILE], checked now (pipeline.mqtt.parse_broker_url)."""
    from pipeline.mqtt import parse_broker_url

    try:
        parse_broker_url(text)
    except ValueError as exc:
        from pipeline.sources.base import without_credentials

        raise argparse.ArgumentTypeError(f"{without_credentials(str(exc))}, got "
                                         f"{without_credentials(text)!r}") from None
    return text


def restream_url(text: str) -> str:
    """rtsp:// rtmp:// srt:// udp://..., checked now (pipeline.restream.check_url)."""
    from pipeline.restream import check_url, redacted

    try:
        check_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {redacted(text, text)!r}") from None
    return text


def hwaccel(text: str) -> str:
    """--hwaccel: cuda, or cuda:N for GPU N (pipeline.sources.hwdecode.parse_hwaccel)."""
    from pipeline.sources.hwdecode import parse_hwaccel

    try:
        parse_hwaccel(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None
    return text
