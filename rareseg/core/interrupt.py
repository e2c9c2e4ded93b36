"""Ctrl+C and SIGTERM: one way for every command to stop, clean up and say so in one line.

:func:`handle_interrupts` (used by the ``rareseg`` entry point around every subcommand) turns
SIGINT into :class:`KeyboardInterrupt` and SIGTERM into :class:`Terminated` (a KeyboardInterrupt,
so every clean-up that handles Ctrl+C handles SIGTERM too): the exception unwinds the running
command through its ``except BaseException`` / ``finally`` clean-ups (staging folders, partial
files), then the entry point prints one line and exits with ``128 + signal number`` (130 for
SIGINT, 143 for SIGTERM). The signal is remembered (:func:`received_signal`) so that a library
that turns a KeyboardInterrupt into its own exit (Lightning exits with status 1) still ends with
the right status and message.

:func:`signals_deferred` holds both signals back during a short step that must not be cut in
half (publishing a set of finished files).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: The signals handled, with the exit status they give (128 + signal number, as shells report it).
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}

_received: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind like Ctrl+C."""


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if signum == signal.SIGTERM:
        raise Terminated("terminated (SIGTERM)")
    raise KeyboardInterrupt


def received_signal() -> int | None:
    """The first SIGINT/SIGTERM received while :func:`handle_interrupts` was active, else None."""
    return _received[0] if _received else None


@contextmanager
def handle_interrupts() -> Iterator[None]:
    """Raise KeyboardInterrupt on SIGINT and :class:`Terminated` on SIGTERM inside the block (main thread only).

    The previous handlers come back afterwards; outside the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in EXIT_STATUS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interrupted_message(command: str) -> tuple[str, int]:
    """The one line and exit status for a command stopped by :func:`received_signal` (SIGINT when none was seen)."""
    signum = received_signal() or signal.SIGINT
    name = signal.Signals(signum).name
    return f"rareseg {command}: interrupted ({name}); unfinished outputs were removed", EXIT_STATUS[signum]


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back inside the block; they are delivered when it ends.

    Blocking the signals in this thread is not enough: in a process with other threads the kernel may
    hand a signal to one of them, and Python then runs its handler in the main thread at once. So
    the block's handlers only record what arrived, and the recorded signals are raised again after
    the previous handlers are back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: pending.append(signum)) for signum in EXIT_STATUS}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, EXIT_STATUS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)
