"""Training samplers that over-draw rare classes: label-based and saliency-guided.

Both subclass torchgeo's :class:`~torchgeo.samplers.GeoSampler` and yield the
``(slice(xmin, xmax), slice(ymin, ymax), slice(tmin, tmax))`` queries that torchgeo 0.8
datasets index with, one scene's time slice each. Crops lie inside their scene's footprint
(:mod:`rareseg.datamodules.footprints`); rare-class pixels come from the
:class:`~rareseg.datamodules.rare_index.RareClassIndex`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import shapely
import torch
from affine import Affine
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import GeoSampler, Units

from rareseg.datamodules.footprints import GeoSlice, SceneFootprint, scene_footprints
from rareseg.datamodules.rare_index import RareClassIndex, rare_class_probabilities


def top_saliency_cells(saliency: np.ndarray, valid: np.ndarray, topk_percent: float) -> np.ndarray:
    """The ``ceil(topk_percent / 100 * n_valid)`` valid cells of highest saliency.

    Ties are broken by position (row-major order first), so the result is deterministic.

    Args:
        saliency: saliency map, shape (h, w).
        valid: which cells may be chosen, bool, shape (h, w).
        topk_percent: percentage of the valid cells to keep, in (0, 100].

    Returns:
        Row-major flat indices into the map, int64, shape (n,), empty when no cell is valid.
    """
    candidates = np.flatnonzero(valid.ravel())
    keep = math.ceil(topk_percent / 100.0 * candidates.size)
    order = np.argsort(-saliency.ravel()[candidates], kind="stable")
    return candidates[order[:keep]]


def _check_rare_arguments(
    class_frequencies: Sequence[float], rare_classes: Sequence[int], temperature: float, cell_size: int
) -> None:
    if not rare_classes:
        raise ValueError("rare_classes is empty: name at least one rare class id")
    if any(not 0 <= c < len(class_frequencies) for c in rare_classes):
        raise ValueError(
            f"rare_classes {list(rare_classes)} must be ids in 0..{len(class_frequencies) - 1} (the length of "
            "class_frequencies)"
        )
    if any(not 0.0 <= f <= 1.0 for f in class_frequencies):
        raise ValueError(f"class_frequencies must lie in [0, 1], got {list(class_frequencies)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if cell_size < 1:
        raise ValueError(f"cell_size must be >= 1 pixel, got {cell_size}")


class _FootprintSampler(GeoSampler):
    """Shared machinery: crop size in pixels, scene footprints, seeded uniform draws, exact length.

    Attributes:
        size_px: crop (height, width) in pixels.
        footprints: the scenes that hold a whole crop, with their valid pixel windows.
        all_scene_ids: image stems of every scene in the (roi-clipped) index, drawable or not.
        length: crops per epoch.
    """

    def __init__(
        self,
        dataset: GeoDataset,
        size: tuple[float, float] | float,
        length: int | None,
        units: Units,
        roi: shapely.Geometry | None,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__(dataset, roi)
        height, width = size if isinstance(size, tuple | list) else (size, size)
        if units == Units.CRS:
            height, width = round(height / self.res[1]), round(width / self.res[0])
        if height != int(height) or width != int(width) or height < 1 or width < 1:
            raise ValueError(f"size must be a positive whole number of pixels, got {size} ({units.name})")
        self.size_px = (int(height), int(width))
        if length is not None and length < 1:
            raise ValueError(f"length must be >= 1 crop, got {length}")
        self.generator = generator
        every = scene_footprints(self.index, dataset, self.res)
        self.all_scene_ids = list(dict.fromkeys(fp.scene_id for fp in every))
        self.footprints = [
            fp
            for fp in every
            if fp.rows[1] - fp.rows[0] >= self.size_px[0] and fp.cols[1] - fp.cols[0] >= self.size_px[1]
        ]
        if not self.footprints:
            raise ValueError(
                f"no scene footprint (scene bounds ∩ roi) holds a {self.size_px[0]} x {self.size_px[1]} px crop"
            )
        self.length = (
            length
            if length is not None
            else sum(
                ((fp.rows[1] - fp.rows[0]) // self.size_px[0]) * ((fp.cols[1] - fp.cols[0]) // self.size_px[1])
                for fp in self.footprints
            )
        )
        areas = np.array([fp.area for fp in self.footprints], dtype=np.float64)
        self._scene_cdf = np.cumsum(areas / areas.sum())

    def __len__(self) -> int:
        """Crops per epoch."""
        return self.length

    def _uniform(self) -> float:
        """A uniform [0, 1) float from the sampler's generator."""
        return float(torch.rand(1, generator=self.generator, dtype=torch.float64))

    def _pick_scene(self) -> int:
        """A footprint index, with probability proportional to its valid area."""
        return min(int(np.searchsorted(self._scene_cdf, self._uniform(), side="right")), len(self.footprints) - 1)

    def _random_query(self, scene: int) -> GeoSlice:
        """A crop at a uniformly random position inside a footprint."""
        fp = self.footprints[scene]
        row = fp.rows[0] + int(self._uniform() * (fp.rows[1] - fp.rows[0] - self.size_px[0] + 1))
        col = fp.cols[0] + int(self._uniform() * (fp.cols[1] - fp.cols[0] - self.size_px[1] + 1))
        return fp.query(row, col, self.size_px)


