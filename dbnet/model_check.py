"""Checks that a model and its ModelSpec describe a DB-family detector.

A foreign model (PP-OCR, MMOCR) run with the wrong preset rarely crashes: it produces a map of
the wrong layout or range and, after thresholding, silent garbage. These checks turn the
catchable cases into one clear ModelError / ShapeError:

- `check_spec_source(metadata, preset_name, inputs, outputs)` once after loading: a model
  without dbrt metadata that is recognisably PP-OCR needs `--preset`;
- `check_io(inputs, outputs, spec)` once after loading: one (N, 3, H, W) image input, fixed
  sizes that fit the stride, a one-channel output that exists;
- `probability_map(raw, spec, input_hw)` on an output batch: (N, 1, H, W) or (N, H, W) at the
  input resolution, values in [0, 1] when the spec says it is a probability (else a sigmoid is
  applied); returns the (N, H, W) map the post-processing takes. NumPy or CuPy.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from engine.errors import ModelError, ShapeError
from engine.lazy import array_module
from .spec import PRESETS, ModelSpec

# Paddle2ONNX names a PP-OCR det graph's image input "x"; its output names vary by version.
_PADDLE_INPUT = "x"
# Probabilities may overshoot [0, 1] by float rounding (fp16 engines); logits go far beyond.
_RANGE_TOLERANCE = 1e-3


def suggest_preset(inputs: Sequence, outputs: Sequence) -> Optional[str]:
    """A preset name guessed from tensor names, for error hints only (never applied silently)."""
    names = [t.name for t in inputs] + [t.name for t in outputs]
    paddle_names = any("fetch_name" in n or ".tmp_" in n for n in names)
    image_input = bool(inputs) and len(getattr(inputs[0], "shape", ()) or ()) == 4
    if image_input and (inputs[0].name == _PADDLE_INPUT or paddle_names):
        return "ppocr"
    return None


def looks_like_recognizer(inputs: Sequence, outputs: Sequence) -> bool:
    """A CRNN-style recognizer (PP-OCR rec): one image input of fixed height 32 or 48 and
    free width, one (N, T, classes) output."""
    if len(inputs) != 1 or len(outputs) != 1:
        return False
    shape_in, shape_out = tuple(inputs[0].shape or ()), tuple(outputs[0].shape or ())
    return (len(shape_in) == 4 and shape_in[2] in (32, 48) and not isinstance(shape_in[3], int)
            and len(shape_out) == 3)


def check_spec_source(metadata: dict, preset_name: Optional[str], inputs: Sequence,
                      outputs: Sequence) -> None:
    """Refuse to run a recognisably foreign model on the DB defaults it was not trained with.

    A model without dbrt metadata and without a preset silently gets the DB normalisation;
    for a PP-OCR graph that loses accuracy without any error, so ask for the preset instead.
    """
    if looks_like_recognizer(inputs, outputs):
        raise ModelError("the model looks like a text recognizer (input Nx3x48xW, output NxTxC), "
                         "not a detector: give it as --rec-model with --read (in Python: "
                         "Detector(read=path)), and a detector as --model")
    if preset_name or ModelSpec.from_metadata(metadata or {}) is not None:
        return
    guess = suggest_preset(inputs, outputs)
    if guess:
        raise ModelError(f"the model has no dbrt metadata and looks like a "
                         f"{PRESETS[guess].arch} model: pass --preset {guess} (or --preset db "
                         f"to run it with the DB defaults anyway)")


def _hint(inputs, outputs, spec: ModelSpec) -> str:
    guess = suggest_preset(inputs, outputs)
    if guess and PRESETS[guess].arch != spec.arch:
        return f"; it looks like a {PRESETS[guess].arch} model: try --preset {guess}"
    return ""


def _fixed(dim) -> Optional[int]:
    return dim if isinstance(dim, int) and dim > 0 else None


def check_io(inputs: Sequence, outputs: Sequence, spec: ModelSpec) -> str:
    """Validate a runner's TensorInfo lists against `spec`; returns the output name to read."""
    hint = _hint(inputs, outputs, spec)
    if len(inputs) != 1:
        raise ModelError(f"a DB-family detector has one image input, this model has "
                         f"{len(inputs)}: {[t.name for t in inputs]}")
    image = inputs[0]
    if len(image.shape) != 4 or _fixed(image.shape[1]) not in (3, None):
        raise ModelError(f"input {image.name!r} has shape {image.shape}; a DB-family detector "
                         f"takes (N, 3, H, W) images{hint}")
    for dim in image.shape[2:]:
        size = _fixed(dim)
        if size is not None and size % spec.resize.stride:
            raise ModelError(f"input {image.name!r} has fixed size {image.shape[2:]}, not a "
                             f"multiple of the stride {spec.resize.stride}{hint}")
    output = _pick_output(outputs, spec)
    _check_output_layout(output, hint)
    return output.name


def _pick_output(outputs: Sequence, spec: ModelSpec):
    if not outputs:
        raise ModelError("the model has no outputs")
    if spec.output is None:
        return outputs[0]
    for t in outputs:
        if t.name == spec.output:
            return t
    raise ModelError(f"the model has no output {spec.output!r}; its outputs are "
                     f"{[t.name for t in outputs]}")


def _check_output_layout(output, hint: str) -> None:
    rank = len(output.shape)
    channels = _fixed(output.shape[1]) if rank == 4 else 1
    if rank not in (3, 4) or channels not in (1, None):
        raise ModelError(f"output {output.name!r} has shape {output.shape}; a DB-family "
                         f"detector outputs a (N, 1, H, W) or (N, H, W) probability map "
                         f"(a training-mode head also returns threshold maps: export it in "
                         f"eval mode){hint}")


def probability_map(raw, spec: ModelSpec, input_hw: Tuple[int, int], check_range: bool = True):
    """Validated (N, H, W) probability map from a raw output batch.

    `check_range` reads the min / max back from the device; callers on a GPU hot path check
    the first batch only.
    """
    xp = array_module(raw)
    maps = _squeeze_channel(raw)
    if tuple(maps.shape[1:]) != tuple(input_hw):
        raise ShapeError(_resolution_message(maps.shape[1:], input_hw))
    if not spec.output_is_prob:
        return 1.0 / (1.0 + xp.exp(-maps.astype(xp.float32)))
    if check_range and maps.size:
        low, high = float(maps.min()), float(maps.max())
        if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
            raise ModelError(f"the model output spans [{low:.3g}, {high:.3g}], outside [0, 1]: "
                             f"it returns logits, not probabilities: pick the preset that matches "
                             f"the model or set output_is_prob=False")
    return maps


def _squeeze_channel(raw):
    shape = tuple(raw.shape)
    if len(shape) == 4 and shape[1] == 1:
        return raw[:, 0]
    if len(shape) == 3:
        return raw
    raise ShapeError(f"the model output has shape {shape}; expected (N, 1, H, W) or (N, H, W) "
                     f"(a multi-channel output is not a DB probability map)")


def _resolution_message(map_hw, input_hw) -> str:
    ratio = input_hw[0] / map_hw[0] if map_hw[0] else 0
    base = (f"the model output map is {map_hw[0]}x{map_hw[1]} for a {input_hw[0]}x{input_hw[1]} "
            f"input; dbrt expects a DB head that upsamples to the input resolution")
    if ratio and abs(ratio - round(ratio)) < 1e-6 and ratio > 1:
        base += f" (this one stops at 1/{int(round(ratio))} resolution)"
    return base
