"""Triton Python-backend model: DB post-processing of probability maps into text polygons.

Copied as `model.py` into the post-processing model of a `dbrt triton export --with-postprocess`
repository, and run inside tritonserver's Python stub. It imports dbrt (pipeline.postprocess,
dbnet) from the folder named by the config parameter `dbrt_path` (relative to the version folder:
the exporter copies dbrt's sources there, so the repository is self-contained), APPENDED to
sys.path so the server environment's own numpy / OpenCV come first. Config parameters:

    dbrt_path   the folder holding dbrt's engine/, dbnet/ and pipeline/ packages
    dbrt        the ModelSpec JSON (thresholds, output meaning, letterboxing)

Inputs: the network's probability output (N, [1,] H, W) and `frame_size` (N, 2) = frame height
and width, so polygons come back in frame pixels. Output `detections` (N, 1): one JSON list per
frame of {"polygon": [[x, y], ...], "score": s} (dbrt's detections.jsonl records).
"""
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

DECIMALS = 6


def _parameter(config, key):
    return config.get("parameters", {}).get(key, {}).get("string_value", "")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        path = os.path.join(folder, _parameter(config, "dbrt_path") or "dbrt")
        if path not in sys.path:
            sys.path.append(path)
        from dbnet.model_check import probability_map
        from dbnet.spec import ModelSpec
        from pipeline.postprocess import DBPostprocessor
        from pipeline.preprocess import make_letterbox

        self.spec = ModelSpec.from_json(_parameter(config, "dbrt"))
        self.post = DBPostprocessor(self.spec.post, device="cpu")
        self.probability_map, self.make_letterbox = probability_map, make_letterbox
        self.prob_name = config["input"][0]["name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._detect(request))
            except Exception as exc:  # a bad request fails alone, the server goes on
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses

    def _detect(self, request):
        raw = pb_utils.get_input_tensor_by_name(request, self.prob_name).as_numpy()
        sizes = pb_utils.get_input_tensor_by_name(request, "frame_size").as_numpy()
        height, width = raw.shape[-2:]
        prob = self.probability_map(raw, self.spec, (height, width))
        boxes = [self.make_letterbox(int(h), int(w), height, width, self.spec.resize.keep_aspect)
                 for h, w in sizes.reshape(-1, 2)]
        found = self.post(prob, boxes)
        text = [[json.dumps(d.to_records(DECIMALS), separators=(",", ":"))] for d in found]
        return pb_utils.InferenceResponse([pb_utils.Tensor("detections", np.array(text, dtype=object))])
