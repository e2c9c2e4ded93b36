"""Segmentation losses as config plug-ins: ARBT, the saliency BCE and baselines over smp / torch.

Every segmentation loss takes ``class_frequencies`` first and ``ignore_index``, and maps
``(logits (B, K, H, W), target (B, H, W))`` to a scalar.
"""

from ._functional import arbt_alpha, arbt_loss, inverse_frequency_weights, one_hot_valid
from .arbt import ARBTLoss
from .baselines import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    LovaszLoss,
    TverskyLoss,
    WeightedCrossEntropyLoss,
)
from .saliency_bce import SaliencyBCELoss

__all__ = [
    "ARBTLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszLoss",
    "SaliencyBCELoss",
    "TverskyLoss",
    "WeightedCrossEntropyLoss",
    "arbt_alpha",
    "arbt_loss",
    "inverse_frequency_weights",
    "one_hot_valid",
]
