"""Start and stop a local Triton Inference Server (the `tritonserver` of the nvidia-pytriton wheel).

The wheel ships `tritonserver` with the Python backend only, so it runs Python-backend models (an
ONNX model through ONNX Runtime, post-processing) on any Linux machine: a CPU trial of a model
repository and the real server of the tests. It pins numpy < 2, so it lives in a virtual
environment of its own (`make triton-venv` makes `.venv-triton`). What it needs to start:

* the Python backend's stub built for that environment's Python, copied into a `python` folder of
  a backends directory (`--backend-directory`);
* `LD_LIBRARY_PATH` with that Python's LIBDIR (else the stub links another libpython and crashes)
  and the wheel's own libraries;
* the environment's site-packages as the FIRST `PYTHONPATH` entry: only that one reaches the stub,
  so models get further paths as config parameters;
* explicit loopback ports (HTTP, gRPC, metrics), so tests and trials never collide or listen
  outside.

`TritonServer` is a context manager: it waits until `/v2/health/ready` answers 200 and always stops
the server (SIGTERM, then SIGKILL). Its work folder goes with it, and each start removes those that
killed launchers left (engine/triton/workdirs.py).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Optional, Sequence

from ..errors import DbrtError
from .ports import PORT_CLASH, free_ports, why_port_is_taken
from .workdirs import make_workdir, remove_dead_workdirs, remove_workdir

_SERVERS = count()  # a serial per server of this process (their shared memory names)

DEFAULT_VENV = ".venv-triton"
CHECKOUT = Path(__file__).resolve().parents[2]  # where `make triton-venv` makes DEFAULT_VENV
VENV_HINT = "make triton-venv (or: python3 -m venv .venv-triton && .venv-triton/bin/pip install " \
            "nvidia-pytriton==0.7.0 'numpy<2' onnxruntime opencv-python-headless pyclipper)"


def default_venv() -> str:
    """DEFAULT_VENV in the working folder, else the one `make triton-venv` made in this
    checkout (so that a command run from another folder finds it)."""
    here = Path(DEFAULT_VENV)
    made = CHECKOUT / DEFAULT_VENV
    return str(made) if not here.exists() and made.exists() else DEFAULT_VENV


class TritonServerError(DbrtError):
    """The server cannot be found, does not start, or a repository it was given is unusable."""


class _PortClash(TritonServerError):
    """The server did not start because one of its ports was taken."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of a pytriton wheel's server are, inside one virtual environment."""

    python: Path           # the environment's interpreter
    python_version: str    # "3.11": picks the stub
    libdir: Path           # that Python's LIBDIR (libpython)
    site_packages: Path
    server_dir: Path       # .../pytriton/tritonserver (bin/, backends/, python_backend_stubs/)
    libs: Path             # .../nvidia_pytriton.libs

    @property
    def executable(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    @property
    def stub(self) -> Path:
        return self.server_dir / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"

    @classmethod
    def find(cls, venv: Optional[str] = None) -> "TritonInstall":
        """The server in virtual environment `venv` (default: `default_venv()`);
        TritonServerError saying how to make it."""
        venv = venv or default_venv()
        python = Path(venv) / "bin" / "python"
        if not python.is_file():
            raise TritonServerError(f"no virtual environment with Triton at {venv}: {VENV_HINT}")
        query = ("import sys, sysconfig, site; print(f'{sys.version_info[0]}.{sys.version_info[1]}');"
                 "print(sysconfig.get_config_var('LIBDIR')); print(sysconfig.get_paths()['purelib'])")
        try:
            out = subprocess.run([str(python), "-c", query], check=True, capture_output=True,
                                 text=True, timeout=60).stdout.split("\n")
        except (OSError, subprocess.SubprocessError) as exc:
            raise TritonServerError(f"cannot run {python}: {exc}") from exc
        version, libdir, site = out[0], Path(out[1]), Path(out[2])
        install = cls(python, version, libdir, site, site / "pytriton" / "tritonserver",
                      site / "nvidia_pytriton.libs")
        missing = [p for p in (install.executable, install.stub) if not p.is_file()]
        if missing:
            raise TritonServerError(f"{venv} has no tritonserver for Python {version} "
                                    f"({missing[0]} is missing): {VENV_HINT}")
        return install

    def environment(self, base: Optional[dict] = None) -> dict:
        """The server's environment (see the module docstring for why each entry)."""
        env = dict(os.environ if base is None else base)
        libs = [str(self.libdir), str(self.libs)]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(libs)
        env["PYTHONPATH"] = str(self.site_packages)
        env["PATH"] = f"{self.python.parent}:{env.get('PATH', '')}"
        env.pop("PYTHONHOME", None)
        return env

    def backends_dir(self, where: Path) -> Path:
        """A backends directory under `where` whose python/ holds the stub for this Python."""
        backends = where / "backends"
        shutil.copytree(self.server_dir / "backends", backends, dirs_exist_ok=True)
        shutil.copy2(self.stub, backends / "python" / "triton_python_backend_stub")
        return backends


# Messages of a CPU-only start (no CUDA driver, NVML or DCGM), not the reason anything failed.
_NOISE = re.compile(r"CudaDriverHelper|NVML|DCGM|pinned|CUDA driver", re.I)
_GLOG = re.compile(r"^[EW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ")


def _error_message(line: str) -> Optional[str]:
    """The message of an error line of tritonserver's output, else None."""
    line = line.strip().strip("|").strip()
    if _NOISE.search(line):
        return None
    if line.startswith("E") and _GLOG.match(line):
        return _GLOG.sub("", line).strip('"')
    if "UNAVAILABLE:" in line or line.startswith("error:") or "libprotobuf ERROR" in line:
        return re.sub(r"^\[libprotobuf ERROR [^\]]*\] ", "", re.sub(r"\s*\|\s*", " ", line))
    return None


def _terminate_with_parent() -> None:
    """In the server's process, before exec: SIGTERM it when the caller dies, so a crashed or
    killed caller leaves no server behind (Linux; elsewhere a no-op). The kernel ties this to the
    *thread* that forked, so it is only set up from the main thread (see TritonServer.start)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_METRICS_FAILED = "failed to start Metrics service"
_START_ATTEMPTS = 3  # with ports of our own picking


class TritonServer:
    """`tritonserver` on `repository`, bound to `host` with free (or given) ports.

    with TritonServer("repo") as server:
        server.grpc_url   # "127.0.0.1:PORT" for tritonclient.grpc
        server.http_url   # "http://127.0.0.1:PORT"

    `models`: load only these (explicit model control) instead of every model in the repository.
    `ready_timeout`: seconds to wait for /v2/health/ready. The server's output goes to `log`
    (a file under the server's work folder unless given); its tail is in every start error.
    `install`: another server than `venv`'s (an object with `executable`, `environment()` and
    `backends_dir(workdir)`, e.g. an installed tritonserver with the TensorRT backend).
    """

    def __init__(self, repository, venv: Optional[str] = None, host: str = "127.0.0.1",
                 http_port: int = 0, grpc_port: int = 0, metrics_port: int = 0,
                 models: Optional[Sequence[str]] = None, ready_timeout: float = 120.0,
                 log: Optional[Path] = None, verbose: int = 0, extra_args: Sequence[str] = (),
                 install=None):
        self.repository = Path(repository)
        if not self.repository.is_dir():
            raise TritonServerError(f"model repository {repository} is not a folder")
        if not any(child.is_dir() for child in self.repository.iterdir()):
            raise TritonServerError(f"model repository {repository} holds no model folders "
                                    "(make one with dbrt triton export MODEL -o REPO)")
        self.install = install or TritonInstall.find(venv)
        self.host = host
        given = [port for port in (http_port, grpc_port, metrics_port) if port]
        if len(set(given)) < len(given):
            raise TritonServerError(f"the HTTP, gRPC and metrics ports must differ (given: "
                                    f"{http_port}, {grpc_port}, {metrics_port}; 0 picks a free one)")
        for port, what in ((http_port, "HTTP"), (grpc_port, "gRPC"), (metrics_port, "metrics")):
            reason = port and why_port_is_taken(host, port)
            if reason:  # the server's own message is a page of gRPC internals
                raise TritonServerError(f"the {what} port {host}:{port} cannot be used ({reason})")
        self._given_ports = {"http_port": http_port, "grpc_port": grpc_port,
                             "metrics_port": metrics_port}
        self._pick_ports()
        self.models = list(models or [])
        self.ready_timeout = ready_timeout
        self.verbose = verbose
        self.extra_args = list(extra_args)
        self._workdir: Optional[Path] = None
        self._workdir_lock = None  # held while the folder is in use (workdirs.py)
        # the Python backend's shared memory regions get a name of ours, so that those of a
        # killed server (which cannot remove them itself) are found and removed by stop(); not
        # by the pid alone, which a launcher in another container sharing /dev/shm may have too
        self._shm_prefix = f"dbrt_triton_{os.getpid()}_{os.urandom(4).hex()}_{next(_SERVERS)}_"
        self._given_log = Path(log) if log else None
        self.log_path = self._given_log
        self._log_file = None
        self.process: Optional[subprocess.Popen] = None

    def _pick_ports(self) -> None:
        """The given ports, and distinct free ones for the others."""
        wanted = [name for name, port in self._given_ports.items() if not port]
        picked = dict(zip(wanted, free_ports(len(wanted), self.host)))
        for name, port in self._given_ports.items():
            setattr(self, name, port or picked[name])

    @property
    def grpc_url(self) -> str:
        return f"{self._local_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self._local_host}:{self.http_port}"

    @property
    def _local_host(self) -> str:
        """Where this machine reaches the server (a wildcard address is not one to connect to)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def metrics_url(self) -> str:
        return f"http://{self._local_host}:{self.metrics_port}/metrics"

    def command(self, backends: Path) -> list:
        cmd = [str(self.install.executable), f"--model-repository={self.repository.resolve()}",
               f"--backend-directory={backends}", f"--http-address={self.host}",
               f"--http-port={self.http_port}", f"--grpc-address={self.host}",
               f"--grpc-port={self.grpc_port}", f"--metrics-address={self.host}",
               f"--metrics-port={self.metrics_port}", "--allow-metrics=true",
               f"--log-verbose={self.verbose}", "--exit-on-error=true", "--strict-readiness=true",
               f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}"]
        if self.models:
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={name}" for name in self.models]
        return cmd + self.extra_args

    def start(self) -> "TritonServer":
        """Start the server and wait until it is ready; on failure stop it and raise. A port of
        our own picking that another program took in the meantime is picked again."""
        own_ports = not all(self._given_ports.values())
        for _ in range(_START_ATTEMPTS - 1):
            try:
                return self._start_once()
            except _PortClash:
                if not own_ports:
                    raise
                self._pick_ports()
        return self._start_once()

    def _start_once(self) -> "TritonServer":
        remove_dead_workdirs()
        self._workdir, self._workdir_lock = make_workdir()
        backends = self.install.backends_dir(self._workdir)
        self.log_path = self._given_log or self._workdir / "tritonserver.log"
        self._log_file = open(self.log_path, "wb")
        lock = self._workdir_lock.fd  # inherited: held while the server runs (workdirs.py)
        self.process = subprocess.Popen(self.command(backends), stdout=self._log_file,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=self.install.environment(), start_new_session=True,
                                        preexec_fn=self._death_signal(),
                                        pass_fds=() if lock is None else (lock,))
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _start_error(self, what: str) -> TritonServerError:
        error = _PortClash if PORT_CLASH.search(self.log_text()) else TritonServerError
        return error(f"{what}: {self.log_tail()}")

    @staticmethod
    def _death_signal():
        """The parent-death signal only from the main thread: started from a worker thread the
        server would get SIGTERM as soon as that thread ends; close() / `with` stop it there."""
        return _terminate_with_parent if threading.current_thread() is threading.main_thread() else None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._start_error(f"tritonserver exited with code "
                                        f"{self.process.returncode} before it was ready")
            if self.is_ready():
                if _METRICS_FAILED in self.log_text():  # the server runs on without them
                    raise self._start_error("tritonserver serves no metrics")
                if self._answers(self.metrics_url):  # it may start after readiness
                    return
            time.sleep(0.2)
        raise TritonServerError(f"tritonserver was not ready after {self.ready_timeout:g} s: "
                                f"{self.log_tail()}")

    def is_ready(self) -> bool:
        return self._answers(f"{self.http_url}/v2/health/ready")

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_text(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def log_tail(self) -> str:
        """The server's first and last error messages (the cause and the outcome) as one line."""
        found = []
        for line in self.log_text().splitlines():
            message = _error_message(line)
            message = message and message.split("\\n")[0].strip()  # a Python traceback follows
            if message and message not in found:
                found.append(message)
        picked = found[:1] + found[-1:] if len(found) > 1 else found
        if picked:
            return " | ".join(picked)
        # some refusals are plain text after the usage page
        last = next((line.strip() for line in reversed(self.log_text().splitlines())
                     if line.strip() and not _NOISE.search(line)), None)
        return last or "(no output)"

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after `timeout` s; the server's exit code (None if never started).
        Python-backend stubs still alive after the server (it was killed) are killed too."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self._signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    self.process.wait()
            self._signal(signal.SIGKILL)  # leftovers of the server's own process group
            code = self.process.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir / "backends", ignore_errors=True)
        for region in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
            region.unlink(missing_ok=True)  # left by a server that was killed
        return code

    def kill(self) -> None:
        """SIGKILL the server and its stubs at once (a crash, e.g. to test clients' reconnect);
        stop() or close() still tidy up."""
        if self.process is not None and self.process.poll() is None:
            self._signal(signal.SIGKILL)
            self.process.wait()

    def _signal(self, signum: int) -> None:
        try:  # the server's own process group: Python-backend stubs go with it
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Stop the server and remove its work folder (the log too, unless it was given)."""
        self.stop()
        if self._workdir is not None:
            remove_workdir(self._workdir, self._workdir_lock)
            self._workdir = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
