"""The README's Python examples run as written (on small stand-ins for the files they name)."""
import re
import shutil
from pathlib import Path

import cv2
import pytest

from media import frame_image, write_video

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_python_examples():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs(index, tmp_path, tiny_onnx, monkeypatch):
    pytest.importorskip("av")
    cv2.imwrite(str(tmp_path / "photo.jpg"), frame_image(1, 96, 128))
    shutil.copy(tiny_onnx, tmp_path / "dbnet.onnx")
    for name in ("a.mp4", "b.mp4"):
        write_video(tmp_path / name, frames=3, height=64, width=96)
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "readme"})
    if "d.jsonl" in BLOCKS[index]:  # the pipeline example: one line per frame of both videos
        assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 6
