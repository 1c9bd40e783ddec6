"""Flow bijectors as Pyro ``TransformModule``s, each with a ``Conditional...`` twin."""

from pyro_flowvi.transforms.actnorm import ActNorm
from pyro_flowvi.transforms.autoregressive import (
    AffineAutoregressive,
    Autoregressive,
    ConditionalAffineAutoregressive,
    ConditionalAutoregressive,
    conditional_iaf,
    iaf,
    maf,
    spline_autoregressive,
)
from pyro_flowvi.transforms.base import (
    ConditionalFlowTransform,
    ConditionedFlow,
    FlowStack,
    FlowTransform,
    Inverted,
)
from pyro_flowvi.transforms.coupling import (
    AffineCoupling,
    ConditionalAffineCoupling,
    ConditionalCoupling,
    Coupling,
    real_nvp_layer,
    spline_coupling,
)
from pyro_flowvi.transforms.elementwise import AffineTransformer, ComposedTransformer
from pyro_flowvi.transforms.flowify import (
    FlowifiedBijection,
    InvertibleLeakyReLU,
    SharedSpline,
    SVDLinear,
)
from pyro_flowvi.transforms.linear import LULinear, Permute
from pyro_flowvi.transforms.pyro_layers import PyroLayer
from pyro_flowvi.transforms.spline import SplineTransformer
from pyro_flowvi.transforms.sylvester import ConditionalSylvester, Sylvester
from pyro_flowvi.transforms.tails import TukeyTails

__all__ = [
    "ActNorm",
    "AffineAutoregressive",
    "AffineCoupling",
    "AffineTransformer",
    "ComposedTransformer",
    "Autoregressive",
    "ConditionalAffineAutoregressive",
    "ConditionalAffineCoupling",
    "ConditionalAutoregressive",
    "ConditionalCoupling",
    "ConditionalFlowTransform",
    "ConditionalSylvester",
    "ConditionedFlow",
    "Coupling",
    "FlowStack",
    "FlowTransform",
    "FlowifiedBijection",
    "Inverted",
    "InvertibleLeakyReLU",
    "LULinear",
    "Permute",
    "PyroLayer",
    "SVDLinear",
    "SharedSpline",
    "SplineTransformer",
    "Sylvester",
    "TukeyTails",
    "conditional_iaf",
    "iaf",
    "maf",
    "real_nvp_layer",
    "spline_autoregressive",
    "spline_coupling",
]
