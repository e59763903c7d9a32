"""Triton Python-backend model that runs an ONNX model with ONNX Runtime (CPU).

Copied as `model.py` into a model's version folder by
engine.triton.models.write_onnxruntime_model; it runs inside tritonserver's Python stub, so it
imports only numpy, onnxruntime and Triton's `triton_python_backend_utils` (never dbrt). Config
parameters:

    onnx_file   the model file in the version folder (default model.onnx)
    threads     ONNX Runtime intra-op threads per instance (0: ONNX Runtime's default)
    precision   the model's precision ("int8": the server's CPU is checked for saturating INT8
                kernels with the int8_cpu.py copied beside this file, and a warning is logged)

The dynamic batcher hands `execute` several requests at once: requests whose inputs have the same
shapes (but for the batch) are concatenated into ONE session call and the outputs split back.
"""
import importlib.util
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _parameter(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


def _note_saturating_int8(folder, name):
    """The same check as dbrt's Detector, on the server's CPU (where the kernels run)."""
    spec = importlib.util.spec_from_file_location("dbrt_int8_cpu", os.path.join(folder, "int8_cpu.py"))
    int8_cpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(int8_cpu)
    if int8_cpu.int8_kernels_saturate():
        message = f"dbrt: model {name!r}: {int8_cpu.SATURATION_WARNING}"
        logger = getattr(pb_utils, "Logger", None)
        if logger is not None:
            logger.log_warn(message)
        else:
            print(message, flush=True)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "threads", 0))
        path = os.path.join(folder, _parameter(config, "onnx_file", "model.onnx"))
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        if _parameter(config, "precision", "") == "int8":
            _note_saturating_int8(folder, config.get("name", "?"))
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        arrays = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs]
                  for r in requests]
        groups = {}
        for index, feeds in enumerate(arrays):
            groups.setdefault(tuple(a.shape[1:] for a in feeds), []).append(index)
        responses = [None] * len(requests)
        for members in groups.values():
            feed = {name: np.concatenate([arrays[i][k] for i in members])
                    for k, name in enumerate(self.inputs)}
            try:
                results = self.session.run(self.outputs, feed)
            except Exception as exc:  # a bad input fails its requests, not the server
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            start = 0
            for i in members:
                count = arrays[i][0].shape[0]
                tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + count]))
                           for name, out in zip(self.outputs, results)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += count
        return responses
