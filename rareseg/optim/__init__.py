"""Optimisers: CASM, sharpness-aware minimisation with a rare-density-adaptive radius."""

from rareseg.optim.casm import CASM, casm_rho, rho_warmup_factor
from rareseg.optim.rare_density import rare_pixel_counts, rare_pixel_fraction

__all__ = ["CASM", "casm_rho", "rare_pixel_counts", "rare_pixel_fraction", "rho_warmup_factor"]
