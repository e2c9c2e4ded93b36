"""StopCleanly: training that ends mid-epoch (Ctrl+C, max_steps, max_time) leaves an up-to-date last.ckpt."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint


class StopCleanly(Callback):
    """Stop on the first Ctrl+C after the running step, and save ``last.ckpt`` wherever training ends.

    The first SIGINT during ``fit`` asks the trainer to stop after the current step (all ranks
    agree through the strategy): Lightning then validates, so the configured checkpoints are
    written as at an epoch end. A second SIGINT aborts at once (the previous handler runs).
    When training ends at a step that no checkpoint holds yet (``max_steps`` or ``max_time``
    reached mid-epoch, or the stop above), every :class:`~lightning.pytorch.callbacks.ModelCheckpoint`
    with ``save_last`` writes its ``last.ckpt`` at that step, so ``--ckpt_path last.ckpt`` resumes
    exactly there.

    Attributes:
        interrupted: a SIGINT asked for the stop.
        last_checkpoints: ``last.ckpt`` files written or current at the end of training.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self.last_checkpoints: list[Path] = []
        self._previous: Any = None

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        signal.signal(signal.SIGINT, self._previous)
        print(
            "\nrareseg fit: stopping after this step (validation and checkpoints follow); Ctrl+C again aborts",
            file=sys.stderr,
        )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take over SIGINT for the run (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._request_stop)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Ask the trainer to stop when any rank was interrupted."""
        if trainer.strategy.reduce_boolean_decision(self.interrupted, all=False):
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write ``last.ckpt`` at the final step when no checkpoint holds it yet."""
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint) or not callback.save_last or callback.dirpath is None:
                continue
            last = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            if callback.last_model_path != str(last) or not last.exists() or _saved_step(last) != trainer.global_step:
                trainer.save_checkpoint(last)
                callback.last_model_path = str(last)
            self.last_checkpoints.append(last)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Give SIGINT back."""
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _saved_step(path: Path) -> int | None:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])
    except Exception:  # noqa: BLE001 - an unreadable last.ckpt is rewritten
        return None
