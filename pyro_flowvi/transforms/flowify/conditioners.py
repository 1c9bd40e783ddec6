"""Conditioners of the flowified layers: diagonal Gaussians over dropped (or added) coordinates.

A conditioner is any module ``net(h, context) -> (mean, log_std)``, each of shape
``(..., out_features)``; the density it defines is

.. math:: p_\\phi(r \\mid h) = \\mathcal N\\big(r;\\ \\mu_\\phi(h),\\ \\mathrm{diag}\\,
          e^{2 \\log\\sigma_\\phi(h)}\\big).

Any function of ``h`` (and of a context) gives a normalised conditional, so any conditioner keeps a
decreasing layer exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["GaussianConditioner", "LinearGaussianConditioner", "default_conditioner",
           "make_conditioner"]


class GaussianConditioner(nn.Module):
    """MLP conditioner: ``(mean, log_std)`` of a diagonal Gaussian from ``h`` (and a context).

    The log-std is soft-bounded, :math:`\\log\\sigma = a + (b - a)\\,\\mathrm{sigmoid}(o + o_0)`
    with ``(a, b) = log_std_bounds`` and :math:`o_0` chosen so that a raw output ``o = 0`` gives
    :math:`\\log\\sigma = 0`.  The output layer is zero-initialised: at construction the conditional
    is ``N(0, I)`` whatever ``h``.

    Args:
        in_features: size of ``h``.
        out_features: number of Gaussian coordinates.
        hidden_dims: hidden widths (empty: a linear map).
        context_dim: context size, or ``None``.
        activation: hidden non-linearity (module class; ReLU as in the paper's code).
        log_std_bounds: soft bounds of the log standard deviation.

    Example:
        >>> mean, log_std = GaussianConditioner(3, 2, [8])(torch.randn(5, 3))
        >>> mean.shape, bool((log_std == 0).all())
        (torch.Size([5, 2]), True)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_dims: Sequence[int] = (),
        context_dim: int | None = None,
        activation: Callable[[], nn.Module] = nn.ReLU,
        log_std_bounds: tuple[float, float] = (-7.0, 5.0),
    ) -> None:
        super().__init__()
        lo, hi = log_std_bounds
        if not lo < 0 < hi:
            raise ValueError(f"GaussianConditioner: need log_std_bounds (lo < 0 < hi), got {lo, hi}")
        sizes = [in_features, *[int(h) for h in hidden_dims], 2 * out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                    strict=True))
        self.context_layer = (None if context_dim is None
                              else nn.Linear(context_dim, sizes[1], bias=False))
        self.activation = activation()
        self.out_features = out_features
        self.bounds = (float(lo), float(hi))
        self._offset = math.log(-lo / hi)  # sigmoid(offset) = -lo / (hi - lo)
        with torch.no_grad():
            self.layers[-1].weight.zero_()
            self.layers[-1].bias.zero_()

    def forward(self, h: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out = self.layers[0](h)
        if self.context_layer is not None:
            if context is None:
                raise ValueError("GaussianConditioner: built with a context_dim but got no context")
            out = out + self.context_layer(context)
        for layer in self.layers[1:]:
            out = layer(self.activation(out))
        mean, raw = out.split(self.out_features, dim=-1)
        lo, hi = self.bounds
        return mean, lo + (hi - lo) * torch.sigmoid(raw + self._offset)


class LinearGaussianConditioner(nn.Module):
    """Linear-Gaussian conditional ``N(A h + c, diag(exp(2 log_std)))`` with a constant std.

    The closed-form tests use it: a decreasing layer with this conditioner on a Gaussian base is a
    Gaussian density.  Starts at ``N(0, I)``.

    Example:
        >>> cond = LinearGaussianConditioner(2, 1)
        >>> [t.shape for t in cond(torch.zeros(4, 2))]
        [torch.Size([4, 1]), torch.Size([4, 1])]
    """

    def __init__(self, in_features: int, out_features: int,
                 context_dim: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.log_std = nn.Parameter(torch.zeros(out_features))
        self.context_weight = (None if context_dim is None
                               else nn.Parameter(torch.zeros(out_features, context_dim)))

    def forward(self, h: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mean = h @ self.weight.T + self.bias
        if self.context_weight is not None:
            if context is None:
                raise ValueError("LinearGaussianConditioner: built with a context_dim but got none")
            mean = mean + context @ self.context_weight.T
        return mean, self.log_std.expand(mean.shape)


def default_conditioner(in_features: int, out_features: int,
                        context_dim: int | None = None) -> GaussianConditioner:
    """The official code's sizing: width ``w = max(3 max(2 d_drop, d_in), 64)`` with ``d_in`` =
    ``in_features + out_features``, and 0/2/4/6 ReLU hidden layers for ``w`` > 200 / > 100 / > 50
    / otherwise (wide layers get a linear conditioner)."""
    d_in = in_features + out_features
    width = max(3 * max(2 * out_features, d_in), 64)
    depth = 0 if width > 200 else 2 if width > 100 else 4 if width > 50 else 6
    return GaussianConditioner(in_features, out_features, [width] * depth, context_dim)


def make_conditioner(spec: object, in_features: int, out_features: int,
                     context_dim: int | None) -> nn.Module:
    """Resolve a ``conditioner=`` argument: ``None`` (:func:`default_conditioner`), ``"linear"``
    (:class:`LinearGaussianConditioner`), a list of hidden widths (:class:`GaussianConditioner`),
    a module, or a factory ``f(in_features, out_features, context_dim) -> module``."""
    if spec is None or spec == "local":
        return default_conditioner(in_features, out_features, context_dim)
    if spec == "linear":
        return LinearGaussianConditioner(in_features, out_features, context_dim)
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, list | tuple):
        return GaussianConditioner(in_features, out_features, spec, context_dim)
    if callable(spec):
        return spec(in_features, out_features, context_dim)
    raise ValueError(
        f"unknown conditioner {spec!r}: use None, 'linear', a list of hidden widths, a module or a "
        "factory (in_features, out_features, context_dim) -> module")
