"""Whole-scene inference: the one path from a trained network to blended, decided, georeferenced outputs.

| module | job |
|---|---|
| ``checkpoint`` | the one checkpoint loader (``load_predictor``, ``load_module``) and its one-line errors |
| ``predictor`` | ``Predictor``: network + band statistics + classes + thresholds; the one normalisation |
| ``radiometry`` | the scene's scale and band order against the checkpoint's (``prepare_scene``), ``input_scale`` |
| ``tiling`` | tile layout, blending window, ``BlendedRows`` |
| ``scene`` | the pass (``blend_scene``: tile, predict, blend, stream rows) and ``predict_scene`` (GeoTIFFs) |
| ``decisions`` | the deployed decision rule (``deployed_classes``), output encodings, top-k |
| ``rasters`` | output files, their description, row writing, overviews and COG layout, QGIS sidecars, previews |
| ``summary`` | grid and class areas of ``summary.json`` |
| ``saliency_map`` | low-resolution saliency maps for the training sampler |
| ``writer`` | ``ScenePredictionWriter`` for ``rareseg predict`` |
| ``command`` | ``rareseg infer`` |

Names are imported on first use: ``rareseg.inference.predictor`` does not import the Lightning
task, so the task can use the pass while ``checkpoint`` (which rebuilds the task) sits above it.
"""

from rareseg.core.lazy import lazy_exports

LAZY_EXPORTS = {
    "load_module": "rareseg.inference.checkpoint",
    "load_predictor": "rareseg.inference.checkpoint",
    "read_checkpoint": "rareseg.inference.checkpoint",
    "Decisions": "rareseg.inference.decisions",
    "SALIENCY_LEVELS": "rareseg.inference.decisions",
    "assign_classes": "rareseg.inference.decisions",
    "decide_rows": "rareseg.inference.decisions",
    "deployed_classes": "rareseg.inference.decisions",
    "nodata_pixels": "rareseg.inference.decisions",
    "override_rare_classes": "rareseg.inference.decisions",
    "quantise_saliency": "rareseg.inference.decisions",
    "topk_level": "rareseg.inference.decisions",
    "DEFAULT_THRESHOLD": "rareseg.inference.predictor",
    "Predictor": "rareseg.inference.predictor",
    "resolve_device": "rareseg.inference.predictor",
    "resolve_precision": "rareseg.inference.predictor",
    "RadiometryCheck": "rareseg.inference.radiometry",
    "RadiometryWarning": "rareseg.inference.radiometry",
    "check_radiometry": "rareseg.inference.radiometry",
    "parse_input_scale": "rareseg.inference.radiometry",
    "prepare_scene": "rareseg.inference.radiometry",
    "OUTPUTS": "rareseg.inference.rasters",
    "PROBABILITY_SCALE": "rareseg.inference.rasters",
    "BlockRowWriter": "rareseg.inference.rasters",
    "describe_outputs": "rareseg.inference.rasters",
    "overview_factors": "rareseg.inference.rasters",
    "write_mask_sidecars": "rareseg.inference.rasters",
    "accumulate_cells": "rareseg.inference.saliency_map",
    "scene_saliency_map": "rareseg.inference.saliency_map",
    "InferenceCancelled": "rareseg.inference.scene",
    "PassStats": "rareseg.inference.scene",
    "SceneResult": "rareseg.inference.scene",
    "blend_scene": "rareseg.inference.scene",
    "check_options": "rareseg.inference.scene",
    "open_scene": "rareseg.inference.scene",
    "predict_scene": "rareseg.inference.scene",
    "areas_hectares": "rareseg.inference.summary",
    "grid_summary": "rareseg.inference.summary",
    "pixel_area_m2": "rareseg.inference.summary",
    "BlendedRows": "rareseg.inference.tiling",
    "blend_window": "rareseg.inference.tiling",
    "coverage_weights": "rareseg.inference.tiling",
    "edge_ramp": "rareseg.inference.tiling",
    "tile_origins": "rareseg.inference.tiling",
    "ScenePredictionWriter": "rareseg.inference.writer",
}
__all__ = sorted(LAZY_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, LAZY_EXPORTS)
