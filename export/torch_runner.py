"""The PyTorch DBNet behind the Runner interface: a stand-in for TensorRT on GPUs without it.

On CUDA it runs in FP16 on its own CuPy stream (`torch.cuda.ExternalStream`), takes CuPy or
NumPy inputs (CuPy via DLPack, no copy) and returns CuPy outputs that stay on the GPU, exactly as
`engine.tensorrt.runner.TensorRTRunner` does; on CPU it takes and returns NumPy. torch is an
export-time dependency, so this lives in `export/`.

    model, _ = model_from_checkpoint("db.pth")          # export.checkpoint
    with TorchRunner(model, device="cuda") as r:
        prob = r.infer(cupy_batch)["prob"]
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from engine.base import Runner, TensorInfo
from engine.errors import DbrtError
from engine.lazy import require
from dbnet.spec import METADATA_KEY, ModelSpec


def fold_batchnorm(net):
    """A copy of `net` with each BatchNorm that follows a Conv2d folded into it (torch.fx), as
    TensorRT does before choosing precisions. Needed before FP16: the DB head's BN running
    variances (~1e5 in the shipped model) overflow FP16 to inf and the map becomes garbage.
    Returns `net` itself when it cannot be traced (e.g. DCN)."""
    import copy

    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy.deepcopy(net).eval())
    except Exception:  # noqa: BLE001 - untraceable graphs keep their BN layers
        return net


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, model, device: str = "cpu", half: Optional[bool] = None,
                 spec: Optional[ModelSpec] = None, input_name: str = "images",
                 output_name: str = "prob"):
        super().__init__()
        if device not in ("cpu", "cuda"):
            raise DbrtError(f"TorchRunner device must be 'cpu' or 'cuda', got {device!r}")
        self.model = model
        self.device = device
        self.half = (device == "cuda") if half is None else bool(half)
        self._spec = spec or ModelSpec(arch=getattr(model, "arch_name", "dbnet"))
        self._input = TensorInfo(input_name, (None, 3, None, None), "float32")
        self._output = TensorInfo(output_name, (None, 1, None, None), "float32")
        self.output_device = device
        self._stream = None
        self._torch_stream = None
        self._backend = None

    def _activate(self) -> None:
        torch = require("torch")
        if self.device == "cuda":
            from engine.cuda import require_backend

            if not torch.cuda.is_available():
                raise DbrtError("TorchRunner(device='cuda') needs a CUDA build of torch and a GPU")
            self._backend = require_backend("TorchRunner on CUDA")
            self._stream = self._backend.stream()
            self._torch_stream = torch.cuda.ExternalStream(self._backend.stream_handle(self._stream))
        self.model = self.model.to(self.device).eval()
        if self.half:
            self.model = fold_batchnorm(self.model).half()

    def _deactivate(self) -> None:
        self._stream = self._torch_stream = None

    def _to_tensor(self, torch, array):
        if self.device == "cuda" and self._backend.is_device_array(array):
            tensor = torch.from_dlpack(array)              # shares the CuPy memory
        else:
            host = array.get() if hasattr(array, "get") else np.asarray(array)
            tensor = torch.from_numpy(np.ascontiguousarray(host, np.float32))
        return tensor.to(self.device, torch.float16 if self.half else torch.float32)

    def _infer(self, feed: Mapping[str, object]) -> Dict[str, object]:
        torch = require("torch")
        if self.device == "cpu":
            with torch.inference_mode():
                prob = self.model(self._to_tensor(torch, feed[self._input.name]))
            return {self._output.name: prob.float().numpy()}
        self._backend.wait_for_caller(self._stream)        # input written on the caller's stream
        with torch.cuda.stream(self._torch_stream), torch.inference_mode():
            prob = self.model(self._to_tensor(torch, feed[self._input.name])).float().contiguous()
        self._backend.synchronize(self._stream)
        cp = self._backend.cp
        return {self._output.name: cp.from_dlpack(prob)}

    @property
    def inputs(self) -> Tuple[TensorInfo, ...]:
        return (self._input,)

    @property
    def outputs(self) -> Tuple[TensorInfo, ...]:
        return (self._output,)

    @property
    def metadata(self) -> Dict[str, str]:
        return {METADATA_KEY: self._spec.to_json()}
