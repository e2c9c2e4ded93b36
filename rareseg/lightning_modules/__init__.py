"""Lightning tasks."""

from rareseg.lightning_modules.rareseg_module import RareSegModule, check_precision, frozen_batchnorm_stats

__all__ = ["RareSegModule", "check_precision", "frozen_batchnorm_stats"]
