"""The `dbrt` command (setup.cfg's console script) and `python -m pipeline`.

Ctrl-C or SIGTERM while the command's modules load (numpy, OpenCV, every subcommand's: 0.4 s
on a free core, about 1 s on a busy one) killed the process without a word (SIGTERM) or
printed a KeyboardInterrupt traceback: until they are loaded, handlers that only record the
signal are in place, and a signal ends the command with one line (130 / 143). Only the
command does this: `import pipeline` leaves a program's own handlers as they are.
"""
import signal
import sys

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def main() -> int:
    received = []
    previous = {}
    for signum in STOP_SIGNALS:
        # an ignored one (a background job's SIGINT) is kept so, the rule of engine.signals.ignored;
        # not imported from there: the engine package would load before these handlers are in place
        if signal.getsignal(signum) != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, lambda signum, frame: received.append(signum))
    try:
        from pipeline import cli

        parser = cli.build_parser()  # imports every subcommand's modules
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    if received:
        print(f"dbrt: {'terminated' if received[0] == signal.SIGTERM else 'interrupted'}", file=sys.stderr)
        return 128 + received[0]
    return cli.main(parser=parser)


if __name__ == "__main__":
    sys.exit(main())
