"""`dbrt run --serve`: the real server on a free loopback port, scraped with prometheus_client's
own parser, MJPEG parts decoded, a viewer that never reads, the token and the one-line errors."""
from __future__ import annotations

import json
import signal
import socket

import numpy as np
import pytest

from engine.triton.ports import free_port
from pipeline.cli import main

from serve_helpers import dbrt, get, mjpeg_parts, wait_until

prometheus = pytest.importorskip("prometheus_client", reason="prometheus-client is not installed "
                                 "(pip install 'dbrt[serve]')")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def scrape(port: int) -> dict:
    """{(sample name, frozen labels): value} from /metrics."""
    status, body, _ = get(port, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def frames_out(samples: dict) -> float:
    return sum(v for (name, _), v in samples.items() if name == "dbrt_frames_total")


def test_demo_run_serves_metrics_status_health_and_mjpeg(tmp_path):
    port = free_port()
    proc = dbrt("run", "--serve", str(port), "--no-video", "--quiet",
                "-o", str(tmp_path / "out"))
    try:
        first = wait_until(lambda: frames_out(scrape(port)) >= 1 and scrape(port), proc,
                           "the first frame")
        later = wait_until(lambda: (s := scrape(port)) and frames_out(s) > frames_out(first) and s,
                           proc, "more frames")
        stages = {dict(labels)["stage"] for (name, labels) in later
                  if name == "dbrt_stage_latency_seconds_count"}
        assert stages == {"decode", "preprocess", "infer", "postprocess", "sink"}
        assert later[("dbrt_source_up", (("source", str(_demo())), ("stream", "0")))] == 1.0
        assert later[("dbrt_batch_size_count", ())] >= 1
        assert any(name == "dbrt_queue_depth" for name, _ in later)

        parts = list(mjpeg_parts(port, 0, 3))
        import cv2

        images = [cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR) for p in parts]
        assert all(img is not None and img.shape == (360, 640, 3) for img in images)

        status, body, _ = get(port, "/api/status")
        snapshot = json.loads(body)
        assert status == 200 and snapshot["streams"][0]["state"] == "up"
        assert snapshot["streams"][0]["frames"] >= 1 and snapshot["stages"]["infer"]["count"] >= 1
        assert get(port, "/healthz")[:2] == (200, b"ok\n")
        page = get(port, "/")[1].decode()
        assert "stream/" in page and "api/status" in page
        assert get(port, "/stream/7.mjpg")[0] == 404 and get(port, "/../setup.cfg")[0] == 404
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def _demo():
    from pipeline.shipped import DEMO_VIDEO

    return DEMO_VIDEO


def test_a_viewer_that_never_reads_does_not_stall_the_run(tmp_path):
    """A client opens the stream and reads nothing: every frame still comes out."""
    port = free_port()
    out = tmp_path / "out"
    proc = dbrt("run", "--serve", str(port), "--max-side", "256", "--max-frames", "40",
                "--serve-fps", "100", "--no-video", "--quiet", "-o", str(out))
    stuck = []
    try:
        wait_until(lambda: get(port, "/healthz")[0] == 200, proc, "the server")
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /stream/0.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
            stuck.append(sock)  # never read
        _, err = proc.communicate(timeout=300)
    finally:
        for sock in stuck:
            sock.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert len((out / "detections.jsonl").read_text().splitlines()) == 40
    assert json.loads((out / "report.json").read_text())["frames"] == 40


def test_token_port_in_use_and_bad_address(tmp_path, tiny_onnx, capsys):
    from types import SimpleNamespace

    from pipeline.metrics import Metrics
    from pipeline.serve import ServeSink
    from pipeline.sources import open_sources

    run = SimpleNamespace(sources=open_sources([str(_demo())]), metrics=Metrics())  # what is read
    sink = ServeSink(run, port=0, token="s3cret")
    try:
        port = sink.server.port
        status, body, headers = get(port, "/api/status")
        assert status == 401 and body == b"missing or wrong token\n"
        assert get(port, "/metrics?token=wrong")[0] == 401
        assert get(port, "/metrics?token=s3cret")[0] == 200
        assert get(port, "/healthz", {"Authorization": "Bearer s3cret"})[0] == 200

        earlier = tmp_path / "o" / "detections.jsonl"  # a previous run's results
        earlier.parent.mkdir()
        earlier.write_text('{"frame_index": 0}\n')
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            rc = main(["run", "--model", str(tiny_onnx), "--serve", str(taken), "--quiet",
                       "--no-video", "-o", str(tmp_path / "o"), "--max-frames", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err[-1].startswith(f"dbrt run: error: --serve 127.0.0.1:{taken}: cannot listen")
        assert "Traceback" not in "\n".join(err)
        assert earlier.read_text() == '{"frame_index": 0}\n'  # a run that cannot start keeps it
        assert main(["run", "--serve", "host:port", "--quiet"]) == 2
        assert "--serve: expected [HOST:]PORT" in capsys.readouterr().err
    finally:
        sink.close()
        for source in run.sources:
            source.close()
