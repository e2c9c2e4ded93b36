"""Evaluation of trained checkpoints and the ablation runner behind ``rareseg evaluate`` / ``rareseg bench``."""

from rareseg.evaluation.ablation import (
    ROWS,
    AblationRow,
    aggregate,
    config_digest,
    load_result,
    run_ablation,
    train_row,
    write_ablation_report,
)
from rareseg.evaluation.evaluate import SplitEvaluation, evaluate, evaluate_module, load_module
from rareseg.evaluation.report import markdown_report, write_evaluation
from rareseg.evaluation.scores import ProbabilityHistogram, precision_recall_curve, reliability

__all__ = [
    "ROWS",
    "AblationRow",
    "ProbabilityHistogram",
    "SplitEvaluation",
    "aggregate",
    "config_digest",
    "evaluate",
    "evaluate_module",
    "load_module",
    "load_result",
    "markdown_report",
    "precision_recall_curve",
    "reliability",
    "run_ablation",
    "train_row",
    "write_ablation_report",
    "write_evaluation",
]
