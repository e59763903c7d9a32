"""Jetson boards in benchmark results: which board, which L4T release and which power mode.

A Jetson's FPS depends on its power mode (`nvpmodel`) as much as on the model: MAXN against a
15 W mode is a factor of two or more, so results that do not say the mode cannot be compared.
nvidia-smi, which names desktop and server GPUs, is missing or says little on a Jetson: the
board's name comes from the device tree instead.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")


def board() -> Optional[str]:
    """'NVIDIA Jetson AGX Orin Developer Kit', or None off a Jetson. A carrier board of
    another maker may give its own name alone; its L4T release file says it is a Jetson."""
    try:
        model = DEVICE_TREE_MODEL.read_bytes().decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        return None
    return model if model and ("jetson" in model.lower() or TEGRA_RELEASE.is_file()) else None


def l4t_release() -> Optional[str]:
    """'R36.4.3' from /etc/nv_tegra_release ('# R36 (release), REVISION: 4.3, ...')."""
    try:
        first = TEGRA_RELEASE.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
    return f"R{match.group(1)}.{match.group(2)}" if match else None


def power_mode() -> Optional[str]:
    """The nvpmodel mode's name ('MAXN', '30W'), None where nvpmodel cannot say."""
    tool = shutil.which("nvpmodel")
    if tool is None:
        return None
    try:
        out = subprocess.run([tool, "-q"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"NV Power Mode:\s*(\S+)", out)
    return match.group(1) if match else None


def jetson_info() -> Optional[dict]:
    """{board, l4t, power_mode} on a Jetson, else None."""
    name = board()
    if name is None:
        return None
    return {"board": name, "l4t": l4t_release(), "power_mode": power_mode()}


def describe(info: dict) -> str:
    """The footer's words: 'L4T R36.4.3, power mode MAXN'."""
    mode = info.get("power_mode") or "unknown (nvpmodel -q)"
    return f"L4T {info.get('l4t') or '?'}, power mode {mode}"
