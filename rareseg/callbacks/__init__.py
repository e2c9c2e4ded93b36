"""Reusable Lightning callbacks: rare-class metrics, hyperparameter babysitting, NaN guard, thresholds.

They depend only on Lightning's API, logged metric names, dotted attribute paths and the dict a
module's ``validation_step``/``test_step`` returns, so any Lightning project can add them to its
Trainer.
"""

from rareseg.callbacks.babysitter import Babysitter
from rareseg.callbacks.knob import Knob, KnobPathError
from rareseg.callbacks.non_finite_guard import NonFiniteGuard
from rareseg.callbacks.rare_class_metrics import RareClassMetrics, per_class_scores, summary_scores
from rareseg.callbacks.saliency_refresh import SaliencyRefresh
from rareseg.callbacks.threshold_calibrator import CHECKPOINT_KEY, ThresholdCalibrator, best_f1_threshold

__all__ = [
    "CHECKPOINT_KEY",
    "Babysitter",
    "Knob",
    "KnobPathError",
    "NonFiniteGuard",
    "RareClassMetrics",
    "SaliencyRefresh",
    "ThresholdCalibrator",
    "best_f1_threshold",
    "per_class_scores",
    "summary_scores",
]