class RareClassGeoSampler(_FootprintSampler):
    """Crops centred on rare-class pixels, rarer classes drawn more often (DAFormer-style).

    Each rare-class crop: draw a rare class ``c`` with ``P(c) ∝ exp((1 - f_c) / T)`` (classes
    with no pixel in the footprints are skipped), then a pixel uniformly among all pixels of
    class ``c`` in all footprints (so a scene is chosen in proportion to its share of ``c``),
    and centre the crop on it (shifted to fit the footprint; the pixel stays inside the crop).
    Class pixels come from a :class:`RareClassIndex` built once at construction from the
    masks of the dataset (see the module docstring).

    With ``rare_fraction < 1`` each crop is a rare-class crop with probability
    ``rare_fraction`` and otherwise lies at a uniformly random position (scene by footprint
    area), so the background far from rare classes (roads, shadows, wet soil) keeps its
    share of the training crops; ``rare_fraction = 1`` (the default) draws no uniform crop
    and gives exactly the crops it gave before the option existed.
    """

    def __init__(
        self,
        dataset: GeoDataset,
        size: tuple[float, float] | float,
        length: int | None,
        class_frequencies: Sequence[float],
        rare_classes: Sequence[int],
        temperature: float = 0.1,
        units: Units = Units.PIXELS,
        roi: shapely.Geometry | None = None,
        generator: torch.Generator | None = None,
        cell_size: int = 32,
        rare_fraction: float = 1.0,
    ) -> None:
        """Index the masks and prepare the class distribution.

        Args:
            dataset: image-and-mask dataset, e.g. ``LissIVImage & LissIVMask``.
            size: crop (height, width), or one number for both, in ``units``.
            length: crops per epoch (None: as many non-overlapping crops as fit the footprints).
            class_frequencies: pixel frequency ``f_c`` of every class, indexed by class id.
            rare_classes: ids of the classes to over-draw.
            temperature: ``T > 0`` of the class distribution.
            units: ``Units.PIXELS`` or ``Units.CRS`` (rounded to whole pixels).
            roi: region of interest; crops stay inside (scene bounds ∩ roi).
            generator: seeded ``torch.Generator`` for reproducible crops.
            cell_size: side in pixels of the index cells (memory vs. size of one draw's read).
            rare_fraction: share of crops centred on a rare-class pixel, in (0, 1]; the rest are
                uniform. May be changed between epochs.
        """
        _check_rare_arguments(class_frequencies, rare_classes, temperature, cell_size)
        self.rare_fraction = rare_fraction
        super().__init__(dataset, size, length, units, roi, generator)
        if any(fp.mask_path is None for fp in self.footprints):
            raise ValueError(
                "RareClassGeoSampler needs masks: pass an IntersectionDataset of images and a mask RasterDataset, "
                f"got {type(dataset).__name__}"
            )
        probabilities = rare_class_probabilities(class_frequencies, rare_classes, temperature)
        self.rare_index = RareClassIndex(self.footprints, rare_classes, probabilities, cell_size)
        if self.rare_index.class_pixels().sum() == 0:
            raise ValueError(
                f"no pixel of the rare classes {list(rare_classes)} lies in the sampling region of the masks"
            )

    @property
    def rare_fraction(self) -> float:
        """Share of crops centred on a rare-class pixel, in (0, 1]."""
        return self._rare_fraction

    @rare_fraction.setter
    def rare_fraction(self, value: float) -> None:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"rare_fraction must be in (0, 1], got {value}")
        self._rare_fraction = float(value)

    def __iter__(self) -> Iterator[GeoSlice]:
        """Yield ``len(self)`` queries: centred on a drawn rare-class pixel, or (``rare_fraction`` < 1) uniform."""
        for _ in range(len(self)):
            if self._rare_fraction < 1.0 and self._uniform() >= self._rare_fraction:
                yield self._random_query(self._pick_scene())
                continue
            scene, row, col = self.rare_index.draw(self._uniform)
            yield self.footprints[scene].centred_query(row, col, self.size_px)


