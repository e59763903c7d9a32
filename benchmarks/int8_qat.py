"""Quantization-aware fine-tuning (QAT) for full INT8: does it bring the INT8 boxes closer to FP32
than post-training calibration? Chosen on a validation split, reported on realdev.

    python -m benchmarks.int8_qat --val data/real/ic15_val [--steps 150] [--checkpoint W.pt]

The full-INT8 Q/DQ ONNX that `dbrt export --precision int8` makes (percentile ranges, the default
calibration inputs of benchmarks.precision_accuracy) runs in PyTorch (`QdqGraph`: each
QuantizeLinear / DequantizeLinear pair is fake quantization with its calibrated scale, rounding
passed straight through; weight scales follow the weights as the quantizer computes them); its
FP32 weights and biases are fine-tuned until its probability map matches the FP32 model's on
those calibration inputs (self-distillation, no labels; random 384 px crops, mirrored half the
time, 4 a step, Adam) and written back with the activation scales as calibrated. Each variant's
INT8 boxes are then compared with the FP32 model's (ICDAR 2015 protocol, IoU > 0.5, ONNX Runtime
CPU), as benchmarks.precision_accuracy does. Also measured: how closely the PyTorch graph follows
ONNX Runtime's (against the same graph run as float ops, and against ORT's integer kernels).
Writes benchmarks/results/<machine>/int8_qat.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from pipeline.accuracy import INTEGER_KERNELS
from pipeline.commands._validate import at_least

from . import common
from .int8_calibration import _eval_sets
from .precision_accuracy import _calibration, _model, add_model_arguments

EPS = 1e-6
# (name, Adam learning rate, train the biases only)
VARIANTS = (("qat-all-1e-5", 1e-5, False), ("qat-all-3e-5", 3e-5, False),
            ("qat-all-2e-6", 2e-6, False), ("qat-biases-1e-4", 1e-4, True))


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads(attrs: dict):
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if pads[:len(pads) // 2] != pads[len(pads) // 2:]:
        raise ValueError(f"asymmetric pads {pads}")
    return tuple(pads[:len(pads) // 2])


def _fake_quant(x, scale, zero, qmin: int, qmax: int, axis: Optional[int] = None):
    """(clamp(round(x / scale) + zero) - zero) * scale, the rounding passed straight through."""
    import torch

    if axis is not None and scale.dim() == 1:
        shape = [1] * x.dim()
        shape[axis] = -1
        scale, zero = scale.view(shape), zero.view(shape)
    scaled = x / scale
    rounded = scaled + (torch.round(scaled) - scaled).detach()
    return (torch.clamp(rounded + zero, qmin, qmax) - zero) * scale


def qdq_graph(proto):
    """A torch module running a dbrt FP32 or Q/DQ ONNX graph (the ops dbrt's export uses)."""
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper
    from torch import nn

    class QdqGraph(nn.Module):
        def __init__(self):
            super().__init__()
            graph = proto.graph
            self.nodes = [n for n in graph.node if n.op_type != "Constant"]
            self.io = graph.input[0].name, graph.output[0].name
            values = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
            for n in graph.node:
                if n.op_type == "Constant":
                    values[n.output[0]] = torch.from_numpy(numpy_helper.to_array(_attrs(n)["value"]).copy())
            names = []
            for n in self.nodes:  # quantized weights and conv biases are trained, the rest is fixed
                if n.op_type == "QuantizeLinear" and n.input[0] in values and values[n.input[0]].dim() > 1:
                    names.append(n.input[0])
                if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 2 and n.input[2] in values:
                    names.append(n.input[2])
            self.index = {name: i for i, name in enumerate(dict.fromkeys(names))}
            self.params = nn.ParameterList([nn.Parameter(values.pop(n).float()) for n in self.index])
            self.constants = values
            self.ratio = {}  # weight scale / largest magnitude per channel, as calibrated
            for n in self.nodes:
                if n.op_type == "QuantizeLinear" and n.input[0] in self.index:
                    amax = self.amax(self.value({}, n.input[0]).detach(), _attrs(n).get("axis", 1))
                    self.ratio[n.output[0]] = values[n.input[1]].float() / amax.clamp_min(1e-12)

        @staticmethod
        def amax(w, axis):
            return w.abs().amax(dim=[d for d in range(w.dim()) if d != axis])

        def value(self, env, name):
            if name in env:
                return env[name]
            return self.params[self.index[name]] if name in self.index else self.constants[name]

        def forward(self, x):
            env = {self.io[0]: x}
            for n in self.nodes:
                env[n.output[0]] = self.run(n, [self.value(env, i) if i else None for i in n.input])
            return env[self.io[1]]

        def run(self, n, args):
            op, a = n.op_type, _attrs(n)
            bias = args[2] if len(args) > 2 else None
            if op == "QuantizeLinear":
                return self.quantize(n, args, a)
            if op == "Conv":
                return F.conv2d(args[0], args[1], bias, tuple(a.get("strides", (1, 1))), _pads(a),
                                tuple(a.get("dilations", (1, 1))), a.get("group", 1))
            if op == "ConvTranspose":
                return F.conv_transpose2d(args[0], args[1], bias, tuple(a.get("strides", (1, 1))), _pads(a),
                                          tuple(a.get("output_padding", (0, 0))), a.get("group", 1))
            if op == "MaxPool":
                return F.max_pool2d(args[0], tuple(a["kernel_shape"]), tuple(a.get("strides", (1, 1))),
                                    _pads(a), ceil_mode=bool(a.get("ceil_mode", 0)))
            if op == "Resize":
                return F.interpolate(args[0], scale_factor=tuple(float(s) for s in args[2][2:]), mode="nearest")
            if op == "Concat":
                return torch.cat(args, dim=a["axis"])
            simple = {"DequantizeLinear": lambda x, *_: x, "Relu": torch.relu, "Sigmoid": torch.sigmoid,
                      "Add": lambda x, y: x + y, "Cast": lambda x: x.float()}
            if op not in simple:
                raise ValueError(f"unsupported ONNX op {op}")
            return simple[op](*args)

        def quantize(self, n, args, a):
            x, scale = args[0], args[1]
            zero = args[2] if len(args) > 2 else torch.zeros((), dtype=torch.int8)
            qmin, qmax = (-128, 127) if zero.dtype == torch.int8 else (0, 255)
            axis = a.get("axis", 1)
            if n.output[0] in self.ratio:  # the weight's scale follows the weight
                scale = self.amax(x.detach(), axis) * self.ratio[n.output[0]]
                return _fake_quant(x, scale, zero.float().expand_as(scale), qmin, qmax, axis)
            return _fake_quant(x, scale.float(), zero.float(), qmin, qmax, axis if scale.dim() == 1 else None)

        def weight_scales(self) -> Dict[str, np.ndarray]:
            out = {}
            for n in self.nodes:
                if n.output[0] in self.ratio:
                    amax = self.amax(self.value({}, n.input[0]).detach(), _attrs(n).get("axis", 1))
                    out[n.input[1]] = (amax * self.ratio[n.output[0]]).numpy().astype(np.float32)
            return out

    return QdqGraph()


def _random_batch(rng, inputs, crop: int, batch: int):
    import torch

    windows = []
    for _ in range(batch):
        x = inputs[int(rng.integers(len(inputs)))][0]
        h, w = x.shape[1:]
        ch, cw = max(32, min(crop, h) // 32 * 32), max(32, min(crop, w) // 32 * 32)
        y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        window = x[:, y0:y0 + ch, x0:x0 + cw]
        windows.append(window[:, :, ::-1] if rng.random() < 0.5 else window)
    h, w = min(o.shape[1] for o in windows), min(o.shape[2] for o in windows)
    return torch.from_numpy(np.stack([o[:, :h, :w] for o in windows]).astype(np.float32))


def _entropy(p) -> float:
    p = p.clamp(EPS, 1 - EPS)
    return float(-(p * p.log() + (1 - p) * (1 - p).log()).mean())


def qat(fp32: Path, int8: Path, out: Path, inputs, steps: int, lr: float, biases_only: bool,
        crop: int = 384, batch: int = 4, seed: int = 0) -> dict:
    """Fine-tune the Q/DQ graph `int8` towards `fp32`'s maps on `inputs`; save it to `out`."""
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper

    teacher = qdq_graph(onnx.load(str(fp32))).eval().requires_grad_(False)
    proto = onnx.load(str(int8))
    student = qdq_graph(proto)
    params = [p for p in student.parameters() if p.dim() == 1 or not biases_only]
    opt = torch.optim.Adam(params, lr=lr)
    rng, losses = np.random.default_rng(seed), []
    for _ in range(steps):
        x = _random_batch(rng, inputs, crop, batch)
        with torch.no_grad():
            target = teacher(x)
        loss = F.binary_cross_entropy(student(x).clamp(EPS, 1 - EPS), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item() - _entropy(target))  # 0 when the maps agree
    trained = {name: student.params[i].detach().numpy() for name, i in student.index.items()}
    trained.update(student.weight_scales())
    for init in proto.graph.initializer:
        if init.name in trained:
            dtype = numpy_helper.to_array(init).dtype
            init.CopyFrom(numpy_helper.from_array(trained[init.name].astype(dtype), init.name))
    onnx.save_model(proto, str(out))
    tenth = max(1, steps // 10)
    return {"trained_parameters": sum(p.numel() for p in params),
            "loss_first_tenth": float(np.mean(losses[:tenth])), "loss_last_tenth": float(np.mean(losses[-tenth:]))}


def simulation_check(fp32: Path, int8: Path, inputs) -> dict:
    """Mean |difference| of probability maps on the calibration inputs: the PyTorch Q/DQ graph
    vs ONNX Runtime running the same graph as float ops and with its integer kernels, and those
    two against each other and against FP32."""
    import onnx
    import onnxruntime as ort
    import torch

    sim = qdq_graph(onnx.load(str(int8))).eval()
    plain = ort.SessionOptions()
    as_float = ort.SessionOptions()
    as_float.add_session_config_entry("session.disable_quant_qdq", "1")
    run = {key: ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
           for key, path, opts in (("fp32", fp32, plain), ("int8", int8, plain), ("qdq_float", int8, as_float))}
    diffs = {k: [] for k in ("torch_vs_qdq_float", "torch_vs_int8", "int8_vs_qdq_float", "int8_vs_fp32")}
    for x in inputs:
        maps = {k: s.run(None, {s.get_inputs()[0].name: x})[0] for k, s in run.items()}
        with torch.no_grad():
            maps["torch"] = sim(torch.from_numpy(x)).numpy()
        for key in diffs:
            a, b = key.split("_vs_")
            diffs[key].append(float(np.abs(maps[a] - maps[b]).mean()))
    return {k: float(np.mean(v)) for k, v in diffs.items()}


def run(args) -> dict:
    from export.onnx_export import export_onnx
    from export.quantize import to_int8
    from pipeline.accuracy import compare_many, int8_execution

    started = time.perf_counter()
    model, described, spec = _model(args)
    with tempfile.TemporaryDirectory(prefix="dbrt_qat_") as tmp:
        work = Path(tmp)
        export = export_onnx(model, work / "fp32.onnx", opset=17, spec=spec)
        side = args.side or export.spec.resize.limit_side
        calib, calib_text = _calibration(export.spec, args.count, side)
        ptq = to_int8(export.path, work / "ptq.onnx", calib)
        check = simulation_check(export.path, ptq, calib)
        print("simulation check", check, flush=True)
        models, training = {"ptq (percentile, no fine-tuning)": ptq}, {}
        for name, lr, biases in VARIANTS:
            t = time.perf_counter()
            training[name] = dict(qat(export.path, ptq, work / f"{name}.onnx", calib, args.steps, lr, biases,
                                      crop=args.crop),
                                  lr=lr, biases_only=biases, seconds=round(time.perf_counter() - t, 1))
            print(name, training[name], flush=True)
            models[name] = work / f"{name}.onnx"
        rows = []
        for set_name, images in _eval_sets(Path(args.val)).items():
            results = compare_many(export.path, list(models.values()), images, limit_side=side)
            for name, result in zip(models, results):
                print(f"{name:34s} {set_name:10s} {result}", flush=True)
                rows.append(dict(variant=name, images=set_name, n=result.images, mean_abs=result.mean_abs,
                                 fp32_boxes=result.reference_boxes, boxes=result.candidate_boxes,
                                 P=result.precision_score, R=result.recall, hmean=result.hmean,
                                 **training.get(name, {})))
    command = common.command_line("benchmarks.int8_qat", sys.argv[1:])
    return dict(command=command, int8_execution=int8_execution(), model=described, side=side,
                calibration=calib_text, steps=args.steps,
                crop=args.crop,
                simulation=check, rows=rows, seconds=round(time.perf_counter() - started, 1))


def _kernel_caveat(payload: dict) -> str:
    """Where the integer kernels saturate, their figures in the simulation line are theirs alone."""
    if payload.get("int8_execution", INTEGER_KERNELS) == INTEGER_KERNELS:
        return ""
    return (" (this CPU's integer kernels saturate: the figures against them measure that "
            "overflow, not INT8 arithmetic)")


def _markdown(payload: dict) -> list:
    sim = payload["simulation"]
    intro = (f"Model: {payload['model']}; inputs at short side {payload['side']}; calibration and "
             f"fine-tuning inputs: {payload['calibration']}; {payload['steps']} steps of 4 random "
             f"{payload['crop']} px crops. Box agreement: each INT8 model's boxes against the FP32 model's (ICDAR "
             "2015 protocol), ONNX Runtime CPU (INT8 ran as "
             f"{payload.get('int8_execution', INTEGER_KERNELS)}); the variant would be "
             "chosen on validation.\n\n"
             "How closely the PyTorch Q/DQ graph follows ONNX Runtime (mean |probability "
             f"difference| on the calibration inputs): against the same graph run as float ops "
             f"{sim['torch_vs_qdq_float']:.2e}, against ORT's integer kernels {sim['torch_vs_int8']:.2e}; "
             f"ORT's integer kernels against its float ops {sim['int8_vs_qdq_float']:.2e}, and against "
             f"FP32 {sim['int8_vs_fp32']:.2e}{_kernel_caveat(payload)}.\n\nCommand: `{payload['command']}`\n")
    keys = ("variant", "images", "n", "fp32_boxes", "boxes", "P", "R", "hmean", "mean_abs",
            "trained_parameters", "loss_first_tenth", "loss_last_tenth", "seconds")
    shown = [{k: (f"{r[k]:.4f}" if k in ("P", "R", "hmean") else f"{r[k]:.2e}" if k.startswith(("loss", "mean"))
                  else r[k]) if r.get(k) is not None else "" for k in keys} for r in payload["rows"]]
    return [("Setup", intro), ("INT8 vs FP32", common.markdown_table(shown))]


def main(argv: Optional[List[str]] = None) -> int:
    parser = common.argument_parser("benchmarks.int8_qat", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--val", required=True, help="validation images (an ICDAR 2015-format folder)")
    parser.add_argument("--steps", type=at_least(1), default=150)
    parser.add_argument("--count", type=at_least(1), default=32, help="calibration inputs")
    parser.add_argument("--side", type=at_least(32), help="short side of every input (default: the model's)")
    parser.add_argument("--crop", type=at_least(32), default=384, help="fine-tuning crop size")
    args = parser.parse_args(argv)
    if not Path(args.val).is_dir():  # checked before minutes of fine-tuning, as int8_calibration does
        parser.error(f"--val {args.val}: not a folder")
    import torch

    torch.set_num_threads(2)
    payload = run(args)
    common.write_report("int8_qat", "Quantization-aware fine-tuning for full INT8", payload, _markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
