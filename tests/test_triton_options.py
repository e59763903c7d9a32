"""The Triton client's settings without a server: triton:// URLs, shared memory choice, back-off,
and what the loader and the command line refuse (one line each)."""
from __future__ import annotations

import re

import pytest

from engine.errors import ModelError
from engine.loader import RunnerOptions, load_runner
from engine.triton.options import TritonOptions, TritonUrl
from pipeline.cli import main

URL = "triton://127.0.0.1:8001/dbnet"


def test_urls_parse_and_say_whether_shared_memory_can_be_used():
    url = TritonUrl.parse("triton://localhost/dbnet/2")
    assert (url.address, url.model, url.version, url.is_local) == ("localhost:8001", "dbnet", "2", True)
    assert str(url) == "triton://localhost:8001/dbnet/2"
    assert TritonUrl.parse("triton://[::1]:9001/m").address == "[::1]:9001"
    assert TritonOptions().shm_for(url) == "system"
    assert TritonOptions().shm_for(TritonUrl.parse("triton://gpu-box:9001/db")) == "none"
    assert TritonOptions(shm="none").shm_for(url) == "none"
    for bad in ("triton://", "triton://host:99999/m", "triton://host/a/b/c", "http://host/m",
                "triton://host:0/m"):
        with pytest.raises(ModelError, match="bad Triton model URL"):
            TritonUrl.parse(bad)


@pytest.mark.parametrize("text, why", [
    ("triton://user:secret@host/dbnet", "a user or password"),
    ("triton://host/dbnet?token=abc", "no ?query or #fragment"),
    ("triton://host/dbnet#v2", "no ?query or #fragment")])
def test_a_login_or_a_query_in_the_url_is_refused_saying_so(text, why, capsys):
    """A login was refused with the URL shown masked (triton://host/dbnet: it looked right),
    and a ?token=... became part of the model's name."""
    with pytest.raises(ModelError, match=f"bad Triton model URL.*{re.escape(why)}") as caught:
        TritonUrl.parse(text)
    assert "secret" not in str(caught.value) and "abc" not in str(caught.value)


def test_the_back_off_doubles_up_to_its_cap_and_stops_after_the_retries():
    assert list(TritonOptions(retries=6, delay=0.5).delays()) == [0.5, 1, 2, 4, 8, 8]
    assert list(TritonOptions(retries=4, delay=0).delays()) == [0, 0.2, 0.4, 0.8]  # not all 0
    forever = TritonOptions(retries=None, delay=1).delays()
    assert [next(forever) for _ in range(5)] == [1, 2, 4, 8, 8]
    for bad in (dict(shm="gpu"), dict(inflight=0), dict(timeout=0), dict(retries=-1)):
        with pytest.raises(ModelError):
            TritonOptions(**bad)


def test_the_loader_refuses_local_options_for_a_served_model_and_the_reverse(tmp_path):
    with pytest.raises(ModelError, match=r"the Triton model triton://.* cannot honour .*threads=2"):
        load_runner(URL, options=RunnerOptions(threads=2))
    with pytest.raises(ModelError, match="picks its backend and device"):
        load_runner(URL, device="cuda")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ModelError, match="ONNX Runtime cannot honour the option.*triton="):
        load_runner(model, options=RunnerOptions(triton=TritonOptions()))


def test_a_served_model_is_not_loaded_before_it_is_activated():
    runner = load_runner(URL, options=RunnerOptions(triton=TritonOptions(inflight=3)))
    assert runner.name == "triton" and runner.asynchronous and not runner.is_active
    assert runner.options.inflight == 3 and runner.shm == "system"


@pytest.mark.parametrize("flags, message", [
    (["--triton-shm", "none"], "--triton-shm applies to a triton://HOST:PORT/NAME --model only"),
    (["--triton-timeout", "5"], "--triton-timeout applies to a triton://"),
    (["--model", URL, "--triton-inflight", "0"], "argument --triton-inflight: must be an integer >= 1"),
    (["--model", URL, "--triton-timeout", "0"], "argument --triton-timeout: must be a number > 0"),
    (["--model", URL, "--triton-shm", "gpu"], "argument --triton-shm: invalid choice"),
    (["--model", URL, "--threads", "2"], "cannot honour the option(s) threads=2"),
])
def test_dbrt_run_refuses_triton_flags_that_do_not_fit_with_one_line(flags, message, tmp_path, capsys):
    assert main(["run", "--max-frames", "1", "--no-video", "-o", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_the_requests_in_flight_when_a_server_goes_away_count_as_one_outage():
    """With several requests in flight, one outage fails them all at once; giving up must follow
    the outages (and the reconnect attempts), not how many requests happened to be in flight."""
    from engine.triton.runner import TritonRunner  # needs no tritonclient until activated

    runner = TritonRunner("triton://127.0.0.1:1/dbnet", TritonOptions(inflight=4, retries=2))
    runner._healthy.set()  # as after activation
    for _ in range(4):
        runner._request_failed(RuntimeError("Connection refused"))
    assert runner.failed_requests == 4 and runner._failed_in_a_row == 1
    assert runner.state == "reconnecting"


def test_every_flag_a_help_text_names_is_a_flag_of_that_command():
    """`dbrt eval --help` sent a failed Triton request to "the --reconnect back-off", a flag
    only `dbrt run` has (and to report.json, which eval does not write). Flags of other tools
    (trtexec --versionCompatible) and commands quoted with their name are left aside; a
    command's description may name its subcommands' flags."""
    import argparse
    import re

    from pipeline.cli import build_parser

    def options(parser):
        for action in parser._actions:
            yield from action.option_strings
            for sub in getattr(action, "choices", None) or {}:
                if isinstance(action, argparse._SubParsersAction):
                    yield from options(action.choices[sub])

    def commands(parser, prefix="dbrt"):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"{prefix} {name}", sub
                    yield from commands(sub, f"{prefix} {name}")

    wrong = []
    for name, parser in commands(build_parser()):
        flags = set(options(parser))
        texts = [parser.description or ""] + [action.help or "" for action in parser._actions]
        for text in texts:
            text = re.sub(r"(`dbrt [^`]*`|dbrt \w+ --\w+|trtexec --\w+|tritonserver --[\w-]+)", "", text)
            wrong += [f"{name}: {flag}" for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", text)
                      if flag not in flags]
    assert not wrong, f"help texts name flags their command lacks: {wrong}"
