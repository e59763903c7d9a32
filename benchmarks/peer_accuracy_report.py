"""The JSON + markdown report of benchmarks/peer_accuracy.py: accuracy and speed per set, recall
per word height, misses and false alarms by kind, the lightbox video's three words."""
from __future__ import annotations

from pathlib import Path
from typing import List

from . import common

SIDES = ("rapidocr", "dbrt")


def _set_row(row: dict) -> dict:
    if row["status"] != "ok":
        return {"set": row["set"], "images": f"skipped: {row['reason']}"}
    out = {"set": row["set"], "images": row["images"]}
    for side, label in zip(SIDES, ("RapidOCR", "dbrt")):
        out.update({f"{label} {short}": row[side][k]
                    for k, short in (("precision", "P"), ("recall", "R"), ("hmean", "hmean"))})
    lat = row["latency_ms"]
    out.update({"RapidOCR ms": lat["rapidocr"]["median_ms"], "dbrt ms": lat["dbrt"]["median_ms"],
                "dbrt speed-up": f"{row['dbrt_speedup']:.2f}x"})
    return out


def _height_rows(row: dict) -> List[dict]:
    """Recall per word-height range of both sides on one set (image pixels)."""
    from pipeline.evaluate import height_range

    out = []
    for theirs, ours in zip(row["rapidocr"]["recall_by_height"], row["dbrt"]["recall_by_height"]):
        out.append({"set": row["set"], "word height px": height_range(ours), "words": ours["words"],
                    "RapidOCR found": theirs["found"], "dbrt found": ours["found"],
                    "RapidOCR recall": theirs["recall"], "dbrt recall": ours["recall"]})
    return out


def _error_rows(row: dict) -> List[dict]:
    """Misses and false alarms of both sides on one set, by kind (pipeline.eval_errors)."""
    from pipeline.eval_errors import FALSE_ALARM_WORDS, MISS_WORDS

    if "errors" not in row["dbrt"]:  # a report written before the kinds existed
        return []
    out = []
    for group, words in (("missed", MISS_WORDS), ("false_alarms", FALSE_ALARM_WORDS)):
        for kind, label in words.items():
            out.append({"set": row["set"], "error": f"{group.replace('_', ' ')}: {label}",
                        **{name: row[side]["errors"][group][kind]
                           for side, name in zip(SIDES, ("RapidOCR", "dbrt"))}})
    return out


def _side_note(row: dict) -> str:
    theirs, ours = row["settings"]["rapidocr"], row["settings"]["dbrt"]
    post, resize = ours["post"], ours["spec"]["resize"]
    return (f"\n{row['set']}: RapidOCR limit_side_len {theirs['limit_side_len']} "
            f"({theirs['limit_type']}) with its own thresholds; dbrt limit_side "
            f"{resize['limit_side']} ({resize['limit_type']}), thresh "
            f"{post['thresh']}, box_thresh {post['box_thresh']}, unclip_ratio {post['unclip_ratio']}.\n")


def _video_rows(video: dict) -> List[dict]:
    return [{"detector": side, "sampled frames": video["frames"],
             "three words boxed": video[side]["frames_words_boxed"],
             "share": f"{video[side]['share']:.0%}",
             "word-sized boxes per frame": video[side]["word_boxes_per_frame"],
             "median ms per frame": video["latency_ms"][side]["median_ms"]} for side in SIDES]


def to_sections(report: dict) -> List[tuple]:
    rapid, ours = report["rapidocr"], report["dbrt"]
    threads = report["threads"] or "ONNX Runtime's default"
    setup = (f"RapidOCR {rapid['version']}: its `TextDetector` with its packaged Det settings and "
             f"default det model `{rapid['model']}` (sha256 `{rapid['model_sha256']}`). dbrt: "
             f"`Detector()` with `{ours['model']}` (sha256 `{ours['model_sha256']}`) at its own "
             f"defaults. Both ONNX Runtime on the CPU, intra-op threads: {threads}.\n")
    sets = ("ICDAR 2015 protocol (`pipeline.evaluate`). Latency: median per image of the detector "
            "call on a decoded image (pre-processing, model, post-processing), one untimed warm-up "
            "per side, the sides alternating image by image; speed-up = RapidOCR ms / dbrt ms. "
            "The ground truth of all three sets is one box per word; PP-OCR det boxes whole text "
            "lines, and a line box over several words usually matches none of them (IoU <= 0.5).\n\n"
            + common.markdown_table([_set_row(r) for r in report["sets"]])
            + "".join(_side_note(r) for r in report["sets"] if "settings" in r))
    video = report["lightbox"]
    if video["status"] == "ok":
        sampled = (f"Every {video['every']}th frame ({video['frames']} frames)"
                   if video["frames"] == video["every_kth_frames"] else
                   f"{video['frames']} of the {video['every_kth_frames']} every-{video['every']}th "
                   f"frames, spread over the video ({', '.join(map(str, video['frame_indices']))})")
        words = (f"{sampled}, each detector at its default input size. "
                 f"Criterion: {video['criterion']}.\n\n"
                 + common.markdown_table(_video_rows(video)))
    else:
        words = f"skipped: {video['reason']}\n"
    load = report["load_average"]
    footer = (f"Load average (1 min) before / after: {load['before']} / {load['after']}.\n\n"
              f"Command: `{report['command']}`\n")
    heights = ("Cared-for words per height (the short side of the word's minimum-area rectangle, "
               "image pixels) and how many each side found.\n\n"
               + common.markdown_table([h for r in report["sets"] if r["status"] == "ok"
                                        for h in _height_rows(r)]))
    ok_sets = [r for r in report["sets"] if r["status"] == "ok"]
    errors = ("Cared-for words missed and boxes that matched no word, by kind "
              "(`pipeline/eval_errors.py`): a word inside a box at least twice its area (a line "
              "box over its neighbours), boxed in pieces, partly boxed, not found; a box holding "
              "most of several words, on a word without matching it, on do-not-care text, on "
              "background.\n\n"
              + common.markdown_table([e for r in ok_sets for e in _error_rows(r)]))
    return [("Setup", setup), ("Accuracy and speed per image", sets),
            ("Recall by word height", heights), ("Errors by kind", errors),
            ("Lightbox video: the three words boxed", words), ("Run", footer)]


def write(report: dict, folder: Path, name: str) -> List[Path]:
    info = common.machine_info()
    json_path = common.write_json(folder / f"{name}.json", {**report, "machine": info})
    md_path = common.write_markdown(folder / f"{name}.md", "dbrt vs RapidOCR's own detector",
                                    to_sections(report), info)
    return [json_path, md_path]
