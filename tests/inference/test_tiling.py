"""Tests for rareseg.inference.tiling."""

from __future__ import annotations

import numpy as np
import pytest

from rareseg.inference.tiling import WINDOW_FLOOR, blend_window, coverage_weights, edge_ramp, tile_origins


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (256, 64, 16, [0, 48, 96, 144, 192]),
        (250, 64, 16, [0, 48, 96, 144, 186]),
        (64, 64, 16, [0]),
        (50, 64, 16, [0]),
        (128, 64, 0, [0, 64]),
        (129, 64, 0, [0, 64, 65]),
    ],
)
def test_tile_origins_hand_cases(length: int, tile: int, overlap: int, expected: list[int]) -> None:
    assert tile_origins(length, tile, overlap) == expected


@pytest.mark.parametrize(("length", "tile", "overlap"), [(1000, 96, 20), (12000, 512, 64), (97, 32, 8), (33, 32, 16)])
def test_tiles_cover_the_axis_inside_the_scene_with_at_least_the_overlap(length: int, tile: int, overlap: int) -> None:
    origins = tile_origins(length, tile, overlap)
    covered = np.zeros(length, dtype=int)
    for origin in origins:
        assert 0 <= origin <= length - tile
        covered[origin : origin + tile] += 1
    assert covered.min() >= 1
    assert all(b - a <= tile - overlap for a, b in zip(origins, origins[1:]))
    assert origins == sorted(set(origins))


def test_tile_origins_rejects_overlap_not_below_tile() -> None:
    with pytest.raises(ValueError, match="overlap < tile"):
        tile_origins(100, 32, 32)


def test_edge_ramp_follows_the_raised_cosine_formula() -> None:
    ramp = edge_ramp(20, 4, floor=0.01)
    i = np.arange(4, dtype=np.float64)
    rise = 0.01 + 0.99 * np.sin(np.pi / 2 * (i + 0.5) / 4) ** 2
    np.testing.assert_allclose(ramp[:4], rise, rtol=1e-6)
    np.testing.assert_allclose(ramp[-4:], rise[::-1], rtol=1e-6)
    np.testing.assert_array_equal(ramp[4:-4], 1.0)
    assert ramp.dtype == np.float32


def test_edge_ramps_of_neighbours_sum_to_one_in_their_overlap() -> None:
    tile, overlap = 64, 16
    ramp = edge_ramp(tile, overlap, floor=WINDOW_FLOOR).astype(np.float64)
    stride = tile - overlap
    total = np.zeros(stride + tile)
    total[:tile] += ramp
    total[stride:] += ramp
    # interior of the two-tile span: 1 everywhere, up to the floor inside the overlap
    np.testing.assert_allclose(total[overlap : stride + tile - overlap], 1.0, atol=WINDOW_FLOOR)
    assert total[stride : stride + overlap].min() >= 1.0


def test_edge_ramp_is_bounded_away_from_zero_and_flat_without_overlap() -> None:
    assert edge_ramp(64, 16).min() >= WINDOW_FLOOR
    np.testing.assert_array_equal(edge_ramp(10, 0), np.ones(10, dtype=np.float32))
    # ramp longer than half the tile: clipped to half, still symmetric
    short = edge_ramp(10, 8)
    np.testing.assert_allclose(short, short[::-1])
    assert short[4] == pytest.approx(WINDOW_FLOOR + (1 - WINDOW_FLOOR) * np.sin(np.pi / 2 * 4.5 / 5) ** 2, rel=1e-6)


def test_blend_window_is_the_outer_product_of_the_ramps() -> None:
    window = blend_window(24, 40, 6)
    assert window.shape == (24, 40) and window.dtype == np.float32
    np.testing.assert_allclose(window, np.outer(edge_ramp(24, 6), edge_ramp(40, 6)), rtol=1e-7)
    assert window[12, 20] == 1.0
    assert window[0, 0] == pytest.approx(edge_ramp(24, 6)[0] ** 2, rel=1e-6)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"), [(150, 230, 64, 16), (64, 100, 64, 32), (40, 300, 64, 8), (97, 97, 32, 0)]
)
def test_coverage_weights_multiply_to_the_summed_blend_windows(
    height: int, width: int, tile: int, overlap: int
) -> None:
    """The 2-D weight sum of every pixel, accumulated tile by tile in float64, is the outer product of the 1-D sums."""
    tile_h, tile_w = min(tile, height), min(tile, width)
    window = blend_window(tile_h, tile_w, overlap).astype(np.float64)
    summed = np.zeros((height, width))
    for y0 in tile_origins(height, tile, overlap):
        for x0 in tile_origins(width, tile, overlap):
            summed[y0 : y0 + tile_h, x0 : x0 + tile_w] += window
    rows, cols = coverage_weights(height, tile, overlap), coverage_weights(width, tile, overlap)
    assert rows.shape == (height,) and cols.shape == (width,) and rows.dtype == np.float32
    np.testing.assert_allclose(np.outer(rows, cols), summed, rtol=1e-6)
    assert rows.min() >= WINDOW_FLOOR and cols.min() >= WINDOW_FLOOR
    # where exactly two tiles overlap by `overlap` pixels their ramps sum to 1 (up to the floor)
    if height > tile and overlap > 0:
        assert rows[tile - overlap : tile].min() > 1 - 2 * WINDOW_FLOOR
