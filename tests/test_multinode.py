"""Training across machines: ``torchrun --nnodes 2`` runs ``rareseg fit`` as two nodes of one DDP job (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: Seconds the two nodes may take together (rendezvous, data statistics, two steps, validation).
TIMEOUT = 600


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rareseg_command() -> list[str]:
    """The ``rareseg`` console script next to this interpreter (``python -c`` of its entry point otherwise)."""
    script = Path(sys.executable).parent / "rareseg"
    return (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "import sys; from rareseg.cli import main; sys.exit(main())"]
    )


@pytest.mark.slow
def test_two_nodes_over_torchrun_train_one_recipe_and_write_one_checkpoint(synth_copy: Path, tmp_path: Path) -> None:
    """Two ``torchrun`` launchers (node 0 and node 1, one process each) rendezvous on localhost.

    This is what two machines run, with ``--rdzv-endpoint`` naming the first machine. Each rank
    trains on its share of the crops; gradients are all-reduced over gloo (the CPU backend).
    """
    port = _free_port()
    out = tmp_path / "run"
    fit = [
        "fit",
        "--config",
        str(CONFIGS / "wetlands.yaml"),
        "--config",
        str(CONFIGS / "demo-cpu.yaml"),
        "--data.init_args.root",
        str(synth_copy),
        "--data.init_args.patch_size",
        "64",
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.length",
        "8",
        "--data.init_args.num_workers",
        "0",
        "--model.init_args.net.init_args.decoder_channels",
        "32",
        "--trainer.max_epochs",
        "1",
        "--trainer.num_nodes",
        "2",
        "--trainer.devices",
        "1",
        "--trainer.strategy",
        "ddp",
        "--trainer.logger",
        json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(out)}}),
        "--trainer.default_root_dir",
        str(out),
        "--test_after_fit",
        "false",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    nodes = []
    for node in range(2):
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            f"127.0.0.1:{port}",
            "--rdzv-id",
            "rareseg-two-nodes",
            "--no-python",
        ]
        log = (tmp_path / f"node{node}.log").open("w")
        nodes.append(
            (
                subprocess.Popen(
                    [*launcher, *_rareseg_command(), *fit],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    cwd=tmp_path,
                ),
                log,
            )
        )
    try:
        codes = [process.wait(timeout=TIMEOUT) for process, _ in nodes]
    finally:
        for process, log in nodes:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    logs = [(tmp_path / f"node{node}.log").read_text() for node in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)

    checkpoints = sorted(out.rglob("*.ckpt"))
    # rank 0 alone writes: best.ckpt and last.ckpt of the one run
    assert [c.name for c in checkpoints] == ["best.ckpt", "last.ckpt"]
    checkpoint = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    # 8 crops per epoch shared by the two ranks in batches of 2: two optimizer steps on each rank
    assert checkpoint["global_step"] == 2
    assert checkpoint["hyper_parameters"]["class_names"][5] == "wetland"
    # both nodes initialised one world of two processes on the gloo backend
    combined = "\n".join(logs)
    assert combined.count("Initializing distributed: GLOBAL_RANK: ") == 2
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in combined and "GLOBAL_RANK: 1, MEMBER: 2/2" in combined
    assert "distributed_backend=gloo" in combined
