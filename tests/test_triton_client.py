"""The Triton client backend (engine.triton.runner) against a REAL tritonserver on 127.0.0.1 (the
nvidia-pytriton wheel's, Python backend running the shipped ONNX through ONNX Runtime, in a
repository written by `dbrt triton export`); skipped with a message where .venv-triton is absent.
Inputs are small: the server shares this machine's cores."""
from __future__ import annotations

import importlib.util
import json
import re
import threading
import time

import numpy as np
import pytest

from engine.errors import DbrtWarning, ModelError, ShapeError
from engine.loader import RunnerOptions
from engine.triton.options import TritonOptions
from engine.triton.ports import free_port, free_ports
from engine.triton.server import TritonServer
from pipeline.cli import main
from pipeline.detector import Detector
from pipeline.runner import Pipeline
from pipeline.serve.status import RunStatus
from pipeline.serve.view import LiveFrames
from pipeline.shipped import DEMO_VIDEO

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed: pip install 'dbrt[triton]'")

SIZE = ["--input-size", "128x224"]  # small network inputs: the server shares the two cores


@pytest.fixture(scope="module")
def repository(shipped_triton_repository):
    return shipped_triton_repository


@pytest.fixture(scope="module")
def url(repository, triton_server_factory):
    server = triton_server_factory(repository)
    return f"triton://{server.grpc_url}/dbnet"


def _frames(count=3):
    from pipeline.sources import open_sources

    (source,) = open_sources([str(DEMO_VIDEO)])
    frames = []
    for frame in source:
        if frame.index % 60 == 0:
            frames.append(frame.image[: 200 + 40 * len(frames)])  # three sizes
        if len(frames) == count:
            break
    source.close()
    return frames


def _smaller(spec):
    return spec.replace(limit_side=160)


@pytest.mark.parametrize("shm", ["system", "none"])
def test_the_detector_through_triton_finds_exactly_the_local_boxes(url, shm):
    frames = _frames()
    options = RunnerOptions(triton=TritonOptions(shm=shm))
    with Detector(url, _smaller, options=options) as remote, Detector(None, _smaller) as local:
        assert remote.spec == local.spec  # the ModelSpec came from the config's parameters
        assert remote.runner.max_batch == 8 and remote.runner.shm == shm
        found = 0
        for there, here in zip(remote.detect_batch(frames), local.detect_batch(frames)):
            found += len(here)
            assert np.array_equal(there.polygons, here.polygons)
            assert np.array_equal(there.scores, here.scores)
        assert found >= 6


def test_an_aborted_run_unregisters_its_shared_memory_on_a_live_server(url):
    """Breaking out of the loop aborts the run: it does not wait for requests in flight, but a
    server that is up still lets go of the run's regions (they stayed mapped until it restarted)."""
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url.split("//")[1].split("/")[0])

    def regions():
        return sorted(client.get_system_shared_memory_status(as_json=True).get("regions", {}))

    before = regions()
    options = RunnerOptions(triton=TritonOptions(shm="system"))
    detector = Detector(url, options=options, input_size=(128, 224))
    pipe = Pipeline([str(DEMO_VIDEO)], detector, close_detector=True, max_frames=40)
    for index, _ in enumerate(pipe):
        if index == 3:
            break
    pipe.close()
    assert regions() == before
    client.close()


def test_a_detector_left_open_lets_go_of_its_shared_memory_at_exit(url):
    """A script that never closes its Detector (no `with`, no close()) still unregisters its
    regions and frees them here when it exits (they stayed registered until a server restart)."""
    import glob
    import subprocess
    import sys

    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url.split("//")[1].split("/")[0])

    def regions():
        return sorted(client.get_system_shared_memory_status(as_json=True).get("regions", {}))

    before = regions()
    script = ("import sys, numpy as np; from pipeline.detector import Detector; "
              "from engine.loader import RunnerOptions; from engine.triton.options import "
              "TritonOptions; d = Detector(sys.argv[1], input_size=(128, 224), options="
              "RunnerOptions(triton=TritonOptions(shm='system'))); "
              "d.detect(np.zeros((200, 300, 3), np.uint8)); import os; print(os.getpid())")
    done = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert regions() == before
    assert not glob.glob(f"/dev/shm/dbrt_{done.stdout.strip()}_*")
    client.close()


