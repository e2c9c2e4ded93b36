"""Segmentation losses as config plug-ins: ARBT, the saliency BCE and baselines over smp / torch.

Every segmentation loss takes ``class_frequencies`` first and ``ignore_index``, and maps
``(logits (B, K, H, W), target (B, H, W))`` to a scalar.

Split protocol: a loss that can be divided exactly into the share of some classes and the rest
has a method ``split(logits, target, classes) -> (part, rest)`` with ``part + rest`` equal to
``loss(logits, target)`` (up to rounding) and each part differentiable on its own; a sharpness-
aware step on the rare-class loss only (``RareSegModule(sam_on="rare")``) needs it.
:class:`ARBTLoss` splits by class (region and pixel terms of the classes, CE of their pixels),
:class:`CrossEntropyLoss`, :class:`WeightedCrossEntropyLoss` and :class:`FocalLoss` by the true
class of each pixel, each part keeping the full loss's normaliser.
"""

from ._functional import (
    arbt_alpha,
    arbt_class_terms,
    arbt_loss,
    inverse_frequency_weights,
    one_hot_valid,
    split_by_truth,
    tversky_error_weights,
)
from .arbt import ARBTLoss
from .baselines import (
    CrossEntropyLoss,
    CrossEntropyLovaszLoss,
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
    "CrossEntropyLovaszLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszLoss",
    "SaliencyBCELoss",
    "TverskyLoss",
    "WeightedCrossEntropyLoss",
    "arbt_alpha",
    "arbt_class_terms",
    "arbt_loss",
    "inverse_frequency_weights",
    "one_hot_valid",
    "split_by_truth",
    "tversky_error_weights",
]
