"""LISS-IV data: dataset-root contract, TorchGeo datasets, statistics, samplers and the datamodule.

| module | job |
|---|---|
| ``scenes`` | ``classes.yaml``, paired scene files and their one-line ``DataError`` checks |
| ``datasets`` | ``LissIVImage`` / ``LissIVMask`` (TorchGeo raster datasets, one time slot per scene) |
| ``stats`` | training-split band statistics and class frequencies, cached in ``stats.json`` |
| ``normalisation`` | scene samples, their band statistics, the ``dataset``/``scene`` normalisations |
| ``footprints`` | where crops of each scene may lie (``SceneFootprint``) |
| ``rare_index`` | the disk-backed rare-class index (``RareClassIndex``) |
| ``samplers`` | ``RareClassGeoSampler`` and ``SaliencyGuidedGeoSampler`` |
| ``predict_scenes`` | whole-scene descriptors of the predict stage |
| ``liss4`` | ``LissIVDataModule`` |
"""

from rareseg.datamodules.datasets import LissIVImage, LissIVMask
from rareseg.datamodules.footprints import SceneFootprint, scene_footprints
from rareseg.datamodules.liss4 import LissIVDataModule, split_scenes
from rareseg.datamodules.predict_scenes import (
    SceneDescriptor,
    SceneDescriptors,
    is_scene_descriptor,
    resolve_predict_inputs,
    single_scene,
)
from rareseg.datamodules.rare_index import RareClassIndex, cell_class_counts, rare_class_probabilities
from rareseg.datamodules.samplers import RareClassGeoSampler, SaliencyGuidedGeoSampler, top_saliency_cells
from rareseg.datamodules.scenes import ClassTable, DataError, Scene, scan_root
from rareseg.datamodules.stats import DatasetStats, compute_stats, load_or_compute_stats

__all__ = [
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
    "SceneDescriptor",
    "SceneDescriptors",
    "SceneFootprint",
    "cell_class_counts",
    "compute_stats",
    "is_scene_descriptor",
    "load_or_compute_stats",
    "rare_class_probabilities",
    "resolve_predict_inputs",
    "scan_root",
    "scene_footprints",
    "single_scene",
    "split_scenes",
    "top_saliency_cells",
]