def test_detect_batch_splits_what_is_more_than_the_served_model_takes(url):
    frames = [_frames(1)[0]] * 9  # one more than max_batch_size 8
    with Detector(url, _smaller) as remote:
        assert [len(d) for d in remote.detect_batch(frames)] == [len(remote.detect(frames[0]))] * 9


def test_dbrt_run_through_triton_writes_the_local_json_lines(url, tmp_path, capsys):
    args = [str(DEMO_VIDEO), "--max-frames", "12", "--no-video", "--quiet", *SIZE]
    assert main(["run", *args, "-o", str(tmp_path / "local")]) == 0
    assert main(["run", *args, "--model", url, "-o", str(tmp_path / "remote")]) == 0
    local = (tmp_path / "local" / "detections.jsonl").read_text()
    assert (tmp_path / "remote" / "detections.jsonl").read_text() == local
    assert len(local.splitlines()) == 12
    report = json.loads((tmp_path / "remote" / "report.json").read_text())
    assert report["failed"] == 0 and report["model"]["server"]["url"] == url
    assert "response" in report["stages"]  # the wait for the server, apart from sending


def _one_error_line(capsys, args) -> str:
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if "error" in line and ": warning: " not in line]  # a warning may quote "last error"
    assert len(err) == 1, err
    return err[0]


def test_an_unreachable_server_a_missing_model_and_a_stray_flag_are_one_line(url, tmp_path, capsys):
    base = ["run", str(DEMO_VIDEO), "--max-frames", "2", "--no-video", "-o", str(tmp_path)]
    dead = f"triton://127.0.0.1:{free_port()}/dbnet"
    line = _one_error_line(capsys, base + ["--model", dead, "--reconnect", "0"])  # else waited for
    assert "cannot reach the Triton server" in line and dead in line
    missing = url.rsplit("/", 1)[0] + "/nope"
    line = _one_error_line(capsys, base + ["--model", missing])
    assert "has no model 'nope'" in line and "dbnet" in line
    line = _one_error_line(capsys, base + ["--triton-shm", "none"])
    assert "--triton-shm applies to a triton://" in line
    line = _one_error_line(capsys, base + ["--model", "triton://127.0.0.1/"])
    assert "bad Triton model URL" in line
    if importlib.util.find_spec("cuda") is None:  # cuda-python: CUDA shared memory
        line = _one_error_line(capsys, base + ["--model", url, "--triton-shm", "cuda"])
        assert f"{url}: CUDA shared memory needs an NVIDIA GPU" in line


def test_a_server_slower_than_the_request_timeout_is_one_line_naming_the_flag(url, tmp_path, capsys):
    """Every request past --triton-timeout: the run gave up with 'last: Deadline Exceeded',
    and nothing said which setting decides how long a request may take."""
    line = _one_error_line(capsys, ["run", str(DEMO_VIDEO), "--max-frames", "30", "--no-video",
                                    "--quiet", *SIZE, "--model", url, "--triton-timeout", "0.001",
                                    "--reconnect", "1", "--reconnect-delay", "0", "-o", str(tmp_path)])
    assert "gave up after 2 outages in a row" in line, line
    assert "Deadline Exceeded, no answer within --triton-timeout 0.001 s" in line, line


def test_the_post_processing_ensemble_is_refused_with_a_hint(triton_server):
    url = f"triton://{triton_server.grpc_url}/dbnet_detect"
    with pytest.raises(ModelError, match=r"dbnet_detect: tensor .* is BYTES .* probability map"):
        Detector(url)


