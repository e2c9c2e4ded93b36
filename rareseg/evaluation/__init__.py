"""Evaluation of trained checkpoints and the ablation runner behind ``rareseg evaluate`` / ``rareseg bench``.

| module | job |
|---|---|
| ``evaluate`` | score a checkpoint on a split through the one inference pass: deployed decision + argmax |
| ``scores`` | probability histograms, reliability (ECE), precision-recall curves |
| ``report`` | ``metrics.json``, ``report.md`` and plots |
| ``ablation`` | the ablation rows x seeds runner (scored by ``evaluate_scenes``) |
| ``paired``, ``ablation_report`` | paired bootstrap statistics and the ablation report |
| ``command`` | ``rareseg evaluate`` and ``rareseg bench`` argument parsing |

The ablation runner's names are imported on first use, so ``rareseg evaluate`` does not import
the training stack. The evaluation names are imported here: the function ``evaluate`` shares its
name with its module, and only an import in this file keeps ``rareseg.evaluation.evaluate`` (the
attribute) the function once the module has been imported.
"""

from rareseg.core.lazy import lazy_exports
from rareseg.evaluation.evaluate import (
    DECISIONS,
    ScoredScene,
    SplitEvaluation,
    evaluate,
    evaluate_module,
    evaluate_predictor,
    evaluate_scenes,
    load_module,
)
from rareseg.evaluation.report import markdown_report, write_evaluation
from rareseg.evaluation.scores import ProbabilityHistogram, precision_recall_curve, reliability

LAZY_EXPORTS = {
    **{
        name: "rareseg.evaluation.ablation"
        for name in (
            "AblationRow",
            "config_digest",
            "discover_rows",
            "load_result",
            "run_ablation",
            "score_checkpoint",
            "train_row",
        )
    },
    "write_ablation_report": "rareseg.evaluation.ablation_report",
}
__all__ = [
    "DECISIONS",
    "ProbabilityHistogram",
    "ScoredScene",
    "SplitEvaluation",
    "evaluate",
    "evaluate_module",
    "evaluate_predictor",
    "evaluate_scenes",
    "load_module",
    "markdown_report",
    "precision_recall_curve",
    "reliability",
    "write_evaluation",
    *sorted(LAZY_EXPORTS),
]
__getattr__, __dir__ = lazy_exports(__name__, LAZY_EXPORTS)
