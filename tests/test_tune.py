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
        assert len(rows) == 8  # box_thresh 0.25 < thresh 0.3 too: a box's mean counts every pixel
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


def test_grid_edges_name_the_settings_a_wider_grid_could_beat():
    from pipeline.tune import grid_edges

    grid = dict(thresh=(0.2, 0.3), box_thresh=(0.3, 0.5, 0.7), unclip_ratio=(1.0, 1.5, 2.0))
    row = {"thresh": 0.2, "box_thresh": 0.5, "unclip_ratio": 2.0}
    assert grid_edges(row, **grid) == ["thresh 0.2 is the lowest tried", "unclip_ratio 2 is the highest tried"]
    assert grid_edges({"thresh": 0.3, "box_thresh": 0.3, "unclip_ratio": 1.5}, **grid) == [
        "thresh 0.3 is the highest tried", "box_thresh 0.3 is the lowest tried"]  # lower may box more
    assert grid_edges({"thresh": 0.2, "box_thresh": 0.3, "unclip_ratio": 1.5}, **grid) == [
        "thresh 0.2 is the lowest tried", "box_thresh 0.3 is the lowest tried"]
    assert grid_edges(row, thresh=(0.2,), box_thresh=(0.5,), unclip_ratio=(2.0,)) == []  # one value: no edges


