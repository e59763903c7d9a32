"""Warnings that their own objects say once (a region that misses a later frame size, an input
capped, a report that could not be updated) were said through Python's default filter, which
shows a text once per line of the caller: a second Detector of the same process (a service
that rebuilds its Pipeline after an error) or a second failure of the same report said
nothing. Each object's own once is now the only one."""
from __future__ import annotations

import warnings

import numpy as np

from dbnet.spec import ModelSpec
from engine.errors import DbrtWarning
from pipeline.detector import Detector
from pipeline.live_report import LiveReport

from test_detector import BrightPixelRunner, scene


def _said(action, times=2):
    """The DbrtWarnings of `action()` done `times` over, under Python's default filter."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for _ in range(times):
            action()  # the same line of the caller each time
    return [str(w.message) for w in caught if issubclass(w.category, DbrtWarning)]


def test_each_detectors_region_warning_is_said():
    def a_detector_meets_a_smaller_frame():
        with Detector(BrightPixelRunner(), roi=(500, 0, 50, 50)) as det:
            det.detect(scene(100, 600))
            det.detect(scene(100, 200))
            det.detect(scene(100, 200))  # its own once

    said = _said(a_detector_meets_a_smaller_frame)
    assert len(said) == 2 and said[0] == said[1] and "lies outside the 200x100 frames" in said[0]


def test_each_detectors_input_cap_warning_is_said():
    def a_detector_meets_a_long_frame():
        det = Detector(BrightPixelRunner(ModelSpec().replace(limit_side=736,
                                                             limit_type="min_at_least")))
        det.detect(np.zeros((30, 400, 3), np.uint8))
        det.detect(np.zeros((30, 400, 3), np.uint8))  # its own once

    said = _said(a_detector_meets_a_long_frame)
    assert len(said) == 2 and said[0] == said[1] and "capped at" in said[0]


def test_a_report_that_fails_again_after_a_write_that_worked_is_said_again(tmp_path):
    failing = [True]

    def make():
        if failing[0]:
            raise OSError("No space left on device")
        return {"running": True}

    live = LiveReport(make, tmp_path / "report.json", every=3600)

    def fails_twice_then_works():
        failing[0] = True
        assert not live.write() and not live.write()  # said once
        failing[0] = False
        assert live.write()

    said = _said(fails_twice_then_works)
    assert len(said) == 2 and said[0] == said[1] and "could not update" in said[0]
