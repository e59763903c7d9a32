"""The README's Python examples run as written (on small stand-ins for the files they name), and
benchmarks/README.md names the benchmarks, flags and result files there are."""
import re
import shutil
from pathlib import Path

import cv2
import pytest

from media import frame_image, write_video

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BENCHMARKS = ROOT / "benchmarks"
BENCH_README = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
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


def _benchmark_table() -> list:
    """benchmarks/README.md's table rows, as (module names, result file names) per row."""
    rows = []
    for line in BENCH_README.splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and len(cells) == 4 and cells[1] != "module":
            rows.append((re.findall(r"`(\w+)\.(?:py|sh)`", cells[1]), re.findall(r"`([^`$]+)`", cells[3])))
    return rows


def _file_names(pattern: str) -> list:
    """`a.{json,md}` -> a.json, a.md; `a[_b].md` -> a.md, a_b.md."""
    names = [pattern]
    for option in re.findall(r"\[([^\]]+)\]", pattern):
        names = [n.replace(f"[{option}]", keep) for n in names for keep in ("", option)]
    spread = re.search(r"\{([^}]+)\}", pattern)
    if spread:
        names = [n.replace(spread.group(0), ext) for n in names for ext in spread.group(1).split(",")]
    return names


def test_every_benchmark_is_in_the_benchmarks_readme():
    listed = {module for modules, _ in _benchmark_table() for module in modules}
    runnable = {path.stem for path in BENCHMARKS.glob("*.py") if '__name__ == "__main__"' in path.read_text()}
    assert runnable - listed == set(), f"benchmarks/README.md's table leaves out {sorted(runnable - listed)}"
    assert all((BENCHMARKS / f"{m}.py").is_file() or (BENCHMARKS / f"{m}.sh").is_file() for m in listed)


def test_every_result_file_the_benchmarks_readme_names_exists():
    committed = {path.name for path in (BENCHMARKS / "results").glob("*/*")}
    missing = [name for _, results in _benchmark_table() for pattern in results
               if "." in pattern and "/" not in pattern
               for name in _file_names(pattern) if "*" not in name and name not in committed]
    starred = [pattern for _, results in _benchmark_table() for pattern in results if pattern.endswith(".*")
               and not any(name.startswith(pattern[:-1]) for name in committed)]
    assert not missing + starred, f"benchmarks/README.md names {missing + starred}, in no results/<machine>/"


def test_every_flag_of_a_benchmark_command_exists():
    """`python -m benchmarks.X --flag`: X's parser (or the shared one in common.py) has --flag."""
    shared = (BENCHMARKS / "common.py").read_text()
    wrong = []
    for module, rest in re.findall(r"python -m benchmarks\.(\w+)([^`|\n]*)", BENCH_README):
        source = (BENCHMARKS / f"{module}.py").read_text() + shared
        wrong += [f"{module} {flag}" for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest)
                  if f'"{flag}"' not in source]
    assert not wrong, f"benchmarks/README.md gives flags the benchmarks do not have: {wrong}"
