"""Autoguides: whole-model flow posteriors."""

from pyro_flowvi.autoguide.flow_guide import AutoFlowGuide
from pyro_flowvi.autoguide.training import NonFiniteLossError, find_nonfinite, fit_svi

__all__ = ["AutoFlowGuide", "NonFiniteLossError", "find_nonfinite", "fit_svi"]
