"""Tests for rareseg.inference.saliency_map: cell means and whole-scene maps through the inference pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from rareseg.inference import Predictor
from rareseg.inference.saliency_map import accumulate_cells, scene_saliency_map
from tests.inference.helpers import BAND_MEAN, BAND_STD, LocalNet, make_module


@pytest.mark.parametrize("cell", [4, 3])
def test_accumulated_tiles_give_cell_means(cell: int) -> None:
    saliency = np.random.default_rng(0).uniform(size=(50, 37))
    rows, cols = -(-50 // cell), -(-37 // cell)
    sums, counts = np.zeros((rows, cols)), np.zeros((rows, cols))
    for r in range(0, 50, 16):
        for c in range(0, 37, 16):
            accumulate_cells(saliency[r : r + 16, c : c + 16], r, c, cell, sums, counts)
    for i in range(rows):
        for j in range(cols):
            block = saliency[i * cell : (i + 1) * cell, j * cell : (j + 1) * cell]
            assert sums[i, j] / counts[i, j] == pytest.approx(block.mean(), rel=1e-12)
            assert counts[i, j] == block.size


def test_accumulated_rows_skip_invalid_pixels() -> None:
    values = np.arange(24, dtype=np.float64).reshape(4, 6)
    valid = np.ones((4, 6), dtype=bool)
    valid[0, :3] = False  # cell (0, 0) loses the three pixels of its top row
    sums, counts = np.zeros((2, 2)), np.zeros((2, 2))
    accumulate_cells(values[:1], 0, 0, 3, sums, counts, valid[:1])
    accumulate_cells(values[1:], 1, 0, 3, sums, counts, valid[1:])
    np.testing.assert_array_equal(counts, [[6, 9], [3, 3]])
    assert sums[0, 0] / counts[0, 0] == pytest.approx(np.mean([6, 7, 8, 12, 13, 14]))
    assert sums[1, 1] / counts[1, 1] == pytest.approx(np.mean([21, 22, 23]))


def test_one_tile_map_is_the_cell_mean_of_the_whole_scene_saliency(full_scene_path: Path) -> None:
    net = LocalNet()
    predictor = Predictor.from_module(make_module(net), device="cpu")
    saliency, transform = scene_saliency_map(predictor, full_scene_path, 23.2, tile=256, overlap=64)
    with rasterio.open(full_scene_path) as src:
        image, scene_transform = src.read().astype(np.float64), src.transform
    mean = torch.tensor(BAND_MEAN, dtype=torch.float64)[:, None, None]
    std = torch.tensor(BAND_STD, dtype=torch.float64)[:, None, None]
    with torch.no_grad():
        logits = net.double()((torch.from_numpy(image) - mean)[None] / std).saliency_logits[0].numpy()
    pixel = (1 / (1 + np.exp(-logits))).max(axis=0)
    expected = pixel.reshape(64, 4, 64, 4).mean(axis=(1, 3))
    assert saliency.shape == (64, 64) and saliency.dtype == np.float32
    np.testing.assert_allclose(saliency, expected, atol=1e-5)
    assert transform == scene_transform * Affine.scale(4)


def test_a_network_without_saliency_head_is_refused(full_scene_path: Path) -> None:
    predictor = Predictor.from_module(make_module(LocalNet(saliency=False)), device="cpu")
    with pytest.raises(
        ValueError, match=f"{full_scene_path.name}: a saliency map needs a network with a saliency head"
    ):
        scene_saliency_map(predictor, full_scene_path, 23.2, tile=128, overlap=32)