def test_shared_memory_the_server_cannot_map_is_one_line_at_start(url, monkeypatch):
    """A server on another machine cannot open our POSIX shared memory: stand in for it with a
    region whose key does not exist, so the server's shm_open fails the same way."""
    from engine.triton import shm

    made = shm._SystemMemory.create
    monkeypatch.setattr(shm._SystemMemory, "create", lambda self, name, size: shm.Region(
        name, "/dbrt-nowhere", size, made(self, name, size).handle))
    options = RunnerOptions(triton=TritonOptions(shm="system"))
    with pytest.raises(ModelError, match=r"cannot use system shared memory .* --triton-shm none"):
        Detector(url, options=options)
    # asked for nothing in particular ("auto"), a local server that cannot map it (a container
    # without --ipc=host) gets the tensors in the requests, with one warning
    with pytest.warns(DbrtWarning, match="sending tensors in the requests instead"):
        with Detector(url, _smaller) as detector:
            assert detector.runner.shm == "none"
            detector.detect_batch(_frames()[:1])


def test_shapes_the_model_cannot_take_are_refused_before_sending(url):
    with Detector(url) as detector:
        runner = detector.runner
        with pytest.raises(ShapeError, match=r"batch of 9, more than the model's max_batch_size 8"):
            runner.infer(np.zeros((9, 3, 32, 32), np.float32))
        with pytest.raises(ShapeError, match=r"triton://.*input 'images' has shape \(1, 4, 32, 32\)"):
            runner.submit(np.zeros((1, 4, 32, 32), np.float32))
        assert runner.describe()["failed_requests"] == 0  # nothing was sent


class _Outage:
    """A server on fixed ports that a test kills (SIGKILL) and, optionally, starts again."""

    def __init__(self, repository, venv):
        self.ports = dict(zip(("grpc_port", "http_port", "metrics_port"), free_ports(3)))
        self.repository, self.venv = repository, str(venv)
        self.servers = [TritonServer(repository, venv=self.venv, **self.ports).start()]
        self.url = f"triton://{self.servers[0].grpc_url}/dbnet"
        self.killed = threading.Event()
        self.restart_error = None
        self.closing = threading.Event()

    def kill(self, restart_after=None, repository=None) -> None:
        if self.killed.is_set():
            return
        self.killed.set()
        self.servers[0].kill()
        if restart_after is not None:
            def restart():
                time.sleep(restart_after)
                try:
                    self.servers.append(TritonServer(repository or self.repository,
                                                     venv=self.venv, **self.ports).start())
                except Exception as exc:  # noqa: BLE001 - the test reports it
                    self.restart_error = exc
                # the server gets SIGTERM when the thread that started it ends (PDEATHSIG)
                self.closing.wait()
            threading.Thread(target=restart, daemon=True).start()

    def close(self) -> None:
        self.closing.set()
        for server in self.servers:
            server.close()


@pytest.fixture
def outage(repository, triton_venv):
    made = _Outage(repository, triton_venv)
    yield made
    made.close()


def test_a_server_restarted_mid_run_costs_only_the_frames_in_flight(outage):
    options = RunnerOptions(triton=TritonOptions(retries=8, delay=0.2, timeout=20))
    detector = Detector(outage.url, input_size=(128, 224), options=options)

    def kill_at_frame_10(frame, detections):
        if frame.index == 10:
            outage.kill(restart_after=1.0)

    pipe = Pipeline([str(DEMO_VIDEO)], detector, close_detector=True, max_frames=60,
                    callbacks=[kill_at_frame_10])
    status = RunStatus(pipe, LiveFrames())
    reasons, done = set(), threading.Event()

    def watch():  # what /healthz says during the run
        while not done.is_set():
            reasons.add(status.health()[1])
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        pipe.run()
    finally:
        done.set()
        watcher.join()
        assert outage.restart_error is None, f"the server did not restart: {outage.restart_error}"
    assert f"model server {outage.url} reconnecting" in reasons
    assert "model server" not in status.health()[1]  # up again (the file source has ended)
    scraped = _scrape(status)
    assert "dbrt_model_server_reconnects_total 1.0" in scraped
    assert "dbrt_model_server_up 1.0" in scraped
    assert f"dbrt_inference_failed_frames_total {float(pipe.metrics.failed_frames)}" in scraped
    report = pipe.report()
    server = report["model"]["server"]
    assert outage.killed.is_set() and server["reconnects"] == 1
    assert report["failed"] >= 1 and report["failed"] == server["failed_requests"]  # batch 1
    assert report["frames"] + report["failed"] == 60 and report["lost"] == 0
    assert report["failures"] and outage.url in report["failures"][0]


