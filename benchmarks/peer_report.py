"""The JSON + markdown report of benchmarks/peer_rapidocr.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List


def _agreement_row(name: str, a: dict) -> str:
    return (f"| {name} | {a['images']} | {a['theirs']} | {a['ours']} | {a['matched']} | "
            f"{a['precision']:.4f} | {a['recall']:.4f} | **{a['hmean']:.4f}** |")


def to_markdown(report: dict) -> str:
    real = report["realdev"]
    lines = [
        f"# dbrt vs RapidOCR {report['rapidocr']['version']}: {report['model']}",
        "",
        f"Machine `{report['machine']['machine']}` ({report['machine']['cpu']}, "
        f"{report['machine']['cpu_count']} cores), ONNX Runtime on the CPU for both, intra-op threads "
        f"{report['threads'] or 'ORT default'}. Same model file, RapidOCR's packaged Det "
        f"settings on both sides (dbrt: `--preset ppocr`).",
        "",
        "## Boxes agreement (ours matched against theirs, ICDAR 2015 IoU > 0.5)",
        "",
        "| input | frames | their boxes | our boxes | matched | precision | recall | hmean |",
        "|---|---|---|---|---|---|---|---|",
        _agreement_row("realdev", real["agreement"]),
    ]
    for v in report["videos"]:
        for name, agreed in v["agreement"].items():
            lines.append(_agreement_row(f"{v['video']}, first {v['frames']} frames, dbrt {name}",
                                        agreed))
        lines.append(_agreement_row(f"{v['video']}, every {v['sampled_every']}th frame",
                                    v["sampled_agreement"]))
    lines += [
        "",
        "## Accuracy on realdev (ICDAR 2015 protocol)",
        "",
        "| detector | precision | recall | hmean |",
        "|---|---|---|---|",
    ]
    for side in ("rapidocr", "dbrt"):
        acc = real["accuracy"][side]
        lines.append(f"| {side} | {acc['precision']:.4f} | {acc['recall']:.4f} | "
                     f"{acc['hmean']:.4f} |")
    lines += [
        "",
        "## Speed",
        "",
        "| input | RapidOCR | dbrt | dbrt / RapidOCR |",
        "|---|---|---|---|",
        f"| realdev, per image (median of repeats, mean over {real['images']} images) | "
        f"{real['latency_ms']['rapidocr']:.1f} ms | {real['latency_ms']['dbrt']:.1f} ms | "
        f"{real['speedup']:.2f}x |",
    ]
    for v in report["videos"]:
        for name, speedup in v["speedup"].items():
            lines.append(f"| {v['video']}, {v['frames']} frames, decode included, dbrt {name} "
                         f"(batch {v['batch'][name]}), median of {v['rounds']} alternating runs | "
                         f"{v['fps']['rapidocr']:.2f} fps | {v['fps'][name]:.2f} fps | "
                         f"**{speedup:.2f}x** |")
    lines += ["", "Every timed round (fps, in order; one untimed warm-up pass per side before them):", ""]
    for v in report["videos"]:
        rounds = "; ".join(f"{name} " + ", ".join(f"{v['frames'] / t:.2f}" for t in ts)
                           for name, ts in v["seconds"].items())
        lines.append(f"- {v['video']}: {rounds}")
        if "inference_alone_ms" in v:
            ceiling = 1000 / v["inference_alone_ms"]
            lines.append(f"  - the model call alone (one {report['threads'] or 'default'}-thread "
                         f"session, batch 1, same input size, fastest of 7): "
                         f"{v['inference_alone_ms']:.0f} ms = {ceiling:.2f} fps, i.e. "
                         f"{ceiling / v['fps']['rapidocr']:.2f}x RapidOCR: the bound for any "
                         f"pipeline on one such session; dbrt's batch-1 pipeline reaches "
                         f"{v['fps'][next(iter(v['speedup']))] / ceiling:.0%} of it")
    load = report.get("load_average", {})
    lines += [
        "",
        "RapidOCR: its `TextDetector` as packaged (one ORT session, ORT default threads, its own "
        "pre- and post-processing), frame after frame. dbrt `pipeline`: the threaded `Pipeline` "
        "(decode, preprocess, inference and DB post-processing overlap) on one ORT session; "
        "dbrt `pipeline, N sessions`: the same with batches of N frames split across N "
        "single-thread sessions (`engine.onnxruntime.parallel`). Sampled-frame agreement uses "
        "`Detector.detect` on single frames.",
        "",
        f"Load average (1 min) before / after the run: {load.get('before', '?')} / "
        f"{load.get('after', '?')} (other jobs shared this machine: compare the ratio, "
        f"not the absolute speed).",
        "",
        "Command: `" + report.get("command", "") + "`",
        "",
    ]
    return "\n".join(lines)


def write_reports(report: dict, folder: Path, stem: str) -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    md_path.write_text(to_markdown(report))
    return [json_path, md_path]