def test_cli_tune_takes_its_grid_and_says_when_the_best_is_on_its_edge(tmp_path, capsys):
    import json

    from pipeline.cli import main

    root = tmp_path / "v"
    write_dataset(root, 2, height=256, width=384)
    # each --tune-* implies --tune; one thresh, so the edge note can only name the others
    assert main(["eval", "--dataset", str(root), "--threads", "1", "--tune-thresh", "0.3",
                 "--tune-box-thresh", "0.5,0.4", "--tune-unclip", "1.25", "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "grid: thresh 0.3; box_thresh 0.4,0.5; unclip_ratio 1.25" in out
    assert "unclip_ratio 1.25: P " in out  # each row as tried, not rounded
    rows = json.loads((tmp_path / "t.json").read_text())["grid"]
    assert {(r["thresh"], r["box_thresh"], r["unclip_ratio"]) for r in rows} == {(0.3, 0.4, 1.25), (0.3, 0.5, 1.25)}
    best = rows[0]["box_thresh"]
    assert f"on the grid's edge: box_thresh {best:g} is the {'lowest' if best == 0.4 else 'highest'} tried" in out


@pytest.mark.parametrize("argv, message", [
    (["--tune", "--vis", "v"], "--vis draws the misses and false alarms of a plain detection run"),
    (["--tune-thresh", "0.2,x"], "argument --tune-thresh: must be comma-separated numbers from 0 to 1, got '0.2,x'"),
    (["--tune-unclip", "0"], "argument --tune-unclip: must be comma-separated numbers from 0.1 to 10, got '0'"),
])
def test_cli_tune_grid_mistakes_are_one_line(tmp_path, capsys, argv, message):
    from pipeline.cli import main

    root = tmp_path / "v"
    write_dataset(root, 1, height=256, width=384)
    assert main(["eval", "--dataset", str(root)] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_box_thresh_below_thresh_keeps_boxes_a_higher_one_drops():
    """A box's score is its mean over the whole box, pixels under thresh too, so box_thresh
    below thresh is a real setting (tuning skipped it and refused grids of only such values)."""
    import numpy as np

    from pipeline.postprocess import PostprocessConfig

    from pipeline.preprocess import make_letterbox

    prob = np.zeros((1, 64, 64), np.float32)
    prob[0, 30:34, 10:54] = 0.9  # a cross: its box holds many pixels under thresh
    prob[0, 10:54, 30:34] = 0.9
    box = [make_letterbox(64, 64, 64, 64)]
    counts = [len(DBPostprocessor(PostprocessConfig(thresh=0.3, box_thresh=b), "cpu")(prob, box)[0])
              for b in (0.2, 0.3)]
    assert counts == [1, 0]


def test_cli_tune_scores_with_the_protocol_asked_for(tmp_path, capsys):
    """--iou / --area-precision reach the tuning (it scored at IoU 0.5 whatever was asked)."""
    import re

    from pipeline.cli import main

    root = tmp_path / "v"
    write_dataset(root, 2, height=256, width=384)
    args = ["eval", "--dataset", str(root), "--threads", "1"]
    setting = dict(thresh="0.25", box_thresh="0.4", unclip="1.1")
    hmeans = {}
    for iou in ("0.5", "0.9"):
        assert main(args + ["--quiet", "--iou", iou, "--thresh", setting["thresh"],
                            "--box-thresh", setting["box_thresh"], "--unclip-ratio", setting["unclip"]]) == 0
        plain = re.search(r"hmean (\d\.\d{4})", capsys.readouterr().out).group(1)
        assert main(args + ["--iou", iou, "--tune-thresh", setting["thresh"], "--tune-box-thresh",
                            setting["box_thresh"], "--tune-unclip", setting["unclip"]]) == 0
        tuned = re.search(r"unclip_ratio 1.1: P .* hmean (\d\.\d{4})", capsys.readouterr().out).group(1)
        assert tuned == plain
        hmeans[iou] = tuned
    assert hmeans["0.9"] < hmeans["0.5"]


def test_cli_tune_json_says_how_it_scored_as_the_plain_json_does(tmp_path, capsys):
    """--tune --json held the dataset and the grid only: not the format, model, detector
    settings (resize rule) nor the protocol (IoU) the plain --json says it scored with; nor the
    best setting's misses and false alarms by kind that --tune prints."""
    import json

    from pipeline.cli import main

    root = tmp_path / "v"
    write_dataset(root, 2, height=256, width=384)
    common = ["eval", "--dataset", str(root), "--threads", "1", "--quiet", "--iou", "0.7",
              "--area-precision", "0.6", "--limit-side", "320", "--thresh", "0.25",
              "--box-thresh", "0.4", "--unclip-ratio", "1.1"]
    assert main(common + ["--json", str(tmp_path / "plain.json")]) == 0
    assert main(common + ["--tune-thresh", "0.25", "--tune-box-thresh", "0.4", "--tune-unclip", "1.1",
                          "--json", str(tmp_path / "tune.json")]) == 0
    plain, tuned = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("plain", "tune"))
    described = ("dataset", "format", "model", "detector", "protocol", "images")
    assert {k: tuned[k] for k in described} == {k: plain[k] for k in described}
    assert plain["protocol"] == {"name": "icdar2015", "iou": 0.7, "area_precision": 0.6}
    assert tuned["detector"]["spec"]["resize"]["limit_side"] == 320
    best = tuned["best"]
    assert (best["thresh"], best["box_thresh"], best["unclip_ratio"]) == (0.25, 0.4, 1.1)
    assert best["hmean"] == plain["hmean"] and best["errors"] == plain["errors"]
    assert tuned["grid"] == [{k: v for k, v in best.items() if k != "errors"}]
    assert tuned["grid_edges"] == []


def test_cli_tune_quiet_prints_the_best_setting_only(tmp_path, capsys):
    """--quiet ('print only the overall line') was ignored by --tune: the grid, ten rows and
    the error kinds were printed all the same."""
    from pipeline.cli import main

    root = tmp_path / "v"
    write_dataset(root, 1, height=256, width=384)
    assert main(["eval", "--dataset", str(root), "--threads", "1", "--quiet", "--tune-thresh", "0.2,0.3",
                 "--tune-box-thresh", "0.4", "--tune-unclip", "1.1"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("best on v (1 images): --thresh "), printed


def test_equal_scores_keep_the_settings_nearest_the_models_own():
    """realdev scores many settings as the defaults do (hmean 0.7887): the tie went to the
    smallest unclip_ratio, 1.0, the grid's edge, with a warning that a better value might lie
    beyond it. Equal scores are no evidence to move from the model's settings."""
    from dbnet.postprocess_config import PostprocessConfig
    from pipeline.tune import best_first, grid_edges

    grid = dict(thresh=(0.2, 0.3, 0.4), box_thresh=(0.5, 0.6, 0.7), unclip_ratio=(1.0, 1.1, 1.5))
    base = PostprocessConfig(thresh=0.3, box_thresh=0.6, unclip_ratio=1.1)
    rows = [dict(thresh=t, box_thresh=b, unclip_ratio=u, hmean=0.7887)
            for t in grid["thresh"] for b in grid["box_thresh"] for u in grid["unclip_ratio"]]
    rows.append(dict(thresh=0.4, box_thresh=0.7, unclip_ratio=1.5, hmean=0.79))
    ranked = best_first(rows, base, grid)
    assert [ranked[0][k] for k in grid] == [0.4, 0.7, 1.5]  # a better score still wins
    assert [ranked[1][k] for k in grid] == [0.3, 0.6, 1.1] and not grid_edges(ranked[1], **grid)
