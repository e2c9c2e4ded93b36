"""LISS-IV data: dataset-root contract, TorchGeo datasets, statistics and the datamodule."""

from rareseg.datamodules.datasets import LissIVImage, LissIVMask
from rareseg.datamodules.liss4 import LissIVDataModule, split_scenes
from rareseg.datamodules.samplers import (
    RareClassGeoSampler,
    RareClassIndex,
    SaliencyGuidedGeoSampler,
    SceneFootprint,
    cell_class_counts,
    rare_class_probabilities,
    scene_footprints,
    top_saliency_cells,
)
from rareseg.datamodules.scenes import IGNORE_INDEX, ClassTable, DataError, Scene, scan_root
from rareseg.datamodules.stats import DatasetStats, compute_stats, load_or_compute_stats

__all__ = [
    "IGNORE_INDEX",
    "ClassTable",
    "DataError",
    "DatasetStats",
    "LissIVDataModule",
    "LissIVImage",
    "LissIVMask",
    "RareClassGeoSampler",
    "RareClassIndex",
    "SaliencyGuidedGeoSampler",
    "Scene",
    "SceneFootprint",
    "cell_class_counts",
    "compute_stats",
    "load_or_compute_stats",
    "rare_class_probabilities",
    "scan_root",
    "scene_footprints",
    "split_scenes",
    "top_saliency_cells",
]
