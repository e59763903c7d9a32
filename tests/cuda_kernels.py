"""The CUDA C kernels dbrt hands to CuPy, checked on machines without a GPU.

- `fake_cupy()`: just enough of CuPy (host arrays standing in for device ones) for a
  GpuPreprocessor / GpuCropper to run up to its kernel launch, which it records;
- `check_launch(source, name, args)`: those arguments against the kernel's parameter list. CuPy
  passes a NumPy scalar as its own C type and a Python int as a 64-bit `long long` (a float as a
  `double`), so a kernel taking `int` or `float` must get numpy.int32 / numpy.float32, and a
  pointer parameter a C-contiguous device array of its element type (cupy/cuda/function.pyx,
  `_pointer`); a mismatch shows only on a GPU, as garbage;
- `nvrtc_compile(source, name, arch)`: NVRTC's verdict on the source, where NVRTC is installed
  (the nvidia-cuda-nvrtc-cu12 wheel or a CUDA toolkit; no GPU needed), else None.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional, Tuple

import numpy as np

SCALARS = {"int": np.int32, "unsigned int": np.uint32, "long long": np.int64,
           "float": np.float32, "double": np.float64}
POINTEES = {"unsigned char": np.uint8, "int": np.int32, "float": np.float32}
NO_NVRTC = ("NVRTC is not installed (pip install nvidia-cuda-nvrtc-cu12, about 90 MB) or a "
            "CUDA toolkit: the kernels are compiled on the GPU machine only")


def kernel_params(source: str, name: str) -> List[Tuple[str, bool, str]]:
    """(C type without qualifiers, is a pointer, parameter name) of `name`'s parameters."""
    match = re.search(r'extern "C" __global__ void ' + name + r"\s*\(([^)]*)\)", source)
    assert match, f"no extern \"C\" __global__ kernel {name} in the source"
    params = []
    for text in match.group(1).split(","):
        pointer = "*" in text
        words = text.replace("*", " ").replace("__restrict__", " ").replace("const", " ").split()
        params.append((" ".join(words[:-1]), pointer, words[-1]))
    return params


def check_launch(source: str, name: str, args) -> None:
    params = kernel_params(source, name)
    assert len(args) == len(params), f"{name} takes {len(params)} arguments, given {len(args)}"
    for (ctype, pointer, pname), arg in zip(params, args):
        if pointer:
            assert isinstance(arg, DeviceArray), f"{pname}: a device array, got {type(arg).__name__}"
            assert arg.dtype == POINTEES[ctype], f"{pname}: {ctype}*, got a {arg.dtype} array"
            assert arg.flags.c_contiguous, f"{pname}: a raw pointer needs a C-contiguous array"
        else:
            want = SCALARS[ctype]
            assert type(arg) is want, f"{pname}: {ctype} needs numpy.{want.__name__}, got {type(arg).__name__}"


# -- a recording stand-in for CuPy ---------------------------------------------------------------
class DeviceArray(np.ndarray):
    def set(self, array, stream=None):
        """CuPy's ndarray.set: same dtype and shape or an error; an asynchronous copy on the
        stream, which reads the host array until the stream is synchronised (done then here)."""
        if array.dtype != self.dtype:
            raise TypeError(f"{array.dtype} array cannot be set to {self.dtype} array")
        if array.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {array.shape}")
        if stream is None:  # (CuPy: the current stream; no caller here leaves it out)
            self[...] = array
        else:
            stream.pending.append((self, array))


class FakeStream:
    """The current stream: host -> device copies wait in `pending` until `synchronize`."""

    ptr = 0

    def __init__(self):
        self.pending: list = []

    def synchronize(self) -> None:
        for device, host in self.pending:
            device[...] = host
        self.pending.clear()


class RecordingKernel:
    def __init__(self, source: str, name: str):
        self.source, self.name, self.launches = source, name, []

    def __call__(self, grid, block, args, **kwargs):
        check_launch(self.source, self.name, args)
        self.launches.append((tuple(grid), tuple(block), tuple(args)))


def fake_cupy() -> SimpleNamespace:
    def device(array):
        return np.array(array).view(DeviceArray)

    stream = FakeStream()
    return SimpleNamespace(
        ndarray=DeviceArray, uint8=np.uint8, float32=np.float32, RawKernel=RecordingKernel,
        empty=lambda shape, dtype: np.empty(shape, dtype).view(DeviceArray), asarray=device,
        ascontiguousarray=lambda a: np.ascontiguousarray(a).view(DeviceArray),
        cuda=SimpleNamespace(get_current_stream=lambda: stream, alloc_pinned_memory=bytearray))


# -- NVRTC ---------------------------------------------------------------------------------------
def _nvrtc_library() -> Optional[ctypes.CDLL]:
    candidates = []
    try:
        spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    except ImportError:
        spec = None
    for folder in (spec.submodule_search_locations if spec else []) or []:
        candidates += sorted(Path(folder, "lib").glob("libnvrtc.so*"))
    found = ctypes.util.find_library("nvrtc")
    candidates += [found] if found else []
    for path in candidates:
        if "builtins" in str(path) or ".alt." in str(path):
            continue
        try:
            return ctypes.CDLL(str(path))
        except OSError:
            continue
    return None


def nvrtc_compile(source: str, name: str, arch: str) -> Optional[Tuple[int, str]]:
    """(NVRTC's result code, its log) for `source` at `arch` (e.g. compute_80), as CuPy's
    RawKernel compiles it (no other options); None where NVRTC is not installed."""
    lib = _nvrtc_library()
    if lib is None:
        return None
    program = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), f"{name}.cu".encode(),
                                  0, None, None) == 0
    try:
        options = (ctypes.c_char_p * 1)(f"-arch={arch}".encode())
        result = lib.nvrtcCompileProgram(program, 1, options)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value + 1)
        lib.nvrtcGetProgramLog(program, log)
        return result, log.value.decode(errors="replace").strip()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))


def check_compiles(source: str, name: str, arch: str) -> None:
    """The kernel compiles for `arch` without a message; skipped where NVRTC is not installed."""
    import pytest

    result = nvrtc_compile(source, name, arch)
    if result is None:
        pytest.skip(NO_NVRTC)
    code, log = result
    assert code == 0 and not log, log