def _scrape(status) -> str:
    prometheus_client = pytest.importorskip("prometheus_client")
    from pipeline.serve.prometheus import registry_for

    return prometheus_client.generate_latest(registry_for(status)).decode()


def test_an_aborted_run_does_not_wait_for_a_server_that_is_away(outage):
    """Reconnecting forever, the server gone: aborting the run (a second Ctrl-C, the consumer
    leaving) cancels the wait and the requests in flight instead of hanging."""
    pipe, thread, errors = _run_until_the_server_is_lost(outage)
    pipe.control.abort()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the aborted run kept waiting for the server"
    assert pipe.metrics.failed_frames >= 1 and not errors


def _run_until_the_server_is_lost(outage):
    """A run reconnecting forever, in a thread, once the server is gone and a frame failed."""
    options = RunnerOptions(triton=TritonOptions(retries=None, delay=0.2))
    detector = Detector(outage.url, input_size=(128, 224), options=options)
    pipe = Pipeline([str(DEMO_VIDEO)], detector, close_detector=True, stop_signals=(),
                    callbacks=[lambda frame, dets: frame.index == 5 and outage.kill()])
    errors = []
    thread = threading.Thread(target=lambda: _run_collecting(pipe, errors))
    thread.start()
    assert outage.killed.wait(60)
    while thread.is_alive() and not pipe.metrics.failed_frames:
        time.sleep(0.05)
    return pipe, thread, errors


def _run_collecting(pipe, errors):
    try:
        pipe.run()
    except Exception as exc:  # noqa: BLE001 - the test looks at them
        errors.append(exc)


def test_dbrt_run_gives_up_with_one_line_when_the_server_stays_away(outage, tmp_path, capsys):
    out = tmp_path / "run"
    code = {}

    def run():
        code["rc"] = main(["run", str(DEMO_VIDEO), "--model", outage.url, "--no-video", "--quiet",
                           "--reconnect", "2", "--reconnect-delay", "0.1", "--triton-timeout", "10",
                           "--input-size", "256x448", "-o", str(out)])

    thread = threading.Thread(target=run)
    thread.start()
    jsonl = out / "detections.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and thread.is_alive():
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 5:
            outage.kill()
            break
        time.sleep(0.05)
    thread.join(timeout=120)
    assert not thread.is_alive(), "dbrt run hung after the server went away"
    assert outage.killed.is_set(), "the run ended before the server could be killed"
    assert code["rc"] == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if "error" in line and ": warning: " not in line]  # a warning may quote "last error"
    assert len(err) == 1 and f"lost {outage.url}: gave up after 2 reconnect attempts" in err[0], err
    report = json.loads((out / "report.json").read_text())
    assert report["failed"] >= 1 and report["frames"] >= 5
    # it said "cancelled", as for a run the user aborted, and not why the run ended
    server = report["model"]["server"]
    assert server["state"] == "failed" and "gave up after 2 reconnect attempts" in server["error"]


def test_dbrt_run_says_the_server_lost_and_back_as_it_happens(outage, tmp_path, capsys):
    """A live stream's outage is said as it happens (a service's journal); the model server's
    was said by nothing until the run ended, maybe days later, with its counters."""
    out, code = tmp_path / "run", {}

    def run():
        code["rc"] = main(["run", str(DEMO_VIDEO), "--model", outage.url, "--no-video", "--quiet",
                           "--max-frames", "40", "--reconnect-delay", "0.2", "--input-size", "256x448",
                           "-o", str(out)])

    thread = threading.Thread(target=run)
    thread.start()
    jsonl, deadline = out / "detections.jsonl", time.monotonic() + 120
    while time.monotonic() < deadline and thread.is_alive():
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 5:
            outage.kill(restart_after=1.0)
            break
        time.sleep(0.05)
    thread.join(timeout=180)
    assert not thread.is_alive() and outage.killed.is_set() and outage.restart_error is None
    assert code["rc"] == 2  # the frames in flight failed
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 2, warned
    assert f"warning: lost {outage.url} (" in warned[0] and "retrying it up to 10 times" in warned[0]
    assert re.search(rf"warning: {re.escape(outage.url)} is back after [\d.]+ s "
                     r"\(\d+ reconnect attempts?\)", warned[1]), warned


