"""Whole-scene tiled prediction to georeferenced GeoTIFFs with bounded memory."""

from rareseg.inference.decisions import (
    assign_classes,
    nodata_pixels,
    override_rare_classes,
    quantise_saliency,
    topk_level,
)
from rareseg.inference.predictor import (
    DEFAULT_THRESHOLD,
    THRESHOLDS_KEY,
    Predictor,
    load_predictor,
    resolve_device,
    resolve_precision,
)
from rareseg.inference.rasters import BlockRowWriter, overview_factors
from rareseg.inference.scene import OUTPUTS, InferenceCancelled, SceneResult, check_options, predict_scene
from rareseg.inference.summary import areas_hectares, pixel_area_m2
from rareseg.inference.tiling import blend_window, coverage_weights, edge_ramp, tile_origins
from rareseg.inference.writer import ScenePredictionWriter

__all__ = [
    "DEFAULT_THRESHOLD",
    "OUTPUTS",
    "THRESHOLDS_KEY",
    "BlockRowWriter",
    "InferenceCancelled",
    "Predictor",
    "ScenePredictionWriter",
    "SceneResult",
    "areas_hectares",
    "assign_classes",
    "blend_window",
    "check_options",
    "coverage_weights",
    "edge_ramp",
    "load_predictor",
    "nodata_pixels",
    "overview_factors",
    "override_rare_classes",
    "pixel_area_m2",
    "predict_scene",
    "quantise_saliency",
    "resolve_device",
    "resolve_precision",
    "tile_origins",
    "topk_level",
]
