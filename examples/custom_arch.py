"""Tutorial 3: your own flow architecture, registered by name and used by the guides.

A builder returns a stack of transforms; ``register_arch(name, builder, ArchSpec(...))`` puts it
in the registry with its defaults (depth, width rule, capabilities), after which
``build_flow(name, D)``, ``AutoFlowGuide(model, name)`` and ``pyro_flowvi.fit(..., arch=name)``
all build it.  Here: RealNVP coupling layers with an LU-linear mixing layer in between, checked
by ``pyro_flowvi.testing.check_flow`` (round trip, log-det against autograd, one pass versus
two, scoring without inversion) before use.

    python examples/custom_arch.py
"""

import pyro
import pyro.distributions as dist
import torch

import pyro_flowvi
from pyro_flowvi import build_flow, register_arch
from pyro_flowvi.flows import ArchSpec
from pyro_flowvi.nn.masks import alternating_mask
from pyro_flowvi.testing import check_flow
from pyro_flowvi.transforms import AffineCoupling, FlowStack, LULinear


def coupling_lu(dim, *, context_dim, num_layers, hidden_dims):
    """``num_layers`` affine couplings (masks alternating), each after an LU-linear layer."""
    layers = []
    for k in range(num_layers):
        coupling = AffineCoupling(dim, alternating_mask(dim, k), hidden_dims=hidden_dims,
                                  context_dim=context_dim)
        layers += [LULinear(dim), coupling]
    return FlowStack(layers, context_dim)


def model():
    z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
    pyro.sample("z2", dist.Normal(z1**2, 0.5))  # a banana


def main(steps=1500, num_samples=4000, progress=True):
    register_arch("coupling-lu", coupling_lu,
                  ArchSpec(num_layers=3, summary="affine couplings with LU-linear mixing"),
                  overwrite=True)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the invariant checks compare to 1e-8 in float64
    try:
        check_flow(build_flow("coupling-lu", 4, hidden_dims=[8]), torch.randn(5, 4))
    finally:
        torch.set_default_dtype(dtype)
    pyro.set_rng_seed(0)
    result = pyro_flowvi.fit(model, arch="coupling-lu", progress=progress,
                             recipe=pyro_flowvi.Recipe(max_steps=steps),
                             num_diagnostic_samples=num_samples)
    print(result.report)
    return result


if __name__ == "__main__":
    main()
