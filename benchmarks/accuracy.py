"""Accuracy beside the speed numbers: the ICDAR 2015 protocol (pipeline.evaluate) on a dataset,
by default ../shared/data/realdev (13 real photographs: 10 ICDAR 2015, 3 Total-Text).

realdev is a development set, not a benchmark: the table says how the shipped model does on real
photographs the project looked at, not a number to compare with published ICDAR 2015 results.

    python -m benchmarks.accuracy [--model M.onnx] [--dataset DIR_OR_JSON] [--box-type poly]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import common

REALDEV = common.SHARED_DATA / "realdev"
SHIPPED = common.REPO / "pipeline" / "assets" / "dbnet_default.onnx"
COLUMNS = ("image", "precision", "recall", "hmean", "gt_care", "det_care", "matched")


def evaluate(model: Path, dataset: Path, box_type: str = "quad", threads: int = 0) -> dict:
    from pipeline.datasets import open_dataset
    from engine.loader import RunnerOptions
    from pipeline.detector import Detector
    from pipeline.evaluate import evaluate_detector

    data = open_dataset(dataset)
    times = []
    with Detector(model, lambda spec: spec.replace(box_type=box_type), backend="onnxruntime",
                  device="cpu", options=RunnerOptions(threads=threads)) as det:
        def detect(image):
            start = time.perf_counter()
            out = det.detect(image)
            times.append(time.perf_counter() - start)
            return out
        result = evaluate_detector(detect, data)
        described = det.describe()
    return {"dataset": dataset.name, "format": data.format, "box_type": box_type,
            "model": {"file": model.name, "sha256": common.file_sha256(model), "untrained": described["untrained"]},
            "detector": described, "detect_ms": common.Stats.from_seconds(times).to_dict(),
            **result.to_dict()}


def write(payload: dict, out_dir: Path, name: str) -> Path:
    info = common.machine_info()
    common.write_json(out_dir / f"{name}.json", {**payload, "machine": info})
    overall = [{k: payload[k] for k in ("precision", "recall", "hmean", "gt_care", "det_care", "matched")}]
    per_image = [{k: im[k] for k in COLUMNS} for im in payload["per_image"]]
    sections = [
        ("Protocol", "ICDAR 2015 as MhLiao/DB applies it to polygons: one-to-one greedy matching at "
         "IoU > 0.5; detections more than half inside a '###' region ignored.\n"),
        ("Model", f"`{payload['model']['file']}` sha256 `{payload['model']['sha256']}`"
         + (" (**untrained**)" if payload["model"]["untrained"] else "") + f"; box type {payload['box_type']}; "
         f"detect() median {payload['detect_ms']['median_ms']:.1f} ms per image (CPU, incl. pre/post).\n"),
        ("Overall", common.markdown_table(overall)),
        ("Per image", common.markdown_table(per_image, COLUMNS)),
    ]
    return common.write_markdown(out_dir / f"{name}.md", f"Accuracy on {payload['dataset']}", sections, info)


def main(argv=None) -> int:
    p = common.argument_parser("benchmarks.accuracy", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="ONNX model (default: the shipped one)")
    p.add_argument("--dataset", type=Path, default=REALDEV)
    p.add_argument("--box-type", default="quad", choices=("quad", "poly"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--name", help="result file name (default: accuracy_<dataset>)")
    a = p.parse_args(argv)
    if a.model is not None and not a.model.is_file():  # named by the user: a mistake
        p.error(f"--model {a.model}: no such file")
    model = a.model or SHIPPED
    if not model.is_file():
        print(f"accuracy: no model at {model} (nothing shipped yet?): skipped")
        return common.SKIPPED
    if not a.dataset.exists():
        if a.dataset != REALDEV:  # named by the user: a mistake, not a machine without the data
            p.error(f"--dataset {a.dataset}: not found")
        print(f"accuracy: dataset not found at {a.dataset}: skipped")
        return common.SKIPPED
    payload = evaluate(model, a.dataset, a.box_type, a.threads)
    md = write(payload, common.results_dir(), a.name or f"accuracy_{a.dataset.name}")
    print(f"{payload['dataset']}: precision {payload['precision']:.4f} recall {payload['recall']:.4f} "
          f"hmean {payload['hmean']:.4f}; wrote {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
