"""The neutral core: what every other part of rareseg agrees on, importing nothing else of rareseg.

| module | holds |
|---|---|
| ``conventions`` | ``IGNORE_INDEX`` (255: ignore label and uint8 nodata), ``THRESHOLDS_KEY``, ``DEFAULT_PALETTE`` |
| ``scores`` | per-class and summary scores of a confusion matrix |
| ``histograms`` | the probability-bin convention and the histogram -> precision/recall/F1 routine |
| ``plots`` | figures shared by the metrics callback and the evaluation report |
| ``files`` | write-then-rename |
| ``help`` | the help formatter of the argparse subcommands |
| ``pixels`` | which pixels hold data (nodata and non-finite values) |
| ``lazy`` | lazy package exports |

The callbacks may import this package and nothing else of rareseg; evaluation and inference
import it instead of each other. Names are imported on first use, so ``rareseg.core`` costs only
what is read from it.
"""

from rareseg.core.lazy import lazy_exports

LAZY_EXPORTS = {
    "DEFAULT_PALETTE": "rareseg.core.conventions",
    "IGNORE_INDEX": "rareseg.core.conventions",
    "THRESHOLDS_KEY": "rareseg.core.conventions",
    "resolve_class_colors": "rareseg.core.conventions",
    "DefaultsHelpFormatter": "rareseg.core.help",
    "publish": "rareseg.core.files",
    "write_atomically": "rareseg.core.files",
    "best_f1_threshold": "rareseg.core.histograms",
    "bin_edges": "rareseg.core.histograms",
    "precision_recall_f1": "rareseg.core.histograms",
    "probability_bins": "rareseg.core.histograms",
    "probability_histograms": "rareseg.core.histograms",
    "lazy_exports": "rareseg.core.lazy",
    "nodata_pixels": "rareseg.core.pixels",
    "non_finite_pixels": "rareseg.core.pixels",
    "confusion_matrix": "rareseg.core.scores",
    "per_class_scores": "rareseg.core.scores",
    "summary_scores": "rareseg.core.scores",
}
__all__ = sorted(LAZY_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, LAZY_EXPORTS)
