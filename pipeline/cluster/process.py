"""Process-level concerns of `nst run`: stop signals that Ray cannot override, and stdout kept clean for --json.

Called by `run_manifest` (after `ray.init`, whose C++ core installs its own SIGTERM handler that aborts the
process) and by the `nst run` command. A stop signal becomes one KeyboardInterrupt in the main thread, so
the driver loop stops scheduling, flushes every result it has received and records `interrupted`.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None
)
"""Ctrl-C, schedulers and service managers (Kubernetes, Slurm, systemd: SIGTERM), a closed terminal."""


FORCE_AFTER = 3
"""The third stop signal ends the process at once (the first stops the run, the second is ignored so the
final ledger flush can finish)."""


_received: list[int] = []


def received_signal() -> int | None:
    """The first stop signal this process received, or None."""
    return _received[0] if _received else None


def exit_code() -> int:
    """128 + the signal number, the shell convention: 130 for SIGINT (also the default), 143 for SIGTERM."""
    return 128 + (received_signal() or int(signal.SIGINT))


def _handler(signum: int, frame: Any) -> None:
    _received.append(signum)
    if len(_received) == 1:
        raise KeyboardInterrupt
    if len(_received) >= FORCE_AFTER:
        os._exit(128 + _received[0])
    print(
        "stopping: recording the results received so far; signal again to quit at once",
        file=sys.stderr,
        flush=True,
    )


def install_stop_handlers() -> bool:
    """Install the handler for every stop signal; False where that is impossible (not the main thread)."""
    _received.clear()
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, _handler)
    except ValueError:  # signals can only be set from the main thread (library use in a thread)
        return False
    return True


@contextmanager
def stop_handlers() -> Iterator[None]:
    """Stop signals raise KeyboardInterrupt inside the block; the handlers found on entry come back after.

    Enter it after `ray.init`: Ray's C++ handler (not a Python callable, so it is not restorable) is then
    replaced, and the default action is restored on exit instead.
    """
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    installed = install_stop_handlers()
    try:
        yield
    finally:
        if installed:
            for sig, old in previous.items():
                try:
                    signal.signal(sig, old if old is not None else signal.SIG_DFL)
                except (ValueError, TypeError):
                    pass


@contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """Send everything written to file descriptor 1 (worker output forwarded by Ray, library prints) to
    stderr inside the block, so that what the command prints afterwards is the only thing on stdout."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (a closed or embedded stdout): Python-level redirect only
        with redirect_stdout(sys.stderr):
            yield
        return
    try:
        os.dup2(2, 1)
        with redirect_stdout(sys.stderr):  # Python-level writers (print, Ray's log forwarding)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)
