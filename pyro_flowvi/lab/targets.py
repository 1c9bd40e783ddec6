"""Normalised test targets with known log-normaliser for checking variational fits."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

__all__ = ["Banana"]

_LOG_SQRT_2PI = 0.5 * torch.log(torch.tensor(2.0 * torch.pi)).item()


class Banana(TorchDistribution):
    """A normalised 2-D banana: a Gaussian bent along a parabola (log Z = 0 exactly).

    .. math::

        x_1 \\sim \\mathcal N(0, a^2), \\qquad
        x_2 \\mid x_1 \\sim \\mathcal N\\big(b\\,(x_1^2 - a^2),\\ \\sigma^2\\big),

        \\log p(x) = \\log \\mathcal N(x_1; 0, a^2)
            + \\log \\mathcal N\\big(x_2;\\ b (x_1^2 - a^2), \\sigma^2\\big).

    It is the density of ``(a e_1, b a^2 (e_1^2 - 1) + sigma e_2)`` for standard normal
    ``e``, hence normalised, with mean ``0`` and variances ``(a^2, 2 b^2 a^4 + sigma^2)``
    (uncorrelated, but far from Gaussian when ``b a^2 >> sigma``).  So for a variational
    ``q``, ``KL(q || p) = E_q[log q - log p]`` with no unknown constant.

    Args:
        a: scale of ``x_1`` (positive).
        b: curvature of the banana (any real; ``0`` gives a diagonal Gaussian).
        sigma: conditional scale of ``x_2`` (positive).

    Example:
        >>> p = Banana(a=1.0, b=1.0, sigma=0.5)
        >>> x = p.sample((4,))
        >>> x.shape, p.log_prob(x).shape
        (torch.Size([4, 2]), torch.Size([4]))
        >>> p.log_prob(torch.tensor([0.0, -1.0]))  # = log N(0;0,1) + log N(0;0,0.25)
        tensor(-1.1447)
    """

    arg_constraints = {
        "a": constraints.positive,
        "b": constraints.real,
        "sigma": constraints.positive,
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        a: Tensor | float = 1.0,
        b: Tensor | float = 1.0,
        sigma: Tensor | float = 0.5,
        validate_args: bool | None = None,
    ) -> None:
        self.a, self.b, self.sigma = broadcast_all(a, b, sigma)
        super().__init__(self.a.shape, torch.Size([2]), validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance: Banana | None = None) -> Banana:
        new = self._get_checked_instance(Banana, _instance)
        batch_shape = torch.Size(batch_shape)
        new.a = self.a.expand(batch_shape)
        new.b = self.b.expand(batch_shape)
        new.sigma = self.sigma.expand(batch_shape)
        super(Banana, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> Tensor:
        return self.a.new_zeros(self.batch_shape + self.event_shape)

    @property
    def variance(self) -> Tensor:
        var2 = 2.0 * self.b**2 * self.a**4 + self.sigma**2
        return torch.stack([self.a**2, var2], dim=-1)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.a.dtype, device=self.a.device)
        x1 = self.a * eps[..., 0]
        x2 = self.b * (x1 * x1 - self.a**2) + self.sigma * eps[..., 1]
        return torch.stack([x1, x2], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        x1, x2 = value[..., 0], value[..., 1]
        z1 = x1 / self.a
        z2 = (x2 - self.b * (x1 * x1 - self.a**2)) / self.sigma
        return (
            -0.5 * (z1 * z1 + z2 * z2)
            - torch.log(self.a)
            - torch.log(self.sigma)
            - 2.0 * _LOG_SQRT_2PI
        )
