"""Choose the post-processing thresholds on a validation set (never on the data you report).

    from pipeline.tune import tune_postprocess
    with Detector("model.onnx") as det:
        rows = tune_postprocess(det, open_dataset("val/"))
    rows[0]   # {"thresh": .., "box_thresh": .., "unclip_ratio": .., "precision", "recall", "hmean"}

The network runs once per image; every setting of the grid re-runs only the DB
post-processing and the ICDAR 2015 scoring on the kept probability maps. `iou` and
`area_precision` set the protocol's matching thresholds, as for `dbrt eval`.
"""
from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Dict, List, Sequence

from .evaluate import (AREA_PRECISION_THRESHOLD, IOU_THRESHOLD, EvalResult, prepare_truth,
                       score_image)
from .postprocess import DBPostprocessor

# wide enough that the best settings of the models here lie inside it, not on its edge (a
# shipped model's were at the edge of narrower grids before: thresh 0.3 and unclip_ratio 1.3,
# later unclip_ratio 1.1 for the model trained at shrink ratio 0.3, whose kernels are thinner)
THRESH = (0.2, 0.25, 0.3, 0.35, 0.4)
BOX_THRESH = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
UNCLIP_RATIO = (1.0, 1.1, 1.2, 1.3, 1.5, 1.7, 2.0)


def grid_edges(row: Dict[str, float], thresh: Sequence[float] = THRESH,
               box_thresh: Sequence[float] = BOX_THRESH,
               unclip_ratio: Sequence[float] = UNCLIP_RATIO) -> List[str]:
    """The settings of `row` that lie on an edge of the grid, where a better value may lie
    outside it: ["thresh 0.2 is the lowest tried", ...]. (box_thresh below thresh is a setting
    like any other: a box's score is its mean over the whole box, pixels under thresh too.)"""
    edges = []
    for name, grid in (("thresh", thresh), ("box_thresh", box_thresh), ("unclip_ratio", unclip_ratio)):
        value = row[name]
        if len(grid) < 2:
            continue
        if value == min(grid):
            edges.append(f"{name} {value:g} is the lowest tried")
        elif value == max(grid):
            edges.append(f"{name} {value:g} is the highest tried")
    return edges


def probability_maps(detector, dataset) -> list:
    """(sample, host probability map batch, letterboxes) per image: the network's part, run once."""
    kept = []
    for sample in dataset:
        batch, letterboxes = detector.prepare([sample.read_image()])
        prob = detector.infer(batch)
        kept.append((sample, prob.get() if hasattr(prob, "get") else prob, letterboxes))
    return kept


def score(maps: list, post: DBPostprocessor, explain: bool = False, iou: float = IOU_THRESHOLD,
          area_precision: float = AREA_PRECISION_THRESHOLD) -> EvalResult:
    """The ICDAR 2015 protocol on `probability_maps` post-processed by `post`; with `explain`,
    the misses and false alarms sorted by kind too (`EvalResult.error_counts`)."""
    truths = [prepare_truth(sample.gt.polygons, sample.gt.ignore) for sample, _, _ in maps]
    staged = [post.scored(prob, boxes) for _, prob, boxes in maps]
    return _score(maps, truths, staged, post, dict(iou=iou, area_precision=area_precision), explain)


def _score(maps: list, truths: list, staged: list, post: DBPostprocessor, protocol: dict,
           explain: bool = False) -> EvalResult:
    """The protocol on candidates already found (`DBPostprocessor.scored`), finished by `post`."""
    results = []
    for (sample, _, boxes), truth, found in zip(maps, truths, staged):
        dets = post.finish(found, boxes)[0]
        results.append(score_image(truth, dets.polygons, sample.name, explain=explain, **protocol))
    return EvalResult(tuple(results))


def tune_postprocess(detector, dataset, thresh: Sequence[float] = THRESH,
                     box_thresh: Sequence[float] = BOX_THRESH,
                     unclip_ratio: Sequence[float] = UNCLIP_RATIO,
                     **protocol) -> List[Dict[str, float]]:
    """Every (thresh, box_thresh, unclip_ratio) of the grid scored on `dataset`, best first
    (ties: the settings nearest the detector's own, `best_first`); `protocol`: iou,
    area_precision."""
    return tune_on_maps(probability_maps(detector, dataset), detector.post.config,
                        thresh, box_thresh, unclip_ratio, **protocol)


def tune_on_maps(maps: list, base, thresh: Sequence[float] = THRESH,
                 box_thresh: Sequence[float] = BOX_THRESH,
                 unclip_ratio: Sequence[float] = UNCLIP_RATIO, iou: float = IOU_THRESHOLD,
                 area_precision: float = AREA_PRECISION_THRESHOLD) -> List[Dict[str, float]]:
    """tune_postprocess on maps already made (`probability_maps`); `base`: the
    PostprocessConfig whose other settings (box type, dilation, ...) stay. Candidates and their
    scores are found once per thresh and the ground truth prepared once: box_thresh and
    unclip_ratio only change how candidates are finished (the same rows as post-processing
    every setting from scratch)."""
    truths = [prepare_truth(sample.gt.polygons, sample.gt.ignore) for sample, _, _ in maps]
    protocol, rows = dict(iou=iou, area_precision=area_precision), []
    for t in thresh:
        finder = DBPostprocessor(replace(base, thresh=t), "cpu")
        staged = [finder.scored(prob, boxes) for _, prob, boxes in maps]
        for b, u in itertools.product(box_thresh, unclip_ratio):
            post = DBPostprocessor(replace(base, thresh=t, box_thresh=b, unclip_ratio=u), "cpu")
            result = _score(maps, truths, staged, post, protocol)
            rows.append({"thresh": t, "box_thresh": b, "unclip_ratio": u, "precision": result.precision,
                         "recall": result.recall, "hmean": result.hmean})
    return best_first(rows, base, dict(thresh=thresh, box_thresh=box_thresh,
                                       unclip_ratio=unclip_ratio))


def best_first(rows: List[Dict[str, float]], base, grid: Dict[str, Sequence[float]]) -> list:
    """`rows` by hmean; among equals, the nearest to `base`'s settings (in shares of each grid's
    span), then the higher box_thresh and the smaller unclip_ratio. A tie is no evidence to move:
    by the other rules alone, a grid of equal scores chose its smallest unclip_ratio, on the
    grid's edge, and said a better setting might lie beyond it."""
    def distance(row) -> float:
        return sum(abs(row[name] - getattr(base, name)) / ((max(values) - min(values)) or 1.0)
                   for name, values in grid.items())

    return sorted(rows, key=lambda r: (-r["hmean"], round(distance(r), 9), -r["box_thresh"],
                                       r["unclip_ratio"]))
