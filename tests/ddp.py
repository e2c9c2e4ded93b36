"""Helper for tests that train with Lightning's ``ddp_spawn`` on CPU (gloo)."""

from __future__ import annotations

import atexit

import torch
from lightning.pytorch import Callback


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class CloseProcessGroupAtExit(Callback):
    """Destroy each spawned rank's process group when that process exits.

    Lightning's spawn launcher lets a rank exit with its gloo group alive; its threads are
    then torn down during interpreter shutdown, which now and then aborts the rank with
    "terminate called without an active exception". No collective runs after the worker
    function returns, so closing the group at exit is safe.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Register the clean-up in this (spawned) process."""
        atexit.register(_destroy_process_group)
