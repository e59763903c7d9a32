"""Small models and images the quantization tests share: a random-init DBNet exported to ONNX,
a one-Conv 'detector' that boxes dark text without training, and calibration inputs; a test
module imports the fixtures it uses (each module builds its own)."""
from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dbnet.spec import METADATA_KEY, ModelSpec
from export.onnx_graph import set_metadata
from export.synth import synthetic_images
from pipeline.preprocess import preprocess
from pipeline.sampling import calibration_inputs

SPEC = ModelSpec(arch="test").replace(limit_side=64)


def tiny_dbnet_onnx(path):
    """A random-init quarter-width ResNet-18 DBNet at 64x64 (needs torch)."""
    import torch

    from export.model import DBNet
    from export.onnx_export import export_onnx

    torch.set_num_threads(1)
    torch.manual_seed(0)
    export_onnx(DBNet("resnet18", width=0.25).eval(), path, opset=17, spec=SPEC,
                example_shape=(1, 3, 64, 64), parity_shapes=None)
    return path


def synthetic_image_folder(folder, count=4):
    for i, image in enumerate(synthetic_images(count, 96, 128, first_seed=0)):
        cv2.imwrite(str(folder / f"img{i}.png"), image)
    return folder


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    pytest.importorskip("torch")
    return tiny_dbnet_onnx(tmp_path_factory.mktemp("q") / "m.onnx")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return synthetic_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def calibration(image_dir):
    return calibration_inputs(image_dir, SPEC, count=3)


def dark_text_model(path, bias=12.0):
    """A one-Conv 'detector' (probability = sigmoid(bias - k * grey)): real boxes on scene text
    without training, so box agreement is measured on something non-empty."""
    w = np.full((1, 3, 3, 3), -60.0 / 27, np.float32)  # inputs are DB-normalised (about +-0.5)
    nodes = [helper.make_node("Conv", ["images", "w", "b"], ["logit"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Sigmoid", ["logit"], ["prob"], name="sigmoid")]
    graph = helper.make_graph(
        nodes, "dark", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(np.array([bias - 12.0], np.float32), "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    set_metadata(proto, METADATA_KEY, SPEC.replace(limit_side=256, box_thresh=0.5).to_json())
    onnx.save(proto, str(path))
    return path


def dark_text_calibration():
    """Two preprocessed synthetic frames at the dark-text model's size (256)."""
    spec = SPEC.replace(limit_side=256)
    return [preprocess(image, spec)[0][None] for image in synthetic_images(2, 192, 256, 70)]


def initializers(proto) -> dict:
    """The model's constants by name, as arrays."""
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