def test_the_batch_follows_the_served_models_max_batch_size(url, tmp_path):
    from media import FakeDetector

    with Detector(url, _smaller) as detector:  # max_batch_size 8
        sources = [str(DEMO_VIDEO)] * 9
        pipe = Pipeline(sources, detector, max_frames=1)
        assert pipe.batch == 8
        pipe.close()
        with pytest.raises(ModelError, match="--batch 9: the model takes at most 8"):
            Pipeline([str(DEMO_VIDEO)], detector, batch=9)
    local = Pipeline([str(DEMO_VIDEO)], FakeDetector(), batch=9)
    assert local.batch == 9  # a local model: no cap
    local.close()


def test_shared_memory_that_does_not_fit_is_one_error_not_a_crash(monkeypatch):
    """A region is only sized; writing past what /dev/shm has free killed the client (SIGBUS,
    no message: Docker's 64 MB /dev/shm). Its pages are now reserved when it is made."""
    import errno
    import os

    from engine.triton import shm

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    memory = shm.memory("system", client=None, timeout=1.0)
    with pytest.raises(ModelError, match="--shm-size.*--triton-shm none"):
        memory.create("dbrt_test_full", 8 << 20)
    assert not os.path.exists("/dev/shm/dbrt_test_full")  # nothing left behind


def test_a_region_still_in_use_does_not_keep_the_others_registered():
    """Only an error that says the server is gone stops unregistering: one region a cancelled
    request held past the wait is freed here, and the others are still let go on the server."""
    from engine.triton.shm import Region, SlotPool

    class Memory:
        kind, timeout = "system", 0.05

        def __init__(self):
            self.unregistered, self.destroyed = [], []

        def unregister(self, region):
            if region.name == "r0":
                raise RuntimeError("Cannot unregister shared memory region 'r0', it is currently in use.")
            self.unregistered.append(region.name)

        def destroy(self, region):
            self.destroyed.append(region.name)

    memory = Memory()
    pool = SlotPool(memory, 3, "m")
    for index, slot in enumerate(pool.slots):
        slot.regions["images"] = Region(f"r{index}", f"/r{index}", 64, None)
    pool.close(drain_timeout=0, unregister=True)
    assert memory.unregistered == ["r1", "r2"] and memory.destroyed == ["r0", "r1", "r2"]


def test_a_server_that_comes_back_with_another_model_ends_the_run_in_one_line(outage, tmp_path):
    """The client kept the settings it read at start: a model now shipped with other
    thresholds (or another max batch) gave the old model's boxes, or a refused batch."""
    other = tmp_path / "other"
    assert main(["triton", "export", "-o", str(other), "--box-thresh", "0.9"]) == 0
    options = RunnerOptions(triton=TritonOptions(retries=20, delay=0.2, timeout=20))
    detector = Detector(outage.url, input_size=(128, 224), options=options)
    pipe = Pipeline([str(DEMO_VIDEO)], detector, close_detector=True, max_frames=200,
                    callbacks=[lambda frame, dets: frame.index == 5 and outage.kill(
                        restart_after=0.5, repository=other)])
    with pytest.raises(ModelError, match="came back with another model .parameters differ"):
        pipe.run()
    assert outage.restart_error is None


def test_the_first_ctrl_c_does_not_wait_for_a_server_that_is_away(outage):
    """A drain (the first Ctrl-C, SIGTERM) waited out the whole reconnect back-off (53 s in
    the repro) and then failed the run; now the frames that would wait fail at once."""
    pipe, thread, errors = _run_until_the_server_is_lost(outage)
    pipe.stop()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the stopping run kept waiting for the server"
    assert not errors and pipe.metrics.failed_frames >= 1


class _StuckMemory:
    """Shared memory whose server answers no unregister: hung (each call waits its timeout and
    fails) or still using every region (a cancelled request Triton has not finished)."""

    kind = "system"

    def __init__(self, hung: bool, timeout: float = 5.0):
        self.hung, self.timeout = hung, timeout
        self.call_timeouts, self.destroyed = [], []

    def unregister(self, region):
        self.call_timeouts.append(self.timeout)
        if self.hung:
            raise RuntimeError("Deadline Exceeded")
        raise RuntimeError(f"Cannot unregister shared memory region '{region.name}', it is currently in use.")

    def destroy(self, region):
        self.destroyed.append(region.name)


