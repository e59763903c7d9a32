"""Threshold tuning on a validation set: the grid, its order, and agreement with a plain run."""
from dataclasses import replace

import pytest

from engine.loader import RunnerOptions
from export.synth.dataset import write_dataset
from pipeline.datasets import open_dataset
from pipeline.detector import Detector
from pipeline.evaluate import evaluate_detector
from pipeline.postprocess import DBPostprocessor
from pipeline.tune import tune_postprocess


@pytest.fixture(scope="module")
def synthetic_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    write_dataset(root, 3, height=256, width=384)
    return open_dataset(root)


def test_grid_is_sorted_and_its_best_row_is_what_a_plain_run_scores(synthetic_val):
    with Detector(options=RunnerOptions(threads=1)) as det:
        rows = tune_postprocess(det, synthetic_val, thresh=(0.2, 0.3), box_thresh=(0.25, 0.5),
                                unclip_ratio=(1.3, 1.5))
        assert len(rows) == 6  # box_thresh 0.25 < thresh 0.3 is skipped
        assert [r["hmean"] for r in rows] == sorted((r["hmean"] for r in rows), reverse=True)
        best = rows[0]
        det.post = DBPostprocessor(replace(det.post.config, thresh=best["thresh"],
                                           box_thresh=best["box_thresh"],
                                           unclip_ratio=best["unclip_ratio"]))
        plain = evaluate_detector(det.detect, synthetic_val)
    assert plain.hmean == pytest.approx(best["hmean"]) and plain.recall == pytest.approx(best["recall"])


def test_shared_candidates_give_the_rows_of_post_processing_every_setting(synthetic_val):
    """tune_on_maps finds candidates once per thresh and prepares the ground truth once; its
    rows must be those of post-processing and scoring every setting from scratch."""
    from pipeline.evaluate import EvalResult, evaluate_image
    from pipeline.tune import probability_maps, tune_on_maps

    grid = dict(thresh=(0.2, 0.3), box_thresh=(0.3, 0.5, 0.7), unclip_ratio=(1.2, 1.5))
    with Detector(options=RunnerOptions(threads=1)) as det:
        maps = probability_maps(det, synthetic_val)
        base = det.post.config
    for box_type in ("quad", "poly"):
        config = replace(base, box_type=box_type)
        rows = tune_on_maps(maps, config, **grid)
        for row in rows:
            post = DBPostprocessor(replace(config, **{k: row[k] for k in grid}), "cpu")
            plain = EvalResult(tuple(
                evaluate_image(s.gt.polygons, s.gt.ignore, post(prob, boxes)[0].polygons, s.name)
                for s, prob, boxes in maps))
            assert (row["precision"], row["recall"], row["hmean"]) == (plain.precision, plain.recall, plain.hmean)
        assert len(rows) == 2 * 3 * 2


def test_cli_tune_prints_the_best_settings(tmp_path, synthetic_val, capsys):
    import json

    from pipeline.cli import main

    root = tmp_path / "v"
    write_dataset(root, 2, height=256, width=384)
    assert main(["eval", "--dataset", str(root), "--tune", "--threads", "1",
                 "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "best on" in out and "--box-thresh" in out
    assert "\nat those settings: missed " in out and "; false alarms " in out
    grid = json.loads((tmp_path / "t.json").read_text())["grid"]
    assert grid[0]["hmean"] >= grid[-1]["hmean"] and {"thresh", "box_thresh", "unclip_ratio"} <= set(grid[0])
