"""LISS-IV data: dataset-root contract, TorchGeo datasets, statistics and the datamodule."""

from rareseg.datamodules.datasets import LissIVImage, LissIVMask
from rareseg.datamodules.liss4 import LissIVDataModule, split_scenes
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
    "Scene",
    "compute_stats",
    "load_or_compute_stats",
    "scan_root",
    "split_scenes",
]
