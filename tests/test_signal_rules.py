"""The rules every stop-signal handler of dbrt keeps (engine.signals, engine.signal_watch), where
training and the benchmarks install theirs: a handler installed from C (reported as None) is
put back as the default, and an ignored SIGTERM stays ignored."""
import http.server
import signal
import subprocess
import threading

import pytest


def test_training_puts_a_handler_installed_from_c_back_as_the_default(monkeypatch):
    """signal.signal returns None for such a handler; training passed it back to signal.signal,
    which raises TypeError as the training ends."""
    pytest.importorskip("torch")
    from export.train.loop import _StopRequest

    kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)}
    install = signal.signal

    def installed_from_c(signum, handler):
        install(signum, handler)
        return None  # what signal.signal says of a handler installed from C

    try:
        monkeypatch.setattr(signal, "signal", installed_from_c)
        with _StopRequest() as stop:
            assert signal.getsignal(signal.SIGTERM) == stop._handle
        monkeypatch.undo()
        # an ignored one was left alone; the others are back, as the default
        assert {s: signal.getsignal(s) for s in kept} == {
            s: signal.SIG_IGN if kept[s] == signal.SIG_IGN else signal.SIG_DFL for s in kept}
    finally:
        for signum, handler in kept.items():
            install(signum, handler)


class _EndlessMjpeg(http.server.BaseHTTPRequestHandler):
    """/stream/0.mjpg: a three-byte part every 10 ms until the viewer goes."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 3\r\n\r\nabc\r\n")
                self.wfile.flush()
                threading.Event().wait(0.01)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_the_benchmark_viewer_leaves_an_ignored_sigterm_ignored():
    """`trap '' TERM` before benchmarks.serve_overhead: its viewer process, which inherits the
    ignored SIGTERM, installed a handler that ended it at a SIGTERM all the same."""
    from benchmarks.serve_overhead import ViewerProcess

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EndlessMjpeg)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        viewer = ViewerProcess(server.server_address[1])  # SIGTERM ignored, as its parent's
    finally:
        signal.signal(signal.SIGTERM, before)
    try:
        viewer.proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            viewer.proc.wait(timeout=1.0)  # not ended by it
        assert viewer.stop() > 0 and viewer.proc.returncode == 0  # its parent's stop still ends it
    finally:
        if viewer.proc.poll() is None:
            viewer.proc.kill()
        server.shutdown()
        server.server_close()
