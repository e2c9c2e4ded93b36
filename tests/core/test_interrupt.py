"""Tests for rareseg.core.interrupt and the entry point's handling of SIGINT/SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from rareseg import cli
from rareseg.core.interrupt import Terminated, handle_interrupts, received_signal, signals_deferred


def test_sigterm_unwinds_like_ctrl_c_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(Terminated), handle_interrupts():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # not reached: the handler raises first
        finally:
            cleaned.append(True)
    assert cleaned == [True] and received_signal() == signal.SIGTERM
    assert isinstance(Terminated(), KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before


def test_signals_wait_for_the_end_of_a_deferred_block() -> None:
    steps = []
    with pytest.raises(KeyboardInterrupt), handle_interrupts():
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("still running")
        steps.append("not reached")
    assert steps == ["still running"]


def test_a_deferred_block_holds_a_signal_another_thread_receives() -> None:
    # with other threads running, the kernel may hand the signal to one of them (it failed the old,
    # mask-only deferral in the full suite, after tests had started thread pools)
    stop = threading.Event()
    workers = [threading.Thread(target=lambda: stop.wait(), daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(20):
            steps = []
            with pytest.raises(KeyboardInterrupt), handle_interrupts():
                with signals_deferred():
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.002)
                    steps.append("still running")
                steps.append("not reached")
            assert steps == ["still running"]
    finally:
        stop.set()


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_library_exit_after_the_signal_still_gives_the_signal_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], signum: int, status: int
) -> None:
    def like_lightning(argv: list[str]) -> None:
        try:
            os.kill(os.getpid(), signum)
            signal.pause()
        except KeyboardInterrupt:
            sys.exit(1)  # Lightning's trainer exits 1 after handling a KeyboardInterrupt itself

    monkeypatch.setitem(cli.TOOLS, "bench", like_lightning)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "ablation"])
    assert exit_info.value.code == status
    name = signal.Signals(signum).name
    assert capsys.readouterr().err == f"rareseg bench: interrupted ({name}); unfinished outputs were removed\n"


def test_an_ordinary_exit_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.TOOLS, "bench", lambda argv: sys.exit(3))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench"])
    assert exit_info.value.code == 3
