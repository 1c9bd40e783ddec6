"""pyro_flowvi: normalizing-flow variational inference for Pyro."""

from pyro_flowvi.autoguide import (
    AmortizedFlowGuide,
    AutoFlowGuide,
    FitResult,
    MassCoveringELBO,
    Recipe,
    fit,
)
from pyro_flowvi.flows import available_archs, build_flow, register_arch

__version__ = "0.1.0"

__all__ = [
    "AmortizedFlowGuide",
    "AutoFlowGuide",
    "FitResult",
    "MassCoveringELBO",
    "Recipe",
    "__version__",
    "available_archs",
    "build_flow",
    "fit",
    "register_arch",
]
