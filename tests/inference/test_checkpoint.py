"""Tests for rareseg.inference.checkpoint: the one loader and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import lightning
import numpy as np
import pytest
import torch

from rareseg.datamodules import DataError
from rareseg.inference.checkpoint import load_module, load_predictor
from tests.inference.helpers import LocalNet


def test_load_predictor_rebuilds_the_trained_module(checkpoint_path: Path) -> None:
    predictor = load_predictor(checkpoint_path, device="cpu")
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    assert predictor.thresholds == {5: 0.3}
    assert predictor.checkpoint == checkpoint_path
    assert predictor.class_names == tuple(checkpoint["hyper_parameters"]["class_names"])
    np.testing.assert_allclose(predictor.band_mean, checkpoint["hyper_parameters"]["band_mean"], rtol=1e-6)
    state = predictor.model.state_dict()
    for name, value in checkpoint["state_dict"].items():
        torch.testing.assert_close(state[name], value)


def test_load_predictor_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="checkpoint not found"):
        load_predictor(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(DataError, match="garbage.ckpt: not a readable checkpoint"):
        load_predictor(garbage)
    plain = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(DataError, match="not a Lightning checkpoint of a RareSegModule"):
        load_predictor(plain)


def test_load_predictor_reports_weights_that_do_not_fit(checkpoint_path: Path) -> None:
    with pytest.raises(DataError, match="the weights do not fit the network"):
        load_predictor(checkpoint_path, device="cpu", net=LocalNet())


def test_load_module_reads_the_file_once_and_rebuilds_the_task_in_eval_mode(
    checkpoint_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    original = Path.read_bytes

    def counting_read_bytes(self: Path) -> bytes:
        reads.append(self)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", counting_read_bytes)
    module = load_module(checkpoint_path)
    predictor = load_predictor(checkpoint_path, device="cpu")
    assert reads == [checkpoint_path, checkpoint_path]  # one read per load
    assert not module.training and predictor.thresholds == {5: 0.3}
    saved = torch.load(checkpoint_path, weights_only=False)["state_dict"]
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, saved[name])


def test_hyperparameters_that_do_not_build_the_task_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    content = {"state_dict": {}, "hyper_parameters": {"aux_weight": -1.0}}
    torch.save({**content, "pytorch-lightning_version": lightning.__version__}, bad)
    message = r"bad.ckpt: the checkpoint does not rebuild a RareSegModule \(ValueError: aux_weight must be >= 0"
    with pytest.raises(DataError, match=message):
        load_module(bad)


def test_networks_rebuilt_from_a_checkpoint_skip_their_initial_weights(
    checkpoint_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint trained from ``encoder_weights: imagenet`` (or a file) loads offline: its weights replace them."""
    from rareseg.lightning_modules import rareseg_module
    from rareseg.models import SpatialAwareSegFormer
    from rareseg.models.pretrained import initial_weights_skipped

    skipped: list[bool] = []

    def recording(*args, **kwargs):
        skipped.append(initial_weights_skipped())
        return SpatialAwareSegFormer(*args, **kwargs)

    monkeypatch.setattr(rareseg_module, "SpatialAwareSegFormer", recording)
    load_predictor(checkpoint_path, device="cpu")
    assert skipped == [True]
    assert not initial_weights_skipped()
