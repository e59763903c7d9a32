"""Whether ONNX Runtime's INT8 kernels compute a Q/DQ model's INT8 arithmetic on this CPU.

On x86 CPUs without VNNI (AVX2-only ones such as AMD Zen 3 or Intel before Cascade Lake / Alder
Lake) ONNX Runtime's u8s8 convolution kernels add pairs of uint8 x int8 products in int16
(`vpmaddubsw`), which saturates; the fused INT8 result then differs from the model's INT8
arithmetic (int32 accumulation, as TensorRT and VNNI CPUs do it), sometimes by many boxes. The
same graph run as float ops on the dequantized values (`FLOAT_OPS_CONFIG`) computes that
arithmetic up to float rounding, on any CPU. See OpenVINO's "Saturation (overflow) issue".
"""
from __future__ import annotations

import functools
import platform
from typing import Dict, Optional

# ONNX Runtime session config: keep QuantizeLinear / DequantizeLinear as float ops (no fusion
# into integer kernels).
FLOAT_OPS_CONFIG: Dict[str, str] = {"session.disable_quant_qdq": "1"}

_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")

SATURATION_NOTE = ("this CPU has no VNNI, so ONNX Runtime's INT8 kernels add products in int16 "
                   "and saturate")
# what dbrt says where an INT8 model runs on such a CPU (the Detector, the Triton model)
SATURATION_WARNING = (f"INT8 model on the CPU: {SATURATION_NOTE}, which can cost boxes (the same "
                      "model on TensorRT or a VNNI CPU does not); on this CPU run the FP32 model")


def saturates(machine: str, cpuinfo: Optional[str]) -> bool:
    """True on an x86 CPU whose /proc/cpuinfo text lists none of the int8 dot-product flags.
    Unknown (no cpuinfo: not Linux) counts as not saturating: nothing is changed on a guess."""
    if machine.lower() not in ("x86_64", "amd64", "x86", "i686"):
        return False  # Arm's kernels widen to 32 bits
    if cpuinfo is None:
        return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags) and not flags.intersection(_DOT_PRODUCT_FLAGS)


@functools.lru_cache(maxsize=1)
def int8_kernels_saturate() -> bool:
    """`saturates` for this machine (read once)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = None
    return saturates(platform.machine(), text)


def exact_int8_config() -> Dict[str, str]:
    """Session config that makes ONNX Runtime on the CPU compute a Q/DQ model's INT8 arithmetic
    here: the float-ops config where the integer kernels saturate, none elsewhere."""
    return dict(FLOAT_OPS_CONFIG) if int8_kernels_saturate() else {}
