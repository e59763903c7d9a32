"""`dbrt` command line: a thin shell over the library.

Subcommands live one per module in `pipeline/commands/`; each module defines
`NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`, and imports heavy packages only
inside `run`, so `dbrt --help` works on a machine without torch, cupy, av or tensorrt.
User mistakes (DbrtError, missing optional packages, missing files) end with one line on stderr
and a non-zero exit; Ctrl-C exits with 130, SIGTERM (where a command handles it) with 143;
output piped into a reader that stops before it ends (`dbrt eval --dataset DIR | head -1`)
ends quietly with 141.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import select
import signal
import sys
import warnings
from typing import List, Optional

from engine.errors import DbrtError, DbrtWarning
from engine.lazy import MissingDependency

from .commands._validate import OneLineParser
from .sources.base import without_credentials

from . import commands as _commands_pkg


def _command_modules():
    mods = []
    for info in pkgutil.iter_modules(_commands_pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{_commands_pkg.__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 50), m.NAME))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only where it says something: not for None / False (an unset
    option, an off switch) and not where the help text already gives it ("(default ...",
    "default: ...")."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if unset or "(default" in text or "default:" in text:  # `is`: a default of 0 says something
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dbrt", description="Real-time scene-text detection on video with DBNet and TensorRT.")
    parser.add_argument("--version", action="version", version="dbrt 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=_HelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _one_line_warnings(command: str, show_other):
    """dbrt's own warnings (DbrtWarning) as one 'dbrt COMMAND: warning: ...' line on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DbrtWarning):
            print(f"dbrt {command}: warning: {message}", file=sys.stderr)
        else:
            show_other(message, category, filename, lineno, file, line)

    return show


def _quiet_opencv() -> None:
    """OpenCV's own warnings (a camera index that is not there, an unreadable image) would print
    before, and in the words of, the one error line the command gives for the same problem."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _os_error_text(exc: OSError) -> str:
    """'FILE: reason' where the error carries its file (Python's own text is
    "[Errno 28] No space left on device: 'FILE'", or "[Errno None] None: 'FILE'" for a message
    given a file name afterwards); the error's own text where it carries none."""
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    reason = exc.strerror or (str(exc.args[0]) if len(exc.args) == 1 else str(exc))
    return f"{' -> '.join(names)}: {reason}" if names else reason


# exit status of a command whose stdout reader went away, as standard tools give (128 + SIGPIPE)
BROKEN_PIPE_EXIT = 141


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it: a broken pipe to anything else (a
    subprocess, a socket) is an error to report."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll(), or stdout is no file
        return False


def main(argv: Optional[List[str]] = None, parser: Optional[argparse.ArgumentParser] = None) -> int:
    """Runs one command (`parser`: build_parser()'s, made already); a reader that closed stdout
    early ends it quietly (see the Python docs' note on SIGPIPE): stdout then points at
    os.devnull, so that output still buffered is not reported as 'Exception ignored ...
    BrokenPipeError' at interpreter exit."""
    try:
        code = _main(argv, parser or build_parser())
        sys.stdout.flush()  # buffered output fails here, not at interpreter exit
        return code
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_EXIT


def _given_parser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The parser of the (sub)command `args` were parsed for, e.g. dbrt triton serve's."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps its subcommands there only
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            return parser if chosen is None else _given_parser(chosen, args)
    return parser


def _main(argv: Optional[List[str]], parser: argparse.ArgumentParser) -> int:
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the command's own parser: "see dbrt run --help" lists its flags
            _given_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _quiet_opencv()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            return int(args._run(args) or 0)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"dbrt: {'terminated' if signum == signal.SIGTERM else 'interrupted'}", file=sys.stderr)
        return 128 + signum
    except (DbrtError, MissingDependency) as exc:
        print(f"dbrt {args.command}: error: {without_credentials(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the user named (missing, a folder, unwritable, a full disk)
        if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
            raise
        print(f"dbrt {args.command}: error: {without_credentials(_os_error_text(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
