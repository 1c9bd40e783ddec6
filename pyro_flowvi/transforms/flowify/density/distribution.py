"""``FlowifiedDistribution``: a flowified network as a Pyro distribution (density model or guide).

Density model (maximum likelihood): :math:`\\log p(x) = \\log p_{\\text{base}}(F(x)) + \\sum_l C_l`,
exact when every layer is (``net.is_exact``), else :meth:`FlowifiedDistribution.log_prob_lower_bound`
gives the importance-weighted bound

.. math:: \\log p(x) \\ge \\mathbb E\\Big[\\log \\frac1K \\sum_{k=1}^K
          \\exp\\big(\\log p_{\\text{base}}(F(x; \\varepsilon_k)) + C(\\varepsilon_k)\\big)\\Big],

valid for every ``K`` and tighter as ``K`` grows (``K = 1`` is the paper's objective).

Variational family: ``rsample`` draws :math:`u \\sim p_{\\text{base}}` and runs the layers' inverses
in reverse order, :math:`\\log\\hat q(z) = \\log p_{\\text{base}}(u) + \\sum_l c_l`, caching
``(z, log q_hat)``; ``log_prob(z)`` returns the cached value when ``z`` *is* that tensor (what
``Trace_ELBO`` does).  For a non-increasing net :math:`\\hat q = q` exactly.  With an increasing
layer :math:`\\mathbb E[\\log \\hat q(z)] = \\log q(z)
+ \\mathrm{KL}(q(\\varepsilon|z) \\| r(\\varepsilon|z))`, so the ELBO computed with it is a valid lower
bound (auxiliary-variable VI); scoring an uncached value with a fresh forward pass would give an
*upper* estimate of the ELBO, so it is refused.
``JitTrace_ELBO`` (which may copy tensors) is not supported with non-exact nets.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from pyro_flowvi.transforms.flowify.density.layer import FlowifiedLayer

__all__ = ["FlowifiedDistribution"]

CACHE_SIZE = 4


class FlowifiedDistribution(dist.TorchDistribution):
    """Pushforward of ``base_dist`` through the *inverse* (sampling direction) of a flowified net.

    Args:
        base_dist: distribution with event shape ``net.out_shape`` (e.g. ``Normal(0, 1)`` expanded
            and ``.to_event(1)``).
        net: a :class:`~pyro_flowvi.transforms.flowify.density.layer.FlowifiedLayer` (usually a
            ``FlowifiedSequential``); register it with ``pyro.module`` when used in a guide.
        context: context tensor for a conditional net, or ``None``.

    Example:
        >>> from pyro_flowvi.transforms.flowify import FlowifiedLinear, FlowifiedSequential
        >>> net = FlowifiedSequential(FlowifiedLinear(3, 3), FlowifiedLinear(3, 1))
        >>> base = pyro.distributions.Normal(torch.zeros(1), 1.0).to_event(1)
        >>> d = FlowifiedDistribution(base, net)
        >>> z = d.rsample((4,))
        >>> d.log_prob(z).shape                          # cached: no forward pass
        torch.Size([4])
        >>> torch.allclose(d.log_prob(z.clone()), d.log_prob(z))  # exact net: recomputed
        True
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, base_dist: dist.TorchDistribution, net: FlowifiedLayer,
                 context: Tensor | None = None, validate_args: bool | None = None) -> None:
        if net.in_shape is None or net.out_shape is None:
            raise ValueError("FlowifiedDistribution: the net's shapes are not fixed; wrap it in "
                             "FlowifiedSequential with a sized layer")
        if tuple(base_dist.event_shape) != tuple(net.out_shape):
            raise ValueError(
                f"FlowifiedDistribution: base_dist has event shape {tuple(base_dist.event_shape)} "
                f"but the net outputs {tuple(net.out_shape)}; use e.g. "
                f"Normal(zeros({net.out_shape}), 1).to_event({len(net.out_shape)})")
        if (net.context_dim is None) != (context is None):
            raise ValueError(
                f"FlowifiedDistribution: the net has context_dim={net.context_dim} but context is "
                f"{'missing' if context is None else 'given'}")
        self.base_dist, self.net, self.context = base_dist, net, context
        self._cache: list[tuple[Tensor, Tensor]] = []
        batch_shape = base_dist.batch_shape
        if context is not None:
            batch_shape = torch.broadcast_shapes(batch_shape, context.shape[:-1])
        super().__init__(batch_shape, tuple(net.in_shape), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, len(self.event_shape))

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> FlowifiedDistribution:
        batch_shape = torch.Size(batch_shape)
        base = self.base_dist.expand(batch_shape)
        context = self.context
        if context is not None:
            context = context.expand(batch_shape + context.shape[-1:])
        return FlowifiedDistribution(base, self.net, context, validate_args=False)

    # -- sampling (the flowified inverse) ---------------------------------------------------------
    def rsample_with_log_prob(self, sample_shape: torch.Size = torch.Size()  # noqa: B008
                              ) -> tuple[Tensor, Tensor]:
        """``(z, log q_hat(z))`` in one pass; the pair is cached for :meth:`log_prob`."""
        u = self.base_dist.rsample(sample_shape)
        z, c = self.net.inverse_with_contribution(u, self.context)
        log_q = self.base_dist.log_prob(u) + c
        self._cache = [(z, log_q), *self._cache[: CACHE_SIZE - 1]]
        return z, log_q

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        return self.rsample_with_log_prob(sample_shape)[0]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        with torch.no_grad():
            return self.rsample(sample_shape)

    def sample_mean(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        """Samples with every dropped coordinate at its conditional mean (``mode="mean"``)."""
        with torch.no_grad():
            return self.net.inverse(self.base_dist.sample(sample_shape), self.context, mode="mean")

    def clear_cache(self) -> None:
        self._cache = []

    # -- scoring ------------------------------------------------------------------------------------
    def _forward_log_prob(self, value: Tensor, noise: bool = True) -> Tensor:
        y, c = self.net(value, self.context, noise=noise)
        return self.base_dist.log_prob(y) + c

    def log_prob(self, value: Tensor) -> Tensor:
        """Cached ``log q_hat`` for the distribution's own samples; otherwise the exact density
        (only when ``net.is_exact``)."""
        for z, log_q in self._cache:
            if value is z:
                return log_q
        if not self.net.is_exact:
            raise ValueError(
                f"FlowifiedDistribution.log_prob: value of shape {tuple(value.shape)} is not a "
                "sample this distribution just drew, and the net has a dimension-increasing layer "
                "(is_exact=False), so its density has no closed form. For a density model use "
                "log_prob_lower_bound(x, num_particles=K); in a guide, score the tensor rsample "
                "returned (the same object, not a copy).")
        return self._forward_log_prob(value)

    def log_prob_lower_bound(self, value: Tensor, num_particles: int = 1) -> Tensor:
        """Importance-weighted lower bound on ``log p(value)`` with ``K = num_particles`` noise
        draws (the exact log-density when ``net.is_exact``)."""
        if num_particles < 1:
            raise ValueError(f"log_prob_lower_bound: num_particles must be >= 1, got {num_particles}")
        if self.net.is_exact or num_particles == 1:
            return self._forward_log_prob(value)
        expanded = value.expand((num_particles,) + value.shape)
        lp = self._forward_log_prob(expanded)
        return torch.logsumexp(lp, 0) - math.log(num_particles)

    def __repr__(self) -> str:
        return (f"FlowifiedDistribution(event_shape={tuple(self.event_shape)}, "
                f"is_exact={self.net.is_exact})")
