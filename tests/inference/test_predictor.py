"""Tests for rareseg.inference.predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rareseg.datamodules import DataError
from rareseg.inference.predictor import DEFAULT_THRESHOLD, Predictor, resolve_device, resolve_precision
from tests.inference.helpers import BAND_MEAN, BAND_STD, CLASS_NAMES, ConstantNet, LocalNet, make_module


def test_from_module_reads_classes_and_statistics() -> None:
    predictor = Predictor.from_module(make_module(LocalNet()), device="cpu", thresholds={"5": "0.3"})
    assert predictor.class_names == tuple(CLASS_NAMES)
    assert predictor.class_colors[4] == (30, 90, 230)
    assert (predictor.num_classes, predictor.in_channels, predictor.rare_classes) == (6, 3, (4, 5))
    np.testing.assert_array_equal(predictor.band_mean, np.float32(BAND_MEAN))
    assert predictor.thresholds == {5: 0.3}
    assert predictor.device == torch.device("cpu") and predictor.precision == "32"
    assert not predictor.model.training


def test_predict_normalises_with_the_band_statistics_and_applies_weights() -> None:
    net = LocalNet()
    predictor = Predictor.from_module(make_module(net), device="cpu")
    tiles = np.random.default_rng(0).integers(1, 1000, size=(2, 3, 20, 24)).astype(np.uint16)
    weights = np.linspace(0.1, 1.0, 20 * 24, dtype=np.float32).reshape(20, 24)
    probs, saliency = predictor.predict(tiles, weights)
    normalised = (
        torch.from_numpy(tiles.astype(np.float64)) - torch.tensor(BAND_MEAN, dtype=torch.float64)[:, None, None]
    ) / torch.tensor(BAND_STD, dtype=torch.float64)[:, None, None]
    with torch.no_grad():
        out = net.double()(normalised)
    expected_probs = torch.softmax(out.logits, dim=1).numpy() * weights
    expected_saliency = torch.sigmoid(out.saliency_logits).numpy() * weights
    np.testing.assert_allclose(probs, expected_probs, atol=1e-5)
    np.testing.assert_allclose(saliency, expected_saliency, atol=1e-5)
    assert probs.shape == (2, 6, 20, 24) and saliency.shape == (2, 2, 20, 24)


def test_predict_of_plain_logits_has_no_saliency() -> None:
    predictor = Predictor.from_module(make_module(ConstantNet([0.5, 0.1, 0.1, 0.1, 0.15, 0.05])), device="cpu")
    probs, saliency = predictor.predict(np.ones((1, 3, 4, 4), dtype=np.float32))
    assert saliency is None
    np.testing.assert_allclose(probs[0, :, 2, 3], [0.5, 0.1, 0.1, 0.1, 0.15, 0.05], rtol=1e-5)
    with pytest.raises(ValueError, match=r"expected tiles \(B, 3, H, W\)"):
        predictor.predict(np.ones((1, 4, 4, 4), dtype=np.float32))


def test_missing_band_statistics_mean_no_normalisation() -> None:
    with pytest.warns(UserWarning, match="no band statistics"):
        predictor = Predictor.from_module(make_module(LocalNet(), band_mean=None, band_std=None), device="cpu")
    np.testing.assert_array_equal(predictor.band_mean, [0, 0, 0])
    np.testing.assert_array_equal(predictor.band_std, [1, 1, 1])


def test_rare_class_selection_by_name_or_id() -> None:
    predictor = Predictor.from_module(make_module(LocalNet()), device="cpu")
    assert predictor.select_rare_classes(None) == (4, 5)
    assert predictor.select_rare_classes(["wetland", "water"]) == (5, 4)
    assert predictor.select_rare_classes(["4", " wetland", "water"]) == (4, 5)
    with pytest.raises(
        DataError, match=r"unknown rare class 'marsh' \(the checkpoint's rare classes: water, wetland\)"
    ):
        predictor.select_rare_classes(["water", "marsh"])
    with pytest.raises(DataError, match="unknown rare class 'forest'"):
        predictor.select_rare_classes(["forest"])
    # an empty selection is an error (as on the web page), not "all of them"
    with pytest.raises(
        DataError, match=r"^select at least one rare class \(the checkpoint's rare classes: water, wetland\)$"
    ):
        predictor.select_rare_classes([])


def test_thresholds_come_from_override_then_checkpoint_then_default() -> None:
    predictor = Predictor.from_module(make_module(LocalNet()), device="cpu", thresholds={5: 0.3})
    assert predictor.thresholds_for((4, 5)) == ([DEFAULT_THRESHOLD, 0.3], "checkpoint+default")
    assert predictor.thresholds_for((5,)) == ([0.3], "checkpoint")
    assert predictor.thresholds_for((4,)) == ([0.5], "default")
    assert predictor.thresholds_for((4, 5), override=0.2) == ([0.2, 0.2], "override")
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        predictor.thresholds_for((4,), override=1.5)


def test_device_and_precision_resolution() -> None:
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    assert resolve_precision("fp32") == resolve_precision("32-true") == "32"
    assert resolve_precision("bf16-mixed") == "bf16"
    with pytest.raises(ValueError, match="unknown precision '16'"):
        resolve_precision("16")


def test_bf16_autocast_stays_close_to_fp32() -> None:
    tiles = np.random.default_rng(2).integers(1, 1000, size=(2, 3, 32, 32)).astype(np.float32)
    fp32 = Predictor.from_module(make_module(LocalNet()), device="cpu").predict(tiles)
    bf16 = Predictor.from_module(make_module(LocalNet()), device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    probs, saliency = bf16.predict(tiles)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, fp32[0], atol=2e-2)
    np.testing.assert_allclose(saliency, fp32[1], atol=2e-2)
    assert not np.array_equal(probs, fp32[0])  # autocast did run in reduced precision


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
