"""pyro_flowvi: normalizing-flow variational inference for Pyro.

The public names below are imported on first use (PEP 562), so ``import pyro_flowvi`` (and the
``pyro-flowvi`` command's ``--help``) does not pay for importing torch and Pyro.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOME = {
    "AmortizedFlowGuide": "pyro_flowvi.autoguide",
    "AutoFlowGuide": "pyro_flowvi.autoguide",
    "FitResult": "pyro_flowvi.autoguide",
    "MassCoveringELBO": "pyro_flowvi.autoguide",
    "Recipe": "pyro_flowvi.autoguide",
    "fit": "pyro_flowvi.autoguide",
    "available_archs": "pyro_flowvi.flows",
    "build_flow": "pyro_flowvi.flows",
    "register_arch": "pyro_flowvi.flows",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'pyro_flowvi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