def _stuck_pool(memory):
    from engine.triton.shm import Region, SlotPool

    pool = SlotPool(memory, 2, "m")
    for index, slot in enumerate(pool.slots):
        for tensor in ("images", "prob"):
            slot.regions[tensor] = Region(f"r{index}{tensor}", f"/r{index}{tensor}", 64, None)
    return pool


def test_an_aborted_run_lets_go_of_a_hung_servers_regions_within_its_stop_timeout():
    """SIGTERM with the server hung: the drain's 5 s, then the first unregister waited the
    control calls' 5 s for a server that answers nothing (dbrt run exited after 11.7 s, past
    docker stop's 10 s, whose SIGKILL loses report.json). An aborted run's calls now wait at
    most ABORTED_CLOSE_S."""
    import weakref

    from engine.triton.runner import ABORTED_CLOSE_S, TritonRunner

    class Client:
        def close(self):
            pass

    runner = TritonRunner("triton://127.0.0.1:1/dbnet")
    memory = _StuckMemory(hung=True)
    runner._pool, runner._client = _stuck_pool(memory), Client()
    runner._let_go_later = weakref.finalize(runner, lambda: None)
    runner._healthy.set()  # no request failed: the server seemed up when the run was aborted
    runner.cancel()
    runner._deactivate()
    assert memory.call_timeouts == [ABORTED_CLOSE_S]  # then the others are freed here only
    assert len(memory.destroyed) == 4


def test_an_aborted_close_waits_for_regions_in_use_once_not_once_per_region(monkeypatch):
    """A live server still busy with the cancelled requests refuses to unregister their
    regions: each region waited up to the control calls' timeout in turn; `limit` bounds
    them all together (time is simulated: every look at the clock takes 0.25 s)."""
    from engine.triton import shm

    class Clock:
        now = 0.0

        def monotonic(self):
            self.now += 0.25
            return self.now

        def sleep(self, seconds):
            pass

    monkeypatch.setattr(shm, "time", Clock())
    memory = _StuckMemory(hung=False)
    _stuck_pool(memory).close(drain_timeout=0, unregister=True, limit=1.0)
    assert len(memory.call_timeouts) <= 4 and len(memory.destroyed) == 4, memory.call_timeouts


def test_clients_with_one_pid_in_containers_of_their_own_name_their_regions_apart(monkeypatch):
    """Each dbrt in a container of its own is pid 1; sharing the server's IPC namespace, the
    second one's regions took the first one's names: every request failed with 'unable to
    create the shared memory region'."""
    import itertools
    import os

    from engine.triton import shm

    class Memory:
        kind, timeout = "system", 1.0

        def create(self, name, size):
            return shm.Region(name, f"/{name}", size, None)

        def register(self, region):
            pass

    monkeypatch.setattr(os, "getpid", lambda: 1)
    names = []
    for _container in range(2):
        monkeypatch.setattr(shm, "_serial", itertools.count())  # a process of its own
        pool = shm.SlotPool(Memory(), 1, "dbnet")
        names.append(pool.region(pool.slots[0], "images", 64).name)
    assert names[0] != names[1], names


def test_regions_a_slow_server_still_uses_stay_registered_when_the_client_recovers():
    """Requests past --triton-timeout on a slow server: the server still computes them, so it
    refuses to unregister their regions, and registering them again failed with "already in
    manager": the recovery counted as a failed one, and the run gave up on a server that was
    there all along."""
    class Memory(_StuckMemory):
        def register(self, region):
            raise RuntimeError(f"shared memory region '{region.name}' already in manager")

    memory = Memory(hung=False)
    pool = _stuck_pool(memory)
    pool.register_again()  # the server keeps them registered: nothing to do
    with pytest.raises(RuntimeError, match="refused"):
        def refused(region):
            raise RuntimeError("refused")
        memory.register = refused
        pool.register_again()
