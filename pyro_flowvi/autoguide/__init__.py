"""Autoguides: whole-model flow posteriors and amortized (encoder + flow) local posteriors."""

from pyro_flowvi.autoguide.amortized import AmortizedFlowGuide
from pyro_flowvi.autoguide.fit import FitResult, Recipe, fit
from pyro_flowvi.autoguide.flow_guide import AutoFlowGuide
from pyro_flowvi.autoguide.objectives import MassCoveringELBO
from pyro_flowvi.autoguide.training import NonFiniteLossError, find_nonfinite, fit_svi

__all__ = [
    "AmortizedFlowGuide",
    "AutoFlowGuide",
    "FitResult",
    "MassCoveringELBO",
    "NonFiniteLossError",
    "Recipe",
    "find_nonfinite",
    "fit",
    "fit_svi",
]
