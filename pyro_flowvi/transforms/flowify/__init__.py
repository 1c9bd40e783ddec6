"""Flowified layers: linear, convolutional and activation layers as (generalised) flows.

See ``docs/flowified.rst`` and ``../shared/design/flowification.md``.  Density direction =
``forward`` (data -> code), sampling direction = ``inverse``; contributions ``C`` carry SurVAE's
sign (``log p_in(x) = log p_out(y) + C``).
"""

from pyro_flowvi.transforms.flowify.activations import (
    FlowifiedBijective,
    FlowifiedLeakyReLU,
    FlowifiedSpline,
    InvertibleLeakyReLU,
    SharedSpline,
    SplineParameters,
    flowify_activation,
    leaky_relu_and_log_grad,
    rational_quadratic_spline,
)
from pyro_flowvi.transforms.flowify.arch import (
    FlowifiedBijection,
    flowified_block,
    flowified_flow,
)
from pyro_flowvi.transforms.flowify.conditioners import (
    GaussianConditioner,
    LinearGaussianConditioner,
    default_conditioner,
)
from pyro_flowvi.transforms.flowify.conv import (
    FlowifiedConv2d,
    FlowifiedPad,
    FlowifiedTile,
    FlowifiedTileLinear,
)
from pyro_flowvi.transforms.flowify.distribution import FlowifiedDistribution
from pyro_flowvi.transforms.flowify.layer import (
    FlowifiedLayer,
    FlowifiedReshape,
    FlowifiedSequential,
)
from pyro_flowvi.transforms.flowify.linear import FlowifiedLinear, SVDFactors, SVDLinear
from pyro_flowvi.transforms.flowify.rotation import Rotation

__all__ = [
    "FlowifiedBijection",
    "FlowifiedBijective",
    "FlowifiedConv2d",
    "FlowifiedDistribution",
    "FlowifiedLayer",
    "FlowifiedLeakyReLU",
    "FlowifiedLinear",
    "FlowifiedPad",
    "FlowifiedReshape",
    "FlowifiedSequential",
    "FlowifiedSpline",
    "FlowifiedTile",
    "FlowifiedTileLinear",
    "GaussianConditioner",
    "InvertibleLeakyReLU",
    "LinearGaussianConditioner",
    "Rotation",
    "SVDFactors",
    "SVDLinear",
    "SharedSpline",
    "SplineParameters",
    "default_conditioner",
    "flowified_block",
    "flowified_flow",
    "flowify_activation",
    "leaky_relu_and_log_grad",
    "rational_quadratic_spline",
]
