"""Flow bijectors as Pyro ``TransformModule``s, each with a ``Conditional...`` twin."""

from pyro_flowvi.transforms.actnorm import ActNorm
from pyro_flowvi.transforms.autoregressive import (
    AffineAutoregressive,
    ConditionalAffineAutoregressive,
    conditional_iaf,
    iaf,
    maf,
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
    real_nvp_layer,
)
from pyro_flowvi.transforms.elementwise import AffineTransformer
from pyro_flowvi.transforms.flowify import (
    FlowifiedBijection,
    InvertibleLeakyReLU,
    SharedSpline,
    SVDLinear,
)
from pyro_flowvi.transforms.linear import LULinear, Permute
from pyro_flowvi.transforms.pyro_layers import PyroLayer
from pyro_flowvi.transforms.sylvester import ConditionalSylvester, Sylvester

__all__ = [
    "ActNorm",
    "AffineAutoregressive",
    "AffineCoupling",
    "AffineTransformer",
    "ConditionalAffineAutoregressive",
    "ConditionalAffineCoupling",
    "ConditionalFlowTransform",
    "ConditionalSylvester",
    "ConditionedFlow",
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
    "Sylvester",
    "conditional_iaf",
    "iaf",
    "maf",
    "real_nvp_layer",
]
