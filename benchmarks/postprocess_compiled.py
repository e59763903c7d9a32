"""The CPU post-processing with its two C modules (`_steps`, `_fill`) against the same code
without them (NumPy / OpenCV only: what an install without a C compiler runs), on the maps of
benchmarks/postprocess_bench.py, every setting, in one process taking turns map by map.

Reported per setting: time per frame both ways (median wall, best process CPU) and the ratio
without / with, and whether both give identical boxes. Results:
benchmarks/results/<machine>/postprocess_compiled.{json,md}.

    python -m benchmarks.postprocess_compiled [--quick] [--repeats 5] [--no-real]
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List

import numpy as np

from benchmarks import common
from pipeline.commands._validate import at_least
from benchmarks.postprocess_bench import (SETTINGS, _interleaved_times, _per_frame, compare,
                                          ours_impl, real_sets, setting_name, synthetic_sets)
from pipeline.postprocess import compiled

MODULES = ("_steps", "_fill")


def _with_modules(on: bool, impl):
    """`impl` run with the compiled modules (on) or with NumPy / OpenCV only (off): the loaded
    modules are swapped in and out of compiled.py's per-process table, at no cost per call."""
    loaded = {name: compiled._module(name) for name in MODULES}
    chosen = loaded if on else dict.fromkeys(MODULES)  # None: the fallback path

    def run(prob):
        compiled._LOADED.update(chosen)
        return impl(prob)
    return run


def measure(sets: Dict[str, List[np.ndarray]], repeats: int) -> List[dict]:
    try:
        return [_measure_setting(config, sets, repeats) for config in SETTINGS]
    finally:
        compiled._LOADED.clear()  # loaded again, as the process had them, on next use


def _measure_setting(config, sets: Dict[str, List[np.ndarray]], repeats: int) -> dict:
    impl = ours_impl(config, "cpu")
    impls = {"C": _with_modules(True, impl), "NumPy": _with_modules(False, impl)}
    frames, times, same = 0, {label: [] for label in impls}, True
    for maps in sets.values():
        outputs = {label: [run(m) for m in maps] for label, run in impls.items()}  # + warm-up
        same &= compare(outputs["C"], outputs["NumPy"])["identical"]
        for label, samples in _interleaved_times(impls, maps, repeats).items():
            times[label].append(_per_frame(samples, len(maps)))
        frames += len(maps)
    ms = {label: {k: float(np.mean([t[k] for t in v])) for k in ("median", "cpu")}
          for label, v in times.items()}
    return dict(setting=setting_name(config), map_sets=len(sets), frames=frames,
                c_ms=round(ms["C"]["median"], 2), numpy_ms=round(ms["NumPy"]["median"], 2),
                c_cpu_ms=round(ms["C"]["cpu"], 2), numpy_cpu_ms=round(ms["NumPy"]["cpu"], 2),
                ratio_wall=round(ms["NumPy"]["median"] / ms["C"]["median"], 2),
                ratio_cpu=round(ms["NumPy"]["cpu"] / ms["C"]["cpu"], 2),
                identical_boxes=bool(same))


def main(argv=None) -> int:
    parser = common.argument_parser("benchmarks.postprocess_compiled", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller map sets")
    parser.add_argument("--repeats", type=at_least(1), default=5, help="timed runs per map")
    parser.add_argument("--no-real", action="store_true", help="skip the model-generated maps")
    args = parser.parse_args(argv)
    if not all(compiled.status().values()):
        print("postprocess_compiled: the C modules are not built here (pip install -e . with a C "
              f"compiler); nothing to compare: {compiled.status()}")
        return 0
    sets = synthetic_sets(args.quick)
    if not args.no_real:
        sets.update(real_sets(args.quick))
    load_before = round(os.getloadavg()[0], 2)
    rows = measure(sets, args.repeats)
    payload = dict(command=common.command_line("benchmarks.postprocess_compiled", sys.argv[1:]),
                   repeats=args.repeats, map_sets=list(sets), rows=rows,
                   load_average=dict(before=load_before, after=round(os.getloadavg()[0], 2)))
    out = common.results_dir()
    info = common.machine_info()
    common.write_json(out / "postprocess_compiled.json", dict(payload, machine=info))
    wall = [r["ratio_wall"] for r in rows]
    cpu = [r["ratio_cpu"] for r in rows]
    common.write_markdown(out / "postprocess_compiled.md",
                          "CPU post-processing: with its C modules vs NumPy / OpenCV only", [
        ("Per setting", common.markdown_table(rows) + (
            f"\nWithout the C modules the same steps take {min(wall):.2f}-{max(wall):.2f}x the wall "
            f"time and {min(cpu):.2f}-{max(cpu):.2f}x the process CPU time per frame, over "
            f"{len(sets)} map sets ({', '.join(sets)}); identical boxes both ways: "
            f"{all(r['identical_boxes'] for r in rows)}. Command: `{payload['command']}`; 1-minute "
            f"load average {load_before} before, {payload['load_average']['after']} after.\n")),
    ], info)
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
