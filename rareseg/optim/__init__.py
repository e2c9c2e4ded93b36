"""Optimisers: CASM, sharpness-aware minimisation with a rare-density-adaptive radius."""

from rareseg.optim.casm import CASM, casm_rho, rare_pixel_counts

__all__ = ["CASM", "casm_rho", "rare_pixel_counts"]
