"""`dbrt eval`'s outputs: what its --json, --tune --json, --e2e --json and --vis files hold."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.cli import main


def _ic15_folder(folder, names=("img_1.jpg",)):
    """An ICDAR 2015 folder: a white image with one word drawn per name, and its ground truth."""
    cv2 = pytest.importorskip("cv2")
    folder.mkdir()
    image = np.full((64, 96, 3), 255, np.uint8)
    cv2.putText(image, "TEXT", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 3)
    for name in names:
        cv2.imwrite(str(folder / name), image)
        (folder / f"gt_{name.rsplit('.', 1)[0]}.txt").write_text("8,15,80,15,80,45,8,45,TEXT\n")
    return folder


def test_json_names_the_shipped_model_when_no_model_is_given(tmp_path):
    """"model" was null with the shipped model (the flag's value, not the model used)."""
    from pipeline.shipped import default_model_path

    data = _ic15_folder(tmp_path / "ic15")
    out = tmp_path / "eval.json"
    assert main(["eval", "--dataset", str(data), "--json", str(out), "--threads", "1", "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == str(default_model_path()) == result["detector"]["model"]


def test_json_names_the_model_given(tmp_path, tiny_onnx):
    data = _ic15_folder(tmp_path / "ic15")
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(tiny_onnx), "--dataset", str(data), "--json", str(out),
                 "--threads", "1", "--quiet"]) == 0
    assert json.loads(out.read_text())["model"] == str(tiny_onnx)


@pytest.mark.parametrize("mode", [[], ["--tune", "--tune-thresh", "0.3"]])
def test_json_dash_is_standard_output_and_the_text_goes_to_stderr(tmp_path, tiny_onnx, capsys,
                                                                  monkeypatch, mode):
    """--json - wrote a file named '-' in the working folder."""
    data = _ic15_folder(tmp_path / "ic15")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--model", str(tiny_onnx), "--dataset", str(data), "--json", "-",
                 "--threads", "1", *mode]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # standard output is the report alone
    assert report["model"] == str(tiny_onnx)
    assert "hmean" in captured.err
    assert not (tmp_path / "-").exists()


def test_vis_of_two_images_with_one_stem_keeps_both(tmp_path, tiny_onnx):
    """img_1.jpg and img_1.png (each with its own ground truth) were both drawn to img_1.jpg."""
    cv2 = pytest.importorskip("cv2")
    data = tmp_path / "ic15"
    data.mkdir()
    for name, shade in (("img_1.jpg", 255), ("img_1.png", 0)):  # blank: the word is missed
        cv2.imwrite(str(data / name), np.full((64, 96, 3), shade, np.uint8))
        (data / f"{name}.txt").write_text("8,15,80,15,80,45,8,45,TEXT\n")
    vis = tmp_path / "vis"
    assert main(["eval", "--model", str(tiny_onnx), "--dataset", str(data), "--vis", str(vis),
                 "--threads", "1", "--quiet"]) == 0
    assert sorted(p.name for p in vis.iterdir()) == ["img_1.jpg", "img_1.png"]
    assert cv2.imread(str(vis / "img_1.jpg")).mean() > cv2.imread(str(vis / "img_1.png")).mean()


def test_vis_names_stay_inside_the_vis_folder():
    from pipeline.commands.eval import vis_name

    assert vis_name("img_1.jpg") == "img_1.jpg"
    assert vis_name("street/a.jpg") == "street_a.jpg" and vis_name("../b.png") == ".._b.png"


