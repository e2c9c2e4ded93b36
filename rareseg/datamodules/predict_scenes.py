"""Whole scenes for the predict stage: one descriptor ``{"path", "name"}`` per scene.

The predict stage does not cut scenes into patches: each batch names one scene, and a
prediction writer (``rareseg.inference.ScenePredictionWriter``) predicts it tile by tile with
memory independent of the scene size. Descriptors are plain strings, so they pass through
DataLoaders, device transfer and DDP's sampler unchanged.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from torch.utils.data import Dataset

from rareseg.datamodules.scenes import DataError, open_geotiff

#: File patterns of the GeoTIFFs taken from a folder given as a predict input.
GEOTIFF_PATTERNS = ("*.tif", "*.tiff")
_GLOB_CHARACTERS = frozenset("*?[")


class SceneDescriptor(TypedDict):
    """One scene to predict.

    Attributes:
        path: the scene GeoTIFF.
        name: the scene's output name (its file stem), unique within a predict run.
    """

    path: str
    name: str


def is_scene_descriptor(batch: Any) -> bool:
    """Whether a predict batch is a :class:`SceneDescriptor` (a mapping with string ``path`` and ``name``)."""
    return isinstance(batch, Mapping) and isinstance(batch.get("path"), str) and isinstance(batch.get("name"), str)


def _expand(entry: str) -> list[Path]:
    """Files named by one predict input: a file, a folder's GeoTIFFs or a glob pattern's matches, sorted."""
    path = Path(entry).expanduser()
    if path.is_dir():
        files = sorted(p for pattern in GEOTIFF_PATTERNS for p in path.glob(pattern))
        if not files:
            raise DataError(f"{path}: predict input folder holds no GeoTIFF ({', '.join(GEOTIFF_PATTERNS)})")
        return files
    if _GLOB_CHARACTERS & set(entry):
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not files:
            raise DataError(f"{entry}: no file matches this predict input pattern")
        return files
    if not path.is_file():
        raise DataError(f"{path}: predict input not found")
    return [path]


def resolve_predict_inputs(inputs: Sequence[str], bands: int) -> list[SceneDescriptor]:
    """Check the scenes named by GeoTIFF files, folders and glob patterns; one descriptor each.

    No mask is needed. A scene without a CRS is accepted (the outputs then have none, as with
    ``rareseg infer``).

    Args:
        inputs: files, folders (their ``*.tif``/``*.tiff``) or glob patterns; a file reached
            twice counts once.
        bands: band count every scene must have.

    Returns:
        Descriptors in input order, then sorted within each folder or pattern.

    Raises:
        DataError: one line naming the file or entry: nothing found, not a readable GeoTIFF,
            wrong band count, or two scenes with the same name (file stem) in different places.
    """
    if not inputs:
        raise DataError("predict_inputs is empty (leave it unset to predict the test split's scenes)")
    scenes: dict[str, SceneDescriptor] = {}
    for entry in inputs:
        for path in _expand(str(entry)):
            resolved = str(path.resolve())
            earlier = scenes.get(path.stem)
            if earlier is not None:
                if earlier["path"] == resolved:
                    continue
                raise DataError(
                    f"{path}: has the same scene name {path.stem!r} as {earlier['path']} (outputs go to one folder "
                    "per name)"
                )
            with open_geotiff(path) as src:
                if src.count != bands:
                    raise DataError(f"{path}: has {src.count} bands, expected {bands}")
            scenes[path.stem] = SceneDescriptor(path=resolved, name=path.stem)
    return list(scenes.values())


def single_scene(batch: Sequence[SceneDescriptor]) -> SceneDescriptor:
    """Collate function of batches of one scene: the descriptor itself."""
    if len(batch) != 1:
        raise ValueError(f"a predict batch holds one scene, got {len(batch)}")
    return batch[0]


class SceneDescriptors(Dataset):
    """Map-style dataset of scene descriptors (one per index), batched one at a time with :func:`single_scene`."""

    def __init__(self, scenes: Sequence[SceneDescriptor]) -> None:
        """Hold the scenes in the given order."""
        self.scenes = list(scenes)

    def __len__(self) -> int:
        """Number of scenes."""
        return len(self.scenes)

    def __getitem__(self, index: int) -> SceneDescriptor:
        """A copy of the ``index``-th descriptor."""
        return SceneDescriptor(**self.scenes[index])
