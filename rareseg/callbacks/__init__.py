"""Reusable Lightning callbacks: rare-class metrics, hyperparameter babysitting, NaN guard, thresholds, saliency maps.

They depend only on Lightning's API, logged metric names, dotted attribute paths, the dict a
module's ``validation_step``/``test_step`` returns and the neutral :mod:`rareseg.core` (scores,
histograms, figures, shared constants), so any Lightning project can add them to its Trainer.
What ``SaliencyRefresh`` needs from the module and the datamodule it finds by duck typing.
"""

from rareseg.callbacks.babysitter import Babysitter
from rareseg.callbacks.knob import Knob, KnobPathError
from rareseg.callbacks.non_finite_guard import NonFiniteGuard
from rareseg.callbacks.rare_class_metrics import RareClassMetrics
from rareseg.callbacks.saliency_refresh import SaliencyRefresh
from rareseg.callbacks.threshold_calibrator import ThresholdCalibrator

__all__ = [
    "Babysitter",
    "Knob",
    "KnobPathError",
    "NonFiniteGuard",
    "RareClassMetrics",
    "SaliencyRefresh",
    "ThresholdCalibrator",
]