def test_two_images_sharing_one_ground_truth_is_one_line_exit_2(tmp_path, tiny_onnx, capsys):
    data = _ic15_folder(tmp_path / "ic15", names=("img_1.jpg", "img_1.png"))
    assert main(["eval", "--model", str(tiny_onnx), "--dataset", str(data), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "img_1.jpg and img_1.png in " in err[0] and "gt_img_1.txt" in err[0]


def _untrained_copy(tiny_onnx, folder):
    onnx = pytest.importorskip("onnx")
    from dbnet.spec import ModelSpec

    proto = onnx.load(str(tiny_onnx))
    entry = next(p for p in proto.metadata_props if p.key == "dbrt")
    entry.value = ModelSpec.from_json(entry.value).replace(untrained=True).to_json()
    onnx.save(proto, str(folder / "untrained.onnx"))
    return folder / "untrained.onnx"


def test_an_untrained_model_is_said_in_every_mode_on_stderr(tmp_path, tiny_onnx, capsys):
    """--tune scored an untrained model without a word, and the plain run's note went to stdout,
    which --quiet keeps to the overall line."""
    data = _ic15_folder(tmp_path / "ic15")
    model = _untrained_copy(tiny_onnx, tmp_path)
    note = "dbrt eval: note: the model's metadata says its weights are untrained"
    for mode in (["--quiet"], ["--tune-thresh", "0.3", "--tune-box-thresh", "0.5", "--tune-unclip", "1.5"]):
        assert main(["eval", "--model", str(model), "--dataset", str(data), "--threads", "1", *mode]) == 0
        captured = capsys.readouterr()
        assert note in captured.err.splitlines() and note not in captured.out
        if mode == ["--quiet"]:
            assert len(captured.out.strip().splitlines()) == 1


def test_vis_into_the_image_folder_is_refused_before_drawing_over_the_images(tmp_path, tiny_onnx, capsys):
    """--vis naming the dataset's own folder wrote the drawn pictures over its images."""
    data = _ic15_folder(tmp_path / "ic15")
    before = (data / "img_1.jpg").read_bytes()
    assert main(["eval", "--model", str(tiny_onnx), "--dataset", str(data), "--vis", str(data),
                 "--threads", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dbrt eval: error: --vis {data} holds the dataset's images: drawing the errors "
                   "would write over them (e.g. img_1.jpg); pick another folder"]
    assert (data / "img_1.jpg").read_bytes() == before


def test_ms_per_image_counts_decoding_and_detecting_not_scoring(tmp_path, tiny_onnx, capsys,
                                                               monkeypatch):
    """The printed 'ms/image incl. decoding the image file' also held the scoring's time: on a
    clock that only the scoring moves, it must be 0."""
    import time

    import pipeline.evaluate as evaluate

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    scored = evaluate.evaluate_image

    def slow_scoring(*a, **k):
        clock[0] += 1.0                                  # a second of scoring per image
        return scored(*a, **k)

    monkeypatch.setattr(evaluate, "evaluate_image", slow_scoring)
    data = _ic15_folder(tmp_path / "ic15", names=("img_1.jpg", "img_2.jpg"))
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(tiny_onnx), "--dataset", str(data), "--threads", "1",
                 "--quiet", "--json", str(out)]) == 0
    assert "0.0 ms/image incl. decoding the image file" in capsys.readouterr().out
    assert json.loads(out.read_text())["ms_per_image"] == 0


def test_a_folder_format_given_with_a_gt_json_is_one_error_line(tmp_path, capsys):
    from export.synth.dataset import write_dataset

    write_dataset(tmp_path / "set", 1, height=64, width=96)
    for fmt in ("icdar2015", "totaltext"):
        assert main(["eval", "--dataset", str(tmp_path / "set" / "gt.json"), "--format", fmt]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--format {fmt} is for image folders" in err


@pytest.mark.parametrize("target", ["set/gt.json", "IMAGE", "ic15/gt_img_1.txt", "ic15/img_1.jpg"])
def test_json_onto_the_datasets_own_files_is_refused_before_scoring(tmp_path, capsys, target):
    from export.synth.dataset import write_dataset

    write_dataset(tmp_path / "set", 1, height=64, width=96)
    _ic15_folder(tmp_path / "ic15")
    if target == "IMAGE":
        target = str(next((tmp_path / "set" / "images").iterdir()).relative_to(tmp_path))
    dataset = tmp_path / target.split("/")[0]
    before = (tmp_path / target).read_bytes()
    assert main(["eval", "--dataset", str(dataset), "--json", str(tmp_path / target)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "the report would write over it" in captured.err
    assert (tmp_path / target).read_bytes() == before
