"""A real RTMP server for the tests of rtmp:// sources and of --restream rtmp://: nginx with its
RTMP module (Debian / Ubuntu: nginx libnginx-mod-rtmp), run in the foreground on a free port of
127.0.0.1 from a temporary nginx.conf, and a publisher (a process, as OBS or a camera's encoder
is: H.264 in FLV, frames that say their own index, paced in real time).

Two applications: /live plays a stream before it is published (a player waits for its
publisher: nginx-rtmp's default), /strict refuses to (idle_streams off: NetStream.Play.
StreamNotFound, as servers that turn a player away say it).

`python tests/rtmp_server.py publish URL` prints "ready" once started, publishes once a line
comes on its stdin, until killed, and prints "publishing" once the server has taken the stream. `--check` exits 0 where
the server can run (1 with the reason), and does nothing else."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
INSTALL = "apt-get install nginx libnginx-mod-rtmp; .ci/run does"
_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/lib64/nginx/modules", "/usr/share/nginx/modules",
                "/usr/local/nginx/modules", "/etc/nginx/modules")
CONF = """load_module {module};
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        application live {{ live on; }}
        application strict {{ live on; idle_streams off; }}
    }}
}}
"""


def _module() -> Optional[str]:
    for folder in _MODULE_DIRS:
        path = Path(folder) / "ngx_rtmp_module.so"
        if path.is_file():
            return str(path)
    return None


def missing() -> Optional[str]:
    """Why the server cannot run here (with the install hint), or None."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if nginx is None:
        return f"no nginx ({INSTALL})"
    if _module() is None:
        return f"nginx has no RTMP module, ngx_rtmp_module.so ({INSTALL})"
    return None


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class NginxRtmp:
    """nginx-rtmp on `port` of 127.0.0.1, until `stop()`."""

    def __init__(self, port: int):
        self.port = port
        self._publishers = []
        self._dir = tempfile.TemporaryDirectory(prefix="dbrt-nginx-rtmp-")
        folder = self._dir.name
        conf = Path(folder) / "nginx.conf"
        conf.write_text(CONF.format(module=_module(), dir=folder, port=port))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        # -e: its error log before the configuration is read; this and `access_log off` keep
        # it from /var/log/nginx, which only root may write
        self.proc = subprocess.Popen([nginx, "-c", str(conf), "-p", folder, "-e",
                                      f"{folder}/error.log"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30  # a safety net for a server that never starts
        while not _listening(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = self.log()[-2000:]
                self.stop()
                raise RuntimeError(f"nginx-rtmp did not start: {why}{self.proc.stderr.read()}")
            time.sleep(0.05)

    def publish(self, path: str = "live/s") -> "Publisher":
        """A publisher of `path`, stopped with the server."""
        self._publishers.append(Publisher(self.url(path)))
        return self._publishers[-1]

    def url(self, path: str = "live/s") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{path}"

    def log(self) -> str:
        path = Path(self._dir.name) / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for publisher in self._publishers:
            publisher.stop()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()


class Publisher:
    """`python tests/rtmp_server.py publish URL` in a process, which publishes once told to
    (`wait_publishing`), so that its start (its imports, seconds on a loaded machine) can be
    done beforehand (`ready`); `stop()` kills it, the way a publisher that crashes or loses its
    network goes."""

    def __init__(self, url: str):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, __file__, "publish", url], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self._ready = False

    def ready(self) -> "Publisher":
        if not self._ready:
            self._expect("ready")
            self._ready = True
        return self

    def wait_publishing(self) -> None:
        self.ready()
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self._expect("publishing")

    def _expect(self, word: str) -> None:
        said = self.proc.stdout.readline().strip()
        if said != word:
            self.stop()
            raise RuntimeError(f"the publisher did not start: {said} {self.proc.stderr.read()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def publish(url: str, fps: int = 25) -> None:
    """H.264 (a keyframe a second, as encoders set for live streaming) in FLV to `url`, once a
    line comes on stdin, until killed."""
    import av

    from media import frame_image

    print("ready", flush=True)
    sys.stdin.readline()
    with av.open(url, mode="w", format="flv") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps)}
        start, i = time.monotonic(), 0
        while True:
            vframe = av.VideoFrame.from_ndarray(frame_image(i), format="bgr24")
            vframe.pts = i
            container.mux(stream.encode(vframe))
            if i == 0:
                print("publishing", flush=True)  # the header and a frame were taken
            i += 1
            time.sleep(max(0.0, start + i / fps - time.monotonic()))


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(missing())
    if sys.argv[1] == "publish":
        publish(sys.argv[2])
