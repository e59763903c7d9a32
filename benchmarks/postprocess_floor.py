"""How fast can an exact DB post-processing be on the CPU? The reference's time split into the
calls any implementation with the reference's boxes must also make, on the maps of
`postprocess_bench`, next to our time on the same maps.

Shared calls (same inputs on both sides, so the same cost): cv2.findContours, cv2.minAreaRect
(per contour and per expanded box), cv2.approxPolyDP (polygons), pyclipper's offset; plus one
read of the map (cv2.sumElems). Timed too but left out of the floor, because ours does without
them and keeps identical boxes (`avoided_ms`): cv2.fillPoly + cv2.mean (the score; ours computes
the same pixels and the same float64 sums in compiled code, all candidates of a map in one call),
cv2.arcLength (computed bit for bit in one pass) and, in polygon mode, the expanded polygon's
minAreaRect wherever its short-side check provably passes (`geometry.surely_wide`). The
reference runs with those calls wrapped in a process-CPU timer (the timer's own cost per call is
measured on an empty call and subtracted); its total time is taken from separate unwrapped runs.
Per setting: `floor_ms` = shared + map read, `ceiling` = reference / floor (the speed-up of an
implementation with no other cost), `speedup_cpu` = ours measured in the same run,
`ours_over_floor_ms` what ours spends beyond the floor (Python, glue, the bitmap, the scores).
CPU times, best per map over the repeats, summed over all maps.

    python -m benchmarks.postprocess_floor [--repeats 3] [--no-real] [--settings quad/fast,...]
"""
from __future__ import annotations

import collections
import os
import sys
import time
from contextlib import contextmanager
from typing import Dict, List

import cv2
import numpy as np

from benchmarks import common
from benchmarks import postprocess_bench as bench
from pipeline.commands._validate import at_least
from pipeline.postprocess.geometry import surely_wide
import reference_db  # noqa: E402  (tests/, put on sys.path by postprocess_bench)

SHARED_CV2 = ("findContours", "minAreaRect", "approxPolyDP")
AVOIDED = ("fillPoly", "mean", "arcLength", "minAreaRect_avoided")  # timed, not in the floor


class _Timed:
    """A module stand-in whose `names` are timed into `spent` (name -> [seconds, calls])."""

    def __init__(self, module, names, spent):
        self._module, self._names, self._spent = module, names, spent

    def __getattr__(self, name):
        fn = getattr(self._module, name)
        return _timed(fn, name, self._spent) if name in self._names else fn


class _TimedCv2(_Timed):
    """cv2 with the shared and avoided calls timed; with `poly_min_side`, a minAreaRect right
    after an offset that surely_wide calls wide is booked as avoided (ours skips it)."""

    def __init__(self, spent, state, poly_min_side):
        super().__init__(cv2, SHARED_CV2 + ("fillPoly", "mean", "arcLength"), spent)
        self._state, self._min_side = state, poly_min_side

    def minAreaRect(self, points):  # noqa: N802 - OpenCV's name
        delta = self._state.pop("delta", None)
        wide = (self._min_side is not None and delta is not None
                and bool(surely_wide(np.array([delta]), self._min_side)[0]))
        return _timed(cv2.minAreaRect, "minAreaRect_avoided" if wide else "minAreaRect",
                      self._spent)(points)


def _timed(fn, name, spent):
    def run(*args, **kwargs):
        start = time.process_time()
        out = fn(*args, **kwargs)
        entry = spent[name]
        entry[0] += time.process_time() - start
        entry[1] += 1
        return out
    return run


class _TimedOffset:
    """pyclipper.PyclipperOffset with a timed Execute; remembers the distance in `state`."""

    def __init__(self, pyclipper, spent, state):
        self._offset, self._state = pyclipper.PyclipperOffset(), state
        self._execute = _timed(self._offset.Execute, "pyclipper_offset", spent)

    def AddPath(self, *args):  # noqa: N802 - pyclipper's name
        return self._offset.AddPath(*args)

    def Execute(self, delta):  # noqa: N802
        self._state["delta"] = delta
        return self._execute(delta)


@contextmanager
def instrumented(spent, poly_min_side=None):
    """The reference's OpenCV and pyclipper calls routed through timers, for the block.
    poly_min_side: polygon mode's short-side limit (min_size + 2), to book the avoidable
    minAreaRect calls apart; None (quad mode): every minAreaRect is shared."""
    import pyclipper

    state: dict = {}
    timed = _Timed(pyclipper, (), spent)
    timed.PyclipperOffset = lambda: _TimedOffset(pyclipper, spent, state)
    reference_db.cv2, reference_db.pyclipper = _TimedCv2(spent, state, poly_min_side), timed
    try:
        yield
    finally:
        reference_db.cv2, reference_db.pyclipper = cv2, pyclipper


