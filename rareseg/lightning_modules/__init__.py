"""Lightning tasks."""

from rareseg.lightning_modules.rareseg_module import RareSegModule, frozen_batchnorm_stats

__all__ = ["RareSegModule", "frozen_batchnorm_stats"]
