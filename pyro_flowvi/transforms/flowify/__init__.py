"""Flowified layers (Mate et al. 2022): linear, convolutional and activation layers as flows.

Two direction conventions live in two subpackages (``docs/flowified.rst``,
``../shared/design/flowification.md``):

* :mod:`~pyro_flowvi.transforms.flowify.density`: :class:`FlowifiedLayer`\\ s, whose ``forward`` is
  the *density* direction (data -> code) and returns a likelihood contribution ``C`` with SurVAE's
  sign (``log p_in(x) = log p_out(y) + C``); their ``inverse`` samples.  They change dimension and
  are not ``TransformModule``\\ s.
* :mod:`~pyro_flowvi.transforms.flowify.sampling`: ``FlowTransform``\\ s, whose ``forward`` is the
  *sampling* direction (base -> latent) like every other transform of the package:
  :class:`SVDLinear`, :class:`InvertibleLeakyReLU`, :class:`SharedSpline` and
  :class:`FlowifiedBijection` (a non-increasing flowified net as a bijection; the ``"flowified"``
  architecture).

The direction-neutral parts (rotations, the SVD factors, the spline maths, the Gaussian
conditioners) sit beside them.  Every public name is importable from here.
"""

from pyro_flowvi.transforms.flowify.conditioners import (
    GaussianConditioner,
    LinearGaussianConditioner,
    default_conditioner,
)
from pyro_flowvi.transforms.flowify.density.activations import (
    FlowifiedBijective,
    FlowifiedLeakyReLU,
    FlowifiedSpline,
    flowify_activation,
)
from pyro_flowvi.transforms.flowify.density.conv import (
    FlowifiedConv2d,
    FlowifiedPad,
    FlowifiedTile,
    FlowifiedTileLinear,
)
from pyro_flowvi.transforms.flowify.density.distribution import FlowifiedDistribution
from pyro_flowvi.transforms.flowify.density.layer import (
    FlowifiedLayer,
    FlowifiedReshape,
    FlowifiedSequential,
)
from pyro_flowvi.transforms.flowify.density.linear import FlowifiedLinear
from pyro_flowvi.transforms.flowify.elementwise import (
    SplineParameters,
    leaky_relu_and_log_grad,
    rational_quadratic_spline,
)
from pyro_flowvi.transforms.flowify.rotation import Rotation
from pyro_flowvi.transforms.flowify.sampling.activations import InvertibleLeakyReLU, SharedSpline
from pyro_flowvi.transforms.flowify.sampling.arch import (
    FlowifiedBijection,
    flowified_block,
    flowified_flow,
)
from pyro_flowvi.transforms.flowify.sampling.linear import SVDLinear
from pyro_flowvi.transforms.flowify.svd import SVDFactors

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
