"""`dbrt run --mqtt mqtts://...?ca=FILE` against a real Mosquitto TLS listener whose certificate
a throwaway CA (made here with openssl) signed: events arrive over TLS; another CA's
certificate ends the run with one error line. Skips where mosquitto or openssl is absent."""
from __future__ import annotations

import json
import shutil

import pytest

from pipeline.cli import main

from media import until
from serve_helpers import (Mosquitto, Subscriber, dbrt, mosquitto_or_skip, server_certificate,
                           throwaway_ca)

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'dbrt[serve]')")

TOPIC = "dbrt/test/tls"


@pytest.fixture
def tls_broker(tmp_path):
    binary = mosquitto_or_skip()
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (it makes the test's certificates)")
    ca = throwaway_ca(tmp_path, "test-ca")
    cert, key = server_certificate(tmp_path, ca)
    server = Mosquitto(binary, tmp_path, tls=(ca[0], cert, key)).start()
    server.ca = ca[0]
    yield server
    server.stop()


def test_events_arrive_over_tls_with_the_broker_ca(tmp_path, tls_broker, tiny_onnx):
    subscriber = Subscriber(tls_broker.port, TOPIC)  # on the broker's plain listener
    out = tmp_path / "out"
    url = f"mqtts://127.0.0.1:{tls_broker.tls_port}/{TOPIC}?ca={tls_broker.ca}"
    proc = dbrt("run", "--model", str(tiny_onnx), "--max-frames", "12", "--mqtt", url,
                "--no-video", "--quiet", "-o", str(out))
    try:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        report = json.loads((out / "report.json").read_text())
        assert report["mqtt"]["acked_total"] == 12 and report["mqtt"]["dropped_total"] == 0
        # acknowledged by the broker: on their way to the subscriber, not necessarily there yet
        until(lambda: len(subscriber.received()) >= 12, "the 12 events at the subscriber", 60)
    finally:
        subscriber.close()
    received = subscriber.received()
    assert sorted(e["frame_index"] for e in received) == list(range(12))
    assert {e["type"] for e in received} == {"detections"}


def test_a_broker_certificate_from_another_ca_is_one_error_line(tmp_path, tls_broker, tiny_onnx):
    other_ca, _ = throwaway_ca(tmp_path, "other-ca")
    url = f"mqtts://127.0.0.1:{tls_broker.tls_port}/{TOPIC}?ca={other_ca}"
    proc = dbrt("run", "--model", str(tiny_onnx), "--mqtt", url, "--no-video", "--quiet",
                "-o", str(tmp_path / "out"))
    _, err = proc.communicate(timeout=300)
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert len(errors) == 1, err
    assert errors[0].startswith(f"dbrt run: error: --mqtt mqtts://127.0.0.1:{tls_broker.tls_port}/"
                                f"{TOPIC}: the broker's TLS certificate was refused (")
    assert errors[0].endswith("); is ca= the CA that signed it?"), err  # OpenSSL's words between


@pytest.mark.parametrize("query, message", [
    ("?ca=/no/such/ca.pem", "ca=/no/such/ca.pem: no such file"),
    ("?cafile=x", "unknown option 'cafile'"),
])
def test_bad_ca_option_is_one_line(query, message, capsys):
    assert main(["run", "--mqtt", f"mqtts://127.0.0.1/t{query}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --mqtt" in err[0] and message in err[0], err


def test_ca_needs_mqtts(tmp_path, capsys):
    ca = tmp_path / "ca.pem"
    ca.write_text("not used")
    assert main(["run", "--mqtt", f"mqtt://127.0.0.1/t?ca={ca}", "--quiet"]) == 2
    assert "?ca=FILE is for TLS: use mqtts://" in capsys.readouterr().err


def test_a_ca_file_that_is_not_pem_is_one_line(tmp_path, tiny_onnx, capsys):
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    rc = main(["run", "--model", str(tiny_onnx), "--mqtt", f"mqtts://127.0.0.1/t?ca={ca}",
               "--quiet", "--no-video", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("dbrt run: error: --mqtt mqtts://127.0.0.1:8883/t: ca=")
    assert "not a PEM CA certificate" in err[-1] and "Traceback" not in "\n".join(err)
