"""Tile layout and the blending window of whole-scene prediction (pure functions).

A scene axis of ``length`` pixels is covered by tiles of ``tile`` pixels whose origins are
``0, s, 2s, ...`` with stride ``s = tile - overlap``; the last origin is moved back to
``length - tile`` so every tile lies inside the scene and all tiles have the same size.
Overlapping predictions are averaged with the weights of :func:`blend_window`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Smallest weight of the blending window, at a tile's outermost pixels.
WINDOW_FLOOR = 1e-3


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets along one scene axis.

    Args:
        length: scene size along the axis, in pixels (>= 1).
        tile: tile size in pixels; a scene shorter than a tile gets one tile of the scene's size.
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap < tile``.

    Returns:
        Ascending origins ``o_i``: ``o_i = i * (tile - overlap)`` for the regular tiles and
        ``max(0, length - tile)`` for the last one, so tiles ``[o_i, o_i + min(tile, length))``
        cover ``[0, length)`` and neighbours overlap by at least ``overlap`` pixels.
    """
    if length < 1 or tile < 1 or not 0 <= overlap < tile:
        raise ValueError(
            f"tile_origins: need length >= 1, tile >= 1 and 0 <= overlap < tile, got {length}, {tile}, {overlap}"
        )
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return [min(i * stride, length - tile) for i in range(count)]


def edge_ramp(length: int, ramp: int, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """One-dimensional blending weights: raised-cosine ramps at both ends, 1 in the middle.

    ``w(i) = floor + (1 - floor) * sin^2(pi/2 * (i + 0.5) / r)`` for ``i < r`` with
    ``r = min(ramp, length // 2)``, mirrored at the far end, and ``w(i) = 1`` between. Where two
    tiles overlap by exactly ``r`` pixels the ramps are ``sin^2`` and ``cos^2`` of the same angle, so
    their weights sum to 1 (up to the floor); the floor keeps weights positive at scene borders
    covered by a single tile.

    Args:
        length: tile size along the axis, in pixels.
        ramp: ramp length in pixels (the tile overlap); 0 gives a flat window.
        floor: smallest weight, in ``(0, 1]``.

    Returns:
        (length,) float32 weights in ``[floor, 1]``.
    """
    if length < 1 or ramp < 0 or not 0 < floor <= 1:
        raise ValueError(f"edge_ramp: need length >= 1, ramp >= 0 and 0 < floor <= 1, got {length}, {ramp}, {floor}")
    weights = np.ones(length, dtype=np.float64)
    r = min(ramp, length // 2)
    if r > 0:
        rise = floor + (1 - floor) * np.sin(np.pi / 2 * (np.arange(r) + 0.5) / r) ** 2
        weights[:r] = rise
        weights[length - r :] = rise[::-1]
    return weights.astype(np.float32)


def blend_window(height: int, width: int, overlap: int, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """Separable two-dimensional blending window ``W[y, x] = w_h(y) * w_w(x)`` (see :func:`edge_ramp`).

    Args:
        height: tile height in pixels.
        width: tile width in pixels.
        overlap: tile overlap in pixels (the ramp length on every side).
        floor: smallest one-dimensional weight; the corners get ``floor**2``-sized weights.

    Returns:
        (height, width) float32 weights in ``(0, 1]``.
    """
    return np.outer(edge_ramp(height, overlap, floor), edge_ramp(width, overlap, floor)).astype(np.float32)


def coverage_weights(length: int, tile: int, overlap: int, floor: float = WINDOW_FLOOR) -> np.ndarray:
    """Sum of the one-dimensional blending weights of every tile covering each pixel of an axis.

    ``c(i) = sum_j w(i - o_j)`` over the tiles ``j`` of :func:`tile_origins` whose span holds ``i``,
    with ``w`` the :func:`edge_ramp` of a tile. The window is separable and the tiles form a grid,
    so the summed :func:`blend_window` weights at scene pixel ``(y, x)`` are ``c_H(y) * c_W(x)``,
    which is how whole-scene prediction normalises its blended sums without accumulating weights.

    Args:
        length: scene size along the axis, in pixels.
        tile: tile size in pixels (a scene shorter than a tile gets one tile of its size).
        overlap: tile overlap in pixels.
        floor: smallest weight of the window, as in :func:`edge_ramp`.

    Returns:
        (length,) float32 sums, each at least ``floor``.
    """
    size = min(tile, length)
    ramp = edge_ramp(size, overlap, floor).astype(np.float64)
    sums = np.zeros(length, dtype=np.float64)
    for origin in tile_origins(length, tile, overlap):
        sums[origin : origin + size] += ramp
    return sums.astype(np.float32)


@dataclass(frozen=True)
class BlendedRows:
    """A band of finished full-width scene rows: blended network outputs, not yet divided by their weights.

    Every tile's outputs were multiplied by :func:`blend_window` and summed, so the blended
    probability of class ``k`` is ``prob_sums[k] / weights`` (:meth:`probabilities`). The weight
    sums are positive, so the argmax of the sums is the argmax of the blended probabilities.

    Attributes:
        start: scene row of the band's first row.
        prob_sums: (K, n, W) float32 weighted sums of the class probabilities.
        saliency_sums: (S, n, W) float32 weighted sums of the saliency head's sigmoid, one plane per
            rare class of the predictor (its order), or None when the network has no saliency head.
        weights: (n, W) float32 sums of the blending weights (:func:`coverage_weights`), at least the floor.
        valid: (n, W) bool, False where the input is nodata in every band.
    """

    start: int
    prob_sums: np.ndarray
    saliency_sums: np.ndarray | None
    weights: np.ndarray
    valid: np.ndarray

    @property
    def stop(self) -> int:
        """Scene row after the band's last row."""
        return self.start + self.valid.shape[0]

    def probabilities(self, classes: Sequence[int]) -> np.ndarray:
        """Blended probabilities of ``classes``: (len(classes), n, W) float32."""
        return self.prob_sums[list(classes)] / self.weights

    def argmax(self) -> np.ndarray:
        """(n, W) int64 class of the highest blended probability (the first on ties)."""
        return self.prob_sums.argmax(axis=0)
