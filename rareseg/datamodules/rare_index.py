"""The rare-class index: coarse per-scene counts of rare-class pixels, for drawing a uniformly random pixel of a class.

Built once from windowed reads of the masks (memory ``O(cells)``, never a whole mask), it
answers draws with one small window read each. The class distribution is DAFormer's rare-class
sampling rule (:func:`rare_class_probabilities`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from rareseg.datamodules.footprints import SceneFootprint

#: Rows of mask read at a time while the rare-class index is built.
_INDEX_ROWS = 1024


def rare_class_probabilities(
    class_frequencies: Sequence[float], rare_classes: Sequence[int], temperature: float
) -> np.ndarray:
    """Probability of drawing each rare class: ``P(c) = exp((1 - f_c) / T) / sum_r exp((1 - f_r) / T)``.

    The DAFormer rare-class sampling rule, restricted to the rare classes: the rarer a class
    (smaller pixel frequency ``f_c``), the likelier; a small temperature ``T`` sharpens it.

    Args:
        class_frequencies: pixel frequency of every class, indexed by class id.
        rare_classes: ids of the classes to draw from.
        temperature: ``T > 0``.

    Returns:
        float64 array of shape (R,), one probability per entry of ``rare_classes``, summing to 1.
    """
    frequencies = np.array([class_frequencies[c] for c in rare_classes], dtype=np.float64)
    scores = (1.0 - frequencies) / temperature
    weights = np.exp(scores - scores.max())
    return weights / weights.sum()


def cell_class_counts(mask: np.ndarray, classes: Sequence[int], cell: int) -> np.ndarray:
    """Pixels of each class in every ``cell`` x ``cell`` block of a mask.

    Args:
        mask: class ids, shape (H, W).
        classes: the R class ids to count.
        cell: block side in pixels; blocks on the bottom/right edges may be partial.

    Returns:
        int64 array of shape (R, ceil(H / cell), ceil(W / cell)).
    """
    height, width = mask.shape
    rows, cols = -(-height // cell), -(-width // cell)
    counts = np.empty((len(classes), rows, cols), dtype=np.int64)
    hits = np.zeros((rows * cell, cols * cell), dtype=bool)
    for k, class_id in enumerate(classes):
        hits[:height, :width] = mask == class_id
        counts[k] = hits.reshape(rows, cell, cols, cell).sum(axis=(1, 3))
    return counts


class RareClassIndex:
    """Coarse per-scene counts of rare-class pixels, for drawing a uniformly random pixel of a class.

    Built once by windowed reads of every mask (``_INDEX_ROWS`` rows at a time) over the
    scene's footprint, counting pixels of each rare class in ``cell`` x ``cell`` blocks.
    Only cells holding a class are kept (sparse, per class). A draw picks class ``c`` with
    :func:`rare_class_probabilities` (renormalised over the classes present), then the k-th
    pixel of class ``c`` with ``k`` uniform over all of them: a binary search in the running
    pixel count over the cells finds the cell, one ``cell`` x ``cell`` window read of the mask
    finds the pixel. No draw scans a whole mask.

    Attributes:
        offsets: first global cell id of each scene, shape (n_scenes + 1,); scene ``s`` has
            ``grid_cols[s]`` cells per row, numbered row-major from ``offsets[s]``.
        cells: per class, ascending global ids of the cells holding it.
        cumulative: per class, running pixel count over ``cells``.
    """

    def __init__(
        self, footprints: Sequence[SceneFootprint], rare_classes: Sequence[int], probabilities: np.ndarray, cell: int
    ) -> None:
        """Count rare pixels per cell.

        Args:
            footprints: scenes, each with a ``mask_path``.
            rare_classes: class ids to index, shape (R,).
            probabilities: class probabilities, shape (R,).
            cell: cell side in pixels.
        """
        self.footprints = list(footprints)
        self.rare_classes = list(rare_classes)
        self.probabilities = probabilities
        self.cell = cell
        self.grid_cols: list[int] = []
        offsets = [0]
        cells: list[list[np.ndarray]] = [[] for _ in self.rare_classes]
        pixels: list[list[np.ndarray]] = [[] for _ in self.rare_classes]
        for footprint in self.footprints:
            counts = self._scene_counts(footprint)
            self.grid_cols.append(counts.shape[2])
            for k, class_counts in enumerate(counts.reshape(len(self.rare_classes), -1)):
                held = np.flatnonzero(class_counts)
                cells[k].append(offsets[-1] + held)
                pixels[k].append(class_counts[held])
            offsets.append(offsets[-1] + counts.shape[1] * counts.shape[2])
        self.offsets = np.array(offsets)
        self.cells = [np.concatenate(c) for c in cells]
        self.cumulative = [np.cumsum(np.concatenate(p)) for p in pixels]
        self._readers: dict[int, rasterio.DatasetReader] = {}

    def _scene_counts(self, footprint: SceneFootprint) -> np.ndarray:
        (row0, row1), (col0, col1) = footprint.rows, footprint.cols
        step = self.cell * max(1, _INDEX_ROWS // self.cell)
        blocks = []
        with rasterio.open(footprint.mask_path) as src:
            for row in range(row0, row1, step):
                mask = src.read(1, window=Window(col0, row, col1 - col0, min(step, row1 - row)))
                blocks.append(cell_class_counts(mask, self.rare_classes, self.cell))
        return np.concatenate(blocks, axis=1)

    def class_pixels(self, scene: int | None = None) -> np.ndarray:
        """Pixels of each rare class, in one scene or (None) in all, int64 shape (R,)."""
        spans = [self._span(k, scene) for k in range(len(self.rare_classes))]
        return np.array(
            [self._count_before(k, hi) - self._count_before(k, lo) for k, (lo, hi) in enumerate(spans)], dtype=np.int64
        )

    def _span(self, k: int, scene: int | None) -> tuple[int, int]:
        """Positions in ``cells[k]`` of the cells of one scene (None: all scenes), as [lo, hi)."""
        if scene is None:
            return 0, len(self.cells[k])
        lo, hi = np.searchsorted(self.cells[k], self.offsets[scene : scene + 2])
        return int(lo), int(hi)

    def _count_before(self, k: int, position: int) -> int:
        """Pixels of class ``k`` in ``cells[k][:position]``."""
        return int(self.cumulative[k][position - 1]) if position > 0 else 0

    def draw(self, uniform: Callable[[], float], scene: int | None = None) -> tuple[int, int, int] | None:
        """Draw a rare-class pixel.

        Args:
            uniform: source of uniform [0, 1) floats (the sampler's seeded generator).
            scene: restrict the draw to this footprint index, or None for all scenes.

        Returns:
            (footprint index, row, col) of the pixel, or None when no rare pixel is in scope.
        """
        pixels = self.class_pixels(scene)
        weights = self.probabilities * (pixels > 0)
        if weights.sum() == 0:
            return None
        k = min(int(np.searchsorted(np.cumsum(weights / weights.sum()), uniform(), side="right")), len(weights) - 1)
        target = self._count_before(k, self._span(k, scene)[0]) + int(uniform() * int(pixels[k]))
        position = int(np.searchsorted(self.cumulative[k], target, side="right"))
        nth = target - self._count_before(k, position)
        cell = int(self.cells[k][position])
        owner = int(np.searchsorted(self.offsets, cell, side="right")) - 1
        cell_row, cell_col = divmod(cell - int(self.offsets[owner]), self.grid_cols[owner])
        return (owner, *self._nth_pixel(owner, self.rare_classes[k], cell_row, cell_col, nth))

    def _nth_pixel(self, scene: int, class_id: int, cell_row: int, cell_col: int, nth: int) -> tuple[int, int]:
        footprint = self.footprints[scene]
        row0 = footprint.rows[0] + cell_row * self.cell
        col0 = footprint.cols[0] + cell_col * self.cell
        height = min(self.cell, footprint.rows[1] - row0)
        width = min(self.cell, footprint.cols[1] - col0)
        if scene not in self._readers:
            self._readers[scene] = rasterio.open(footprint.mask_path)
        window = self._readers[scene].read(1, window=Window(col0, row0, width, height))
        hits = np.flatnonzero(window == class_id)
        if nth >= hits.size:
            raise RuntimeError(
                f"{footprint.mask_path}: mask changed after the rare-class sampler indexed it; rebuild the sampler"
            )
        row, col = divmod(int(hits[nth]), width)
        return row0 + row, col0 + col

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the open mask readers (they reopen on the next draw)."""
        state = dict(self.__dict__)
        state["_readers"] = {}
        return state
