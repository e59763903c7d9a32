"""Turn a training checkpoint into the shipped default: fp16 weights + a compact ONNX + a record.

    python -m export.train.ship runs/x/best.pt --out my_model/     # my_model/dbnet.{pt,onnx,json}
    python -m export.train.ship runs/x/best.pt --replace-shipped   # the files below (maintainers)

- `export/assets/dbnet_default.pt`: the EMA state dict in fp16 (about 6 MB for R18 width 0.5);
  `export.checkpoint.load_checkpoint` reads it (values are cast to the model's fp32).
- `pipeline/assets/dbnet_default.onnx`: exported from those fp16 weights (BN folded), then every
  large float initializer stored as fp16 followed by a Cast to float, so the file is half the
  size but the graph still computes in fp32 (ONNX Runtime folds the casts at load time).
- `export/assets/dbnet_default.json`: how it was made (training config, steps, sizes, parity),
  the validation its run measured for the checkpoint ("validation": best.pt's, else its step's
  line in the run's val.jsonl; the split by its folder's name), and the files by paths that hold
  on another machine (an --out model's relative to its folder). The ONNX carries the validation
  too (metadata `dbrt_validation`), which `dbrt info` shows.

The weights and the ONNX are written beside their targets (NAME-partial) and renamed in, then
the record written whole, only once the fp16 check passes: a rejected model, or a run killed midway, leaves the earlier files whole; an --out
folder made here is removed again when nothing could be written into it.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from dbnet.files import folder_removed_if_left_empty, write_text_whole
from engine.errors import DbrtError, ModelError
from dbnet.spec import LIMIT_TYPES, VALIDATION_METADATA_KEY, ModelSpec

from ..checkpoint import logged_validation
from ..quantize import CALIB_METHODS

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "export" / "assets" / "dbnet_default.pt"
RECORD = REPO / "export" / "assets" / "dbnet_default.json"
ONNX = REPO / "pipeline" / "assets" / "dbnet_default.onnx"
MIN_FP16_ELEMENTS = 16  # tiny tensors (scalars, shapes) stay fp32: no gain, more casts


def fits_fp16(values: np.ndarray) -> bool:
    """True when fp16 keeps every value (no overflow, < 1% error on the significant ones).

    BatchNorm running variances of the DB head reach 1e5: those stay fp32."""
    values = np.asarray(values, np.float32)
    with np.errstate(over="ignore"):
        half = values.astype(np.float16).astype(np.float32)
    if not np.isfinite(half).all():
        return False
    scale = float(np.abs(values).max()) if values.size else 0.0
    return bool(np.allclose(half, values, rtol=1e-2, atol=1e-4 * scale))


def store_initializers_fp16(proto) -> int:
    """Replace float32 initializers by fp16 ones + Cast(to=FLOAT) nodes; returns how many."""
    from onnx import TensorProto, helper, numpy_helper

    used_as_graph_input = {i.name for i in proto.graph.input}
    casts, kept, count = [], [], 0
    for init in proto.graph.initializer:
        if (init.data_type != TensorProto.FLOAT or init.name in used_as_graph_input
                or int(np.prod(init.dims)) < MIN_FP16_ELEMENTS
                or not fits_fp16(numpy_helper.to_array(init))):
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16),
                                       init.name + "_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "_cast"))
        count += 1
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    nodes = casts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return count


def write_fp16_onnx(model, onnx_path, spec: Optional[ModelSpec] = None, metadata: Optional[dict] = None):
    """Export `model` to `onnx_path` as the shipped file is stored (fp16 initializers behind
    Cast nodes), with `metadata` ({key: text}) beside the spec; returns (the export report, how
    many initializers became fp16)."""
    import onnx

    from ..onnx_export import export_onnx
    from ..onnx_graph import set_metadata

    tmp = Path(onnx_path).with_suffix(".fp32.onnx")
    report = export_onnx(model, tmp, opset=17, spec=spec)
    proto = onnx.load(str(tmp))
    converted = store_initializers_fp16(proto)
    for key, value in (metadata or {}).items():
        set_metadata(proto, key, value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(onnx_path))
    tmp.unlink()
    return report, converted


def fp16_state(model) -> dict:
    """The state dict in fp16, except tensors fp16 cannot hold (kept fp32)."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach()
        out[k] = v.half() if v.is_floating_point() and fits_fp16(v.float().numpy()) else v
    return out


