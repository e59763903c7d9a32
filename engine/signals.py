"""Which stop signals (SIGINT, SIGTERM) dbrt's handlers may take over: one that is ignored is
left so, by every handler in engine, export and pipeline."""
import signal


def ignored(signum: int) -> bool:
    """A signal ignored when the handlers would be installed stays ignored, as Python's own
    SIGINT handling and a POSIX shell's traps leave it: a shell's background job (`dbrt run
    ... &` in a script) gets SIGINT ignored so that a Ctrl-C meant for the foreground job does
    not stop it. SIGTERM too: service managers (systemd, Docker, Kubernetes) start their
    services with every signal at its default, so an ignored SIGTERM was asked for (`trap ''
    TERM`, a wrapper), and their SIGKILL after the timeout still ends the process."""
    return signal.getsignal(signum) == signal.SIG_IGN
