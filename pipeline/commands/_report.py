"""`dbrt run`'s OUTPUT/report.json: what it holds (the pipeline's report, the files written, the
MQTT counters), rewritten while the run goes on (--report-every, and at each new segment of
--segment-time) and written once more, final, at its end."""
from __future__ import annotations

import contextlib
from pathlib import Path

from pipeline.live_report import EVERY_S as REPORT_EVERY_S, LiveReport

from ._network import outputs_counted
from ._outputs import outputs_written, run_segments_of
from ._validate import at_least


def add_report_argument(group) -> None:
    group.add_argument("--report-every", type=at_least(0.0, float), default=REPORT_EVERY_S,
                       metavar="SECONDS",
                       help="rewrite OUTPUT/report.json every SECONDS while the run goes on, and "
                            "at each new segment of --segment-time (with \"running\": true, "
                            "replaced by the final report at the end), so that a service killed "
                            "outright or running for weeks leaves a current one; 0: only at the "
                            f"end (default {REPORT_EVERY_S:g})")


def run_report(pipe, out: Path) -> dict:
    """report.json's content now: final once the run is over."""
    mqtt = [s for name, s in outputs_counted(pipe.sinks) if name == "mqtt"]
    extra = dict(mqtt=mqtt[0].counters()) if mqtt else {}
    return pipe.report(outputs=outputs_written(pipe, out), **extra)


def live_report(pipe, out: Path, args):
    """A context that rewrites report.json while the run inside it goes on (none for
    --report-every 0); it ends before the final report is written."""
    if not args.report_every:
        return contextlib.nullcontext()

    def make():  # nothing before the run starts: a run that fails to start claims none
        return run_report(pipe, out) if pipe.metrics.t_start is not None else None

    segments = run_segments_of(pipe.sinks)
    return LiveReport(make, out / "report.json", args.report_every,
                      turned=None if segments is None else segments.turned)

