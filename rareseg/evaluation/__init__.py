"""Evaluation of trained checkpoints and the ablation runner behind ``rareseg evaluate`` / ``rareseg bench``."""

from rareseg.evaluation.ablation import (
    AblationRow,
    config_digest,
    discover_rows,
    load_result,
    run_ablation,
    score_checkpoint,
    train_row,
)
from rareseg.evaluation.ablation_report import write_ablation_report
from rareseg.evaluation.evaluate import SplitEvaluation, evaluate, evaluate_module, load_module
from rareseg.evaluation.report import markdown_report, write_evaluation
from rareseg.evaluation.scores import ProbabilityHistogram, precision_recall_curve, reliability

__all__ = [
    "AblationRow",
    "ProbabilityHistogram",
    "SplitEvaluation",
    "config_digest",
    "discover_rows",
    "evaluate",
    "evaluate_module",
    "load_module",
    "load_result",
    "markdown_report",
    "precision_recall_curve",
    "reliability",
    "run_ablation",
    "score_checkpoint",
    "train_row",
    "write_ablation_report",
    "write_evaluation",
]
