"""Segmentation networks: the spatial-aware SegFormer and its building blocks."""

from rareseg.models.gated_fusion import GatedFusion
from rareseg.models.local_weights import WeightsReport, load_local_weights, read_state_dict, resolve_weights_path
from rareseg.models.mlp_decoder import AllMLPDecoder
from rareseg.models.pretrained import pretrained_encoder, save_pretrained_encoder, skip_initial_weights
from rareseg.models.saliency_block import SaliencyBlock, saliency_gate
from rareseg.models.segformer import SegmentationOutput, SpatialAwareSegFormer

__all__ = [
    "AllMLPDecoder",
    "GatedFusion",
    "SaliencyBlock",
    "SegmentationOutput",
    "SpatialAwareSegFormer",
    "WeightsReport",
    "load_local_weights",
    "pretrained_encoder",
    "read_state_dict",
    "resolve_weights_path",
    "saliency_gate",
    "save_pretrained_encoder",
    "skip_initial_weights",
]