def timer_cost(samples: int = 20000) -> float:
    """Seconds the timer wrapper itself adds to one timed call."""
    spent = collections.defaultdict(lambda: [0.0, 0])
    empty = _timed(lambda: None, "empty", spent)
    for _ in range(samples):
        empty()
    return spent["empty"][0] / samples


def _best_cpu(fn, prob, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn(prob)
        best = min(best, time.process_time() - start)
    return best


def floor_row(config, sets: Dict[str, List[np.ndarray]], repeats: int, bias: float) -> dict:
    ref, ours = bench.reference_impl(config), bench.ours_impl(config, "cpu")
    totals = collections.Counter()
    poly_min_side = config.min_size + 2 if config.box_type == "poly" else None
    for maps in sets.values():
        for prob in maps:
            ref(prob), ours(prob)  # warm-up
            totals["reference"] += _best_cpu(ref, prob, repeats)
            totals["ours"] += _best_cpu(ours, prob, repeats)
            totals["map read"] += _best_cpu(cv2.sumElems, prob, repeats)
            best = None
            for _ in range(repeats):
                spent = collections.defaultdict(lambda: [0.0, 0])
                with instrumented(spent, poly_min_side):
                    ref(prob)
                calls = {k: max(s - n * bias, 0.0) for k, (s, n) in spent.items()}
                if best is None or sum(calls.values()) < sum(best.values()):
                    best = calls
            totals.update(best)
    shared = sum(v for k, v in totals.items() if k in SHARED_CV2 or k == "pyclipper_offset")
    floor = max(shared + totals["map read"], 1e-9)  # tiny maps can read as 0 s
    row = dict(setting=bench.setting_name(config), reference_ms=totals["reference"] * 1e3,
               ours_ms=totals["ours"] * 1e3, shared_calls_ms=shared * 1e3,
               map_read_ms=totals["map read"] * 1e3, floor_ms=floor * 1e3,
               floor_share=floor / totals["reference"], ceiling=totals["reference"] / floor,
               speedup_cpu=totals["reference"] / max(totals["ours"], 1e-9),
               ours_over_floor_ms=(totals["ours"] - floor) * 1e3,
               avoided_ms=sum(totals[k] for k in AVOIDED) * 1e3)
    row.update({f"{k}_ms": totals[k] * 1e3 for k in (*SHARED_CV2, "pyclipper_offset", *AVOIDED)})
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}


def main(argv=None) -> int:
    parser = common.argument_parser("benchmarks.postprocess_floor", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=at_least(1), default=3, help="timed runs per map and variant")
    parser.add_argument("--no-real", action="store_true", help="skip the model-generated maps")
    parser.add_argument("--settings", type=bench.chosen_settings, default=bench.SETTINGS,
                        help="comma-separated subset, e.g. 'quad/fast,poly/slow +dilation'")
    args = parser.parse_args(argv)
    sets = bench.synthetic_sets(False)
    if not args.no_real:
        sets.update(bench.real_sets(False))
    bias, load_before = timer_cost(), os.getloadavg()
    rows = []
    for config in args.settings:
        rows.append(floor_row(config, sets, args.repeats, bias))
        print(rows[-1], flush=True)
    write(rows, bias, dict(before=load_before, after=os.getloadavg()), len(sets))
    return 0


def write(rows: List[dict], bias: float, load: dict, map_sets: int) -> None:
    info = common.machine_info()
    info["load_average_1_5_15min"] = {k: [round(v, 2) for v in vals] for k, vals in load.items()}
    out = common.results_dir()
    common.write_json(out / "postprocess_floor.json", dict(rows=rows, timer_cost_us=bias * 1e6,
                                                           machine=info))
    note = (f"{__doc__.split(chr(10) + chr(10))[1]}\n\n{map_sets} map sets (those of "
            f"`postprocess_bench`); timer cost subtracted per call: {bias * 1e6:.2f} us. Load average "
            f"before / after: {info['load_average_1_5_15min']['before']} / "
            f"{info['load_average_1_5_15min']['after']} on {info['cpu_count']} cores.\n")
    common.write_markdown(out / "postprocess_floor.md", "DB post-processing: the floor any exact "
                          "implementation shares with the reference",
                          [("Method", note), ("One row per setting", common.markdown_table(rows))], info)
    print(f"wrote {out / 'postprocess_floor.md'}")


if __name__ == "__main__":
    sys.exit(main())