class SaliencyGuidedGeoSampler(_FootprintSampler):
    """Crops steered by saliency maps: a fraction centred in each scene's most salient cells.

    Each crop picks a scene with probability proportional to its footprint area. With
    probability ``salient_fraction`` it is centred on a uniformly random point of a
    uniformly chosen cell among the top ``topk_percent`` % cells (by value) of the scene's
    current saliency map; otherwise it lies at a uniformly random position in the scene.
    While a scene has no map, its salient draws use the fallback: ``"rare"`` centres on a
    rare-class pixel of that scene (as :class:`RareClassGeoSampler`, renormalised to the
    scene; a uniform crop if the scene has none), ``"random"`` a uniform crop.

    Maps arrive through :meth:`update_saliency` (e.g. from the ``SaliencyRefresh``
    callback). The sampler is iterated in the process that owns the DataLoader (workers only
    receive the queries), so a map or a ``salient_fraction`` set between epochs applies to
    the next epoch's crops, also with ``persistent_workers``.
    """

    def __init__(
        self,
        dataset: GeoDataset,
        size: tuple[float, float] | float,
        length: int | None,
        salient_fraction: float = 0.5,
        topk_percent: float = 10.0,
        fallback: str = "rare",
        class_frequencies: Sequence[float] | None = None,
        rare_classes: Sequence[int] | None = None,
        temperature: float = 0.1,
        units: Units = Units.PIXELS,
        roi: shapely.Geometry | None = None,
        generator: torch.Generator | None = None,
        cell_size: int = 32,
    ) -> None:
        """Prepare the footprints (and for ``fallback="rare"`` the rare-class index).

        Args:
            dataset: image-and-mask dataset, e.g. ``LissIVImage & LissIVMask`` (images alone
                suffice for ``fallback="random"``).
            size: crop (height, width), or one number for both, in ``units``.
            length: crops per epoch (None: as many non-overlapping crops as fit the footprints).
            salient_fraction: share of crops drawn from the salient region, in [0, 1];
                may be changed between epochs.
            topk_percent: percentage of a map's cells (inside the footprint) that form the salient region, in (0, 100].
            fallback: ``"rare"`` or ``"random"``: what a salient draw does while its scene has no map.
            class_frequencies: pixel frequency of every class (needed for ``fallback="rare"``).
            rare_classes: rare class ids (needed for ``fallback="rare"``).
            temperature: ``T > 0`` of the rare-class distribution.
            units: ``Units.PIXELS`` or ``Units.CRS`` (rounded to whole pixels).
            roi: region of interest; crops stay inside (scene bounds ∩ roi).
            generator: seeded ``torch.Generator`` for reproducible crops.
            cell_size: side in pixels of the rare-class index cells.
        """
        if fallback not in {"rare", "random"}:
            raise ValueError(f"fallback must be 'rare' or 'random', got {fallback!r}")
        if fallback == "rare":
            if class_frequencies is None or rare_classes is None:
                raise ValueError("fallback='rare' needs class_frequencies and rare_classes")
            _check_rare_arguments(class_frequencies, rare_classes, temperature, cell_size)
        if not 0 < topk_percent <= 100:
            raise ValueError(f"topk_percent must be in (0, 100], got {topk_percent}")
        self.salient_fraction = salient_fraction
        super().__init__(dataset, size, length, units, roi, generator)
        self.topk_percent = topk_percent
        self.fallback = fallback
        self.rare_index: RareClassIndex | None = None
        if fallback == "rare":
            if any(fp.mask_path is None for fp in self.footprints):
                raise ValueError(
                    "fallback='rare' needs masks: pass an IntersectionDataset of images and a mask RasterDataset, "
                    f"got {type(dataset).__name__}"
                )
            probabilities = rare_class_probabilities(class_frequencies, rare_classes, temperature)
            self.rare_index = RareClassIndex(self.footprints, rare_classes, probabilities, cell_size)
        self._maps: dict[str, tuple[np.ndarray, Affine]] = {}
        self._salient_boxes: dict[int, np.ndarray] = {}

    @property
    def salient_fraction(self) -> float:
        """Share of crops drawn from the salient region (or the fallback), in [0, 1]."""
        return self._salient_fraction

    @salient_fraction.setter
    def salient_fraction(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"salient_fraction must be in [0, 1], got {value}")
        self._salient_fraction = float(value)

    def saliency_map(self, scene_id: str) -> tuple[np.ndarray, Affine] | None:
        """The scene's current map and its transform, or None before the first update."""
        return self._maps.get(scene_id)

    def update_saliency(self, scene_id: str, saliency: np.ndarray, transform: Affine | Sequence[float]) -> None:
        """Replace a scene's saliency map.

        A scene whose footprint is too small for a crop keeps its map but is never drawn.

        Args:
            scene_id: the scene's image file stem (one of :attr:`all_scene_ids`).
            saliency: low-resolution map, float, shape (h, w); higher = more salient. NaN cells are never salient.
            transform: affine transform of the map (cell -> scene CRS), north-up; an ``Affine``
                or its first six coefficients ``(a, b, c, d, e, f)``.
        """
        if scene_id not in self.all_scene_ids:
            raise KeyError(f"scene {scene_id!r} is not one of this sampler's scenes ({', '.join(self.all_scene_ids)})")
        scenes = [k for k, fp in enumerate(self.footprints) if fp.scene_id == scene_id]
        saliency = np.asarray(saliency, dtype=np.float32)
        if saliency.ndim != 2 or saliency.size == 0:
            raise ValueError(
                f"saliency map of scene {scene_id!r} must be a non-empty 2D array, got shape {saliency.shape}"
            )
        transform = transform if isinstance(transform, Affine) else Affine(*transform[:6])
        if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
            raise ValueError(
                f"saliency map of scene {scene_id!r} needs a north-up transform without rotation, got "
                f"{tuple(transform)[:6]}"
            )
        boxes = {k: self._top_boxes(self.footprints[k], saliency, transform) for k in scenes}
        if scenes and all(b.size == 0 for b in boxes.values()):
            raise ValueError(
                f"saliency map of scene {scene_id!r} has no finite cell inside the scene's footprint (check its "
                "transform)"
            )
        self._maps[scene_id] = (saliency.copy(), transform)
        for k, scene_boxes in boxes.items():
            if scene_boxes.size:
                self._salient_boxes[k] = scene_boxes
            else:
                self._salient_boxes.pop(k, None)

    def _top_boxes(self, fp: SceneFootprint, saliency: np.ndarray, transform: Affine) -> np.ndarray:
        """Pixel boxes ``(row0, row1, col0, col1)`` (floats, clipped to the footprint) of the top cells: (n, 4)."""
        height, width = saliency.shape
        col_edges = (transform.c + transform.a * np.arange(width + 1) - fp.left) / fp.res[0]
        row_edges = (fp.top - transform.f - transform.e * np.arange(height + 1)) / fp.res[1]
        row_centres, col_centres = (row_edges[:-1] + row_edges[1:]) / 2, (col_edges[:-1] + col_edges[1:]) / 2
        inside_rows = (row_centres >= fp.rows[0]) & (row_centres < fp.rows[1])
        inside_cols = (col_centres >= fp.cols[0]) & (col_centres < fp.cols[1])
        valid = inside_rows[:, None] & inside_cols[None, :] & np.isfinite(saliency)
        rows, cols = np.divmod(top_saliency_cells(np.nan_to_num(saliency), valid, self.topk_percent), width)
        return np.stack(
            [
                np.maximum(row_edges[rows], fp.rows[0]),
                np.minimum(row_edges[rows + 1], fp.rows[1]),
                np.maximum(col_edges[cols], fp.cols[0]),
                np.minimum(col_edges[cols + 1], fp.cols[1]),
            ],
            axis=1,
        )

    def _salient_query(self, scene: int) -> GeoSlice:
        fp = self.footprints[scene]
        boxes = self._salient_boxes.get(scene)
        if boxes is not None:
            row0, row1, col0, col1 = boxes[int(self._uniform() * len(boxes))]
            row = min(int(row0 + self._uniform() * (row1 - row0)), fp.rows[1] - 1)
            col = min(int(col0 + self._uniform() * (col1 - col0)), fp.cols[1] - 1)
            return fp.centred_query(row, col, self.size_px)
        if self.rare_index is not None:
            drawn = self.rare_index.draw(self._uniform, scene)
            if drawn is not None:
                return fp.centred_query(drawn[1], drawn[2], self.size_px)
        return self._random_query(scene)

    def __iter__(self) -> Iterator[GeoSlice]:
        """Yield ``len(self)`` queries: salient (or fallback) with probability ``salient_fraction``, else uniform."""
        for _ in range(len(self)):
            scene = self._pick_scene()
            if self._uniform() < self.salient_fraction:
                yield self._salient_query(scene)
            else:
                yield self._random_query(scene)