def recorded_path(path, record) -> str:
    """How the record names a file it describes, never by the machine's folders: the shipped
    assets by their place in the repository, any other file relative to the record's folder
    (an --out model's by their names: the folder may be moved or handed on whole)."""
    path = Path(path).resolve()
    if path in (WEIGHTS, ONNX):
        return str(path.relative_to(REPO))
    return os.path.relpath(path, Path(record).resolve().parent)


def portable_config(cfg: dict) -> dict:
    """The training config with the machine's folders cut off (they ship with the model):
    a data source keeps its last two path parts (`real/ic15_tr=0.5`), other paths their name
    (relative ones too: `--out runs/x` is stored as given)."""
    def short(value, parts: int):
        if not isinstance(value, str) or len(Path(value.split("=")[0]).parts) < 2:
            return value
        return "/".join(Path(value).parts[-parts:])

    out = {k: short(v, 1) for k, v in cfg.items()}
    if "data" in cfg:
        data = cfg["data"]
        out["data"] = short(data, 2) if isinstance(data, str) else [short(d, 2) for d in data]
    return out


def portable_metrics(value):
    """--metrics as the record keeps them: every absolute path in them (`dbrt eval --json`'s
    dataset and model) cut to its name, the machine's folders left out; the rest as given."""
    if isinstance(value, dict):
        return {k: portable_metrics(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_metrics(v) for v in value]
    return Path(value).name if isinstance(value, str) and os.path.isabs(value) else value


VALIDATION_KEYS = ("step", "hmean", "precision", "recall", "thresh", "box_thresh", "unclip_ratio",
                   "untuned_hmean", "images")


def run_validation(checkpoint, ck: dict, before: dict) -> dict:
    """The validation of the checkpoint shipped, as its training run measured it: best.pt's
    own, else its step's line in the run's val.jsonl beside it (last.pt, a snapshot), else what
    the record of a model shipped before says; {} when it was not validated. Its split is
    named as the training config is (`on.val`: the folder's name)."""
    found = ck.get("validation") if isinstance(ck.get("validation"), dict) else None
    if found is None and "step" in ck:
        found = logged_validation(checkpoint, ck["step"])
    if found is None:
        return before.get("validation") if isinstance(before.get("validation"), dict) else {}
    kept = {k: found[k] for k in VALIDATION_KEYS if k in found}
    on = found.get("on")  # older val.jsonl lines: the run's own --val
    on = on if isinstance(on, dict) else {"val": (ck.get("config") or {}).get("val")}
    return dict(kept, on=portable_config(on))


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _scene_batch(shape) -> np.ndarray:
    """Normalised synthetic scenes: realistic inputs (random noise hides head overflow)."""
    from ..synth.scene import make_scene
    from .data import normalise

    n, _, h, w = shape
    return np.stack([normalise(make_scene(7 + i, h, w).image) for i in range(n)])


def _ort_parity(model, onnx_path: Path, shapes=((1, 3, 256, 320), (2, 3, 160, 224))) -> float:
    """Max abs difference of the ONNX output from `model` on synthetic scenes."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for shape in shapes:
        x = _scene_batch(shape).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def ship(checkpoint, spec_changes: Optional[dict] = None, weights: Path = WEIGHTS,
         onnx_path: Path = ONNX, record: Path = RECORD, metrics: Optional[dict] = None,
         int8_calibration: Optional[dict] = None) -> dict:
    """Write the fp16 weights, the ONNX and the record; returns the record. `int8_calibration`
    ({"method": M, ...}, chosen on validation) is what `dbrt export` calibrates this model with."""
    import torch

    from ..model import DBNet
    from .weights import load_weights, network_of, read_checkpoint

    from ..checkpoint import sidecar_calib_method, sidecar_record

    ck = read_checkpoint(checkpoint)
    # a shipped model shipped again (weights only) keeps what its record says of it
    before = sidecar_record(checkpoint)
    cfg = ck.get("config") or before.get("train_config") or {}
    step = ck.get("step", before.get("checkpoint_step", 0))
    if int8_calibration is None and sidecar_calib_method(checkpoint):
        int8_calibration = before["int8_calibration"]
    # weights without a run's config (averaged, or saved by other code) say their network by
    # their shapes
    network = network_of(ck, checkpoint, cfg)
    model = DBNet(network["arch"], width=network["width"]).eval()
    load_weights(model, checkpoint)
    spec = ModelSpec(arch=model.arch_name).replace(**(spec_changes or {}))  # checked before writing
    reference = copy.deepcopy(model)  # the checkpoint in fp32, to bound the fp16 loss
    Path(weights).parent.mkdir(parents=True, exist_ok=True)
    # written beside the targets and renamed over them only once all three pass the checks: a
    # rejected model, or a run killed midway, never replaces (part of) the model there
    new_weights, new_onnx = _partial(weights), _partial(onnx_path)
    try:
        state = fp16_state(model)
        torch.save(state, str(new_weights))
        load_weights(model, new_weights)  # the ONNX is made from exactly the shipped (fp16) values
        validation = run_validation(checkpoint, ck, before)
        shown = {VALIDATION_METADATA_KEY: json.dumps(validation)} if validation else None
        report, converted = write_fp16_onnx(model, new_onnx, spec, metadata=shown)
        max_abs = _ort_parity(model, new_onnx)
        vs_checkpoint = _ort_parity(reference, new_onnx)
        if vs_checkpoint > 0.05:
            raise ModelError(f"shipped ONNX differs from the fp32 checkpoint by {vs_checkpoint:.3f} "
                             "(probability units): fp16 storage lost too much")
        rec = {"checkpoint_step": int(step), "train_config": portable_config(cfg),
               "spec": json.loads(spec.to_json()),
               "weights": {"path": recorded_path(weights, record), "dtype": "float16",
                           "fp32_tensors": sorted(k for k, v in state.items() if v.dtype == torch.float32),
                           "bytes": new_weights.stat().st_size, "sha256": _sha256(new_weights)},
               "onnx": {"path": recorded_path(onnx_path, record), "opset": report.opset,
                        "fp16_initializers": converted, "bytes": new_onnx.stat().st_size,
                        "sha256": _sha256(new_onnx), "ort_vs_torch_max_abs": max_abs,
                        "ort_vs_fp32_checkpoint_max_abs": vs_checkpoint},
               "metrics": portable_metrics(metrics or {})}
        if validation:
            rec["validation"] = validation
        if int8_calibration:
            rec["int8_calibration"] = int8_calibration
        os.replace(new_weights, weights)
        os.replace(new_onnx, onnx_path)
        write_text_whole(record, json.dumps(rec, indent=2) + "\n")
    finally:
        new_weights.unlink(missing_ok=True)
        new_onnx.unlink(missing_ok=True)
    return rec


def _partial(path) -> Path:
    """Where `path` is written before it is renamed into place."""
    path = Path(path)
    return path.with_name(path.name + "-partial")  # the same stem: torch.save names its archive by it


POST_DEFAULTS = {"thresh": 0.3, "box_thresh": 0.6, "unclip_ratio": 1.5}


def post_settings(checkpoint, args) -> dict:
    """thresh / box_thresh / unclip_ratio to ship: each as given, else as the checkpoint ships
    them (its own record, e.g. a shipped model shipped again; else its validation's, in
    best.pt or, for last.pt or a snapshot, its step's line of val.jsonl; else its run's recorded
    at the start, its --init's: export.checkpoint.shipping_post), else the DB defaults."""
    from ..checkpoint import shipping_post

    trained = shipping_post(checkpoint)
    given = {k: getattr(args, k) for k in POST_DEFAULTS}
    return {k: float(given[k] if given[k] is not None else trained.get(k, default))
            for k, default in POST_DEFAULTS.items()}


def resize_settings(checkpoint, args) -> dict:
    """limit_side / limit_type to ship: each as given, else as the checkpoint's own record ships
    them (a shipped model shipped again, e.g. with other thresholds), else ModelSpec's (736,
    "min": the input rule `dbrt train --val` scores at)."""
    from ..checkpoint import sidecar_spec

    resize = (sidecar_spec(checkpoint) or ModelSpec()).resize
    return {k: getattr(args, k) if getattr(args, k) is not None else getattr(resize, k)
            for k in ("limit_side", "limit_type")}


def _targets(args, made: contextlib.ExitStack) -> dict:
    """Where the files go: a folder the user names, or (explicitly) the shipped assets; a
    folder made here is removed again when the shipping fails before writing into it."""
    if args.replace_shipped:
        return dict(weights=WEIGHTS, onnx_path=ONNX, record=RECORD)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} is a file, not a folder")
    try:
        made.enter_context(folder_removed_if_left_empty(out))
    except OSError as exc:  # a read-only place, a file on the way
        raise SystemExit(f"error: --out {out}: cannot create the folder ({exc.strerror})") from None
    return dict(weights=out / "dbnet.pt", onnx_path=out / "dbnet.onnx", record=out / "dbnet.json")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="folder for dbnet.pt, dbnet.onnx and dbnet.json")
    where.add_argument("--replace-shipped", action="store_true",
                       help="overwrite the model shipped in this repository (export/assets, pipeline/assets)")
    p.add_argument("--limit-side", type=int,
                   help="default: the checkpoint's own record's (NAME.json), else 736")
    p.add_argument("--limit-type", choices=LIMIT_TYPES, help="likewise, else min")
    p.add_argument("--thresh", type=float,
                   help="default: the checkpoint's own record's (NAME.json), else what its "
                        "validation chose (dbrt train --val / --val-tune), else those its run "
                        "recorded when it started (its --init model's), else 0.3")
    p.add_argument("--box-thresh", type=float, help="likewise, else 0.6")
    p.add_argument("--unclip-ratio", type=float, help="likewise, else 1.5")
    p.add_argument("--metrics", help="JSON file of evaluation results to put in the record (e.g. "
                                      "`dbrt eval --json`'s; absolute paths in it are cut to their names)")
    p.add_argument("--int8-calib-method", choices=CALIB_METHODS,
                   help="the INT8 calibration method chosen for this model on validation "
                        "(python -m benchmarks.int8_calibration); `dbrt export` then uses it")
    args = p.parse_args(argv)
    if Path(args.checkpoint).is_dir():  # a run's folder: which of its checkpoints is for the user
        found = ", ".join(sorted(p.name for p in Path(args.checkpoint).glob("*.pt"))) or "none"
        raise SystemExit(f"error: {args.checkpoint} is a folder: pass one of its checkpoints "
                         f"(best.pt: the best validation; last.pt: the last step; here: {found})")
    if not Path(args.checkpoint).is_file():
        raise SystemExit(f"error: checkpoint not found: {args.checkpoint}")
    try:
        metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: --metrics {args.metrics}: {getattr(exc, 'strerror', None) or exc}")
    with contextlib.ExitStack() as made:  # the --out folder, if made, is left only with files
        try:
            settings = post_settings(args.checkpoint, args)
            rec = ship(args.checkpoint, dict(**resize_settings(args.checkpoint, args), **settings),
                       metrics=metrics, **_targets(args, made),
                       int8_calibration={"method": args.int8_calib_method} if args.int8_calib_method else None)
        except DbrtError as exc:  # e.g. a threshold out of range: before any file is written
            raise SystemExit(f"error: {exc}") from None
        except OSError as exc:  # a target that cannot be written (read-only, a full disk)
            raise SystemExit(f"error: {exc.filename or 'writing the model'}: {exc.strerror or exc}") from None
    print("post-processing: " + " ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in settings.items()))
    print(json.dumps({k: rec[k] for k in ("checkpoint_step", "validation", "weights", "onnx") if k in rec},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
