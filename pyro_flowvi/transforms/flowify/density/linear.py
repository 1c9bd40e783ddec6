"""Flowified linear layers ``f(x) = W x + b`` (density direction), parametrised by their SVD.

``U in SO(d_out)`` and ``V in SO(d_in)`` are :class:`~pyro_flowvi.transforms.flowify.rotation.Rotation`
modules, ``s = exp(log_s)`` has ``d_out`` entries with the soft bound
:math:`\\log s = B \\tanh(\\tilde\\ell / B)` (``B = max_log_scale``), and ``W`` is never decomposed.
Forward is the *density* direction (data -> code).  With :math:`r = V^\\top x` (row vectors
in code: ``r = x @ V``):

* ``d_out = d_in`` (bijection, exact): :math:`y = U (s \\odot r) + b`, :math:`C = \\sum_i \\log s_i`.
* ``d_out < d_in`` (slice / funnel, exact): :math:`r = (r_{keep}, r_{drop})`,
  :math:`y = U(s \\odot r_{keep}) + b`,
  :math:`C = \\sum_i \\log s_i + \\log p_\\phi(r_{drop} \\mid y)` with a learned Gaussian
  conditional; the inverse draws :math:`r_{drop} \\sim p_\\phi(\\cdot \\mid y)`.
* ``d_out > d_in`` (augment, lower bound): :math:`\\varepsilon \\sim r_\\psi`,
  :math:`y = U(s \\odot [r; \\varepsilon]) + b`,
  :math:`C = \\sum_{i=1}^{d_{out}} \\log s_i - \\log r_\\psi(\\varepsilon)`, and
  :math:`\\log p_{in}(x) = \\mathbb E_r[\\log p_{out}(y) + C] + \\mathrm{KL}(r_\\psi(\\varepsilon)
  \\,\\|\\, p(\\varepsilon \\mid x))`.  The inverse discards :math:`\\varepsilon`.

References:
    Mate, Klein, Golling, Fleuret, "Flowification: Everything is a Normalizing Flow",
    NeurIPS 2022, arXiv:2205.15209.
    Nielsen, Jaini, Hoogeboom, Winther, Welling, "SurVAE Flows", NeurIPS 2020, arXiv:2007.02731.
    Klein, Raine, Golling, Fleuret, Salamon, "Funnels", arXiv:2112.08069.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pyro_flowvi.transforms.flowify.conditioners import make_conditioner
from pyro_flowvi.transforms.flowify.density.layer import FlowifiedLayer, standard_normal_log_prob
from pyro_flowvi.transforms.flowify.svd import SVDFactors

if TYPE_CHECKING:
    from pyro_flowvi.transforms.flowify.sampling.linear import SVDLinear

__all__ = ["NOISES", "FlowifiedLinear"]

NOISES = ("gaussian", "conditional", "uniform")


class FlowifiedLinear(FlowifiedLayer):
    """Flowified ``nn.Linear(in_features, out_features)``: exact unless it increases dimension.

    See the module docstring for the three cases.  The dropped coordinates of a decreasing layer
    (the null space of ``W``, the *first* ``d_out`` coordinates of ``r`` being kept) get a learned
    Gaussian conditional ``p_phi(r_drop | y)``; the added ones of an increasing layer get Gaussian
    noise (``noise="gaussian"``: :math:`\\varepsilon \\sim \\mathcal N(0, I)` scaled by ``s``;
    ``"conditional"``: :math:`\\mathcal N(\\mu_\\psi(x), \\sigma_\\psi(x)^2)`, as in ANF/VFlow;
    ``"uniform"``: the paper's :math:`\\mathcal U(-\\frac12, \\frac12)`, which has no full support and
    must not be used in guides).

    Args:
        in_features, out_features: ``d_in``, ``d_out``.
        bias: learn ``b``.
        conditioner: for ``d_out < d_in``: ``None`` (the official sizing,
            :func:`~pyro_flowvi.transforms.flowify.conditioners.default_conditioner`),
            ``"linear"``, a list of hidden widths, a module ``(y, context) -> (mean, log_std)`` or
            a factory.
        noise: for ``d_out > d_in``: ``"gaussian"``, ``"conditional"`` or ``"uniform"``.
        init: ``"identity"`` (``A = 0``, ``log s = 0``) or ``"random"``.
        max_log_scale: soft bound of ``log s``.
        context_dim: context size (bias shift and conditioner input), or ``None``.
        rotation: ``"exp"`` or ``"householder"``.
        keep: for ``d_out < d_in``, keep the ``"first"`` (default) or ``"last"`` ``d_out``
            coordinates of ``r`` (immaterial once ``V`` is learned; alternating it makes stacked
            funnels start at the identity).

    Cost: both rotations are assembled once per call, O(d^3); ``"householder"`` is the cheaper
    choice for ``d`` in the hundreds.

    Example:
        >>> layer = FlowifiedLinear(3, 2, conditioner="linear")
        >>> x = torch.randn(5, 3)
        >>> y, c = layer(x)
        >>> x_new = layer.inverse(y)             # r_drop resampled from p_phi(. | y)
        >>> torch.allclose(layer(x_new)[0], y, atol=1e-6)
        True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 conditioner: object = None, noise: str = "gaussian", init: str = "identity",
                 max_log_scale: float = 8.0, context_dim: int | None = None,
                 rotation: str = "exp", keep: str = "first") -> None:
        super().__init__()
        if noise not in NOISES:
            raise ValueError(f"FlowifiedLinear: noise must be one of {NOISES}, got {noise!r}")
        d_in, d_out = int(in_features), int(out_features)
        self.in_shape, self.out_shape = (d_in,), (d_out,)
        self.context_dim = context_dim
        self.factors = SVDFactors(d_in, d_out, bias, context_dim, init, max_log_scale, rotation,
                                  keep=keep if d_out < d_in else "first")
        self.keep = self.factors.keep
        self.kind = "square" if d_in == d_out else "decreasing" if d_out < d_in else "increasing"
        self.is_exact = d_out <= d_in
        self.noise_features = max(d_in - d_out, 0)
        self.noise = noise
        self.conditioner: nn.Module | None = None
        if self.kind == "decreasing":
            self.conditioner = make_conditioner(conditioner, d_out, d_in - d_out, context_dim)
        elif self.kind == "increasing" and noise == "conditional":
            self.conditioner = make_conditioner(
                conditioner if conditioner is not None else [max(64, 2 * d_out)] * 2,
                d_in, d_out - d_in, context_dim)

    # -- parameters ---------------------------------------------------------------------------------
    @property
    def weight(self) -> Tensor:
        """``W`` of shape ``(d_out, d_in)``."""
        return self.factors.weight

    @property
    def bias(self) -> Tensor | None:
        return self.factors.bias

    @property
    def singular_values(self) -> Tensor:
        return self.factors.singular_values

    @property
    def U(self) -> Tensor:  # noqa: N802  (the maths' name)
        return self.factors.u()

    @property
    def V(self) -> Tensor:  # noqa: N802
        return self.factors.v()

    def as_transform(self) -> SVDLinear:
        """The square layer as a sampling-direction ``TransformModule`` sharing these parameters."""
        from pyro_flowvi.transforms.flowify.sampling.linear import SVDLinear  # noqa: F811

        if self.kind != "square":
            raise ValueError(f"FlowifiedLinear: only square layers are bijections, this one is "
                             f"{self.kind} ({self.in_shape[0]} -> {self.out_shape[0]})")
        return SVDLinear(self.in_shape[0], self.context_dim, factors=self.factors)

    # -- helpers ----------------------------------------------------------------------------------------
    def _noise_log_prob(self, eps: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        if self.noise == "uniform":
            inside = (eps.abs() <= 0.5).all(-1)
            return torch.where(inside, 0.0, -math.inf).to(eps.dtype)
        if self.noise == "gaussian":
            return standard_normal_log_prob(eps)
        assert self.conditioner is not None
        mean, log_std = self.conditioner(x, context)
        return standard_normal_log_prob((eps - mean) * torch.exp(-log_std)) - log_std.sum(-1)

    def _draw_noise(self, x: Tensor, context: Tensor | None, noise: bool) -> Tensor:
        shape = x.shape[:-1] + (self.out_shape[0] - self.in_shape[0],)
        if self.noise == "uniform":
            return torch.rand(shape, dtype=x.dtype, device=x.device) - 0.5 if noise else \
                x.new_zeros(shape)
        eps = torch.randn(shape, dtype=x.dtype, device=x.device) if noise else x.new_zeros(shape)
        if self.noise == "conditional":
            assert self.conditioner is not None
            mean, log_std = self.conditioner(x, context)
            eps = mean + torch.exp(log_std) * eps
        return eps

    def _funnel(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(mean, log_std)`` of ``p_phi(r_drop | y)``."""
        assert self.conditioner is not None
        return self.conditioner(y, context)

    # -- hooks ----------------------------------------------------------------------------------------
    def _forward_with_noise(self, x: Tensor,
                            context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        f = self.factors
        d_out = self.out_shape[0]
        log_s = f.log_scales()
        shift = f.shift(context)
        r = x @ f.v()
        if self.kind == "increasing":
            raise ValueError("FlowifiedLinear: an increasing layer has no exact noise coordinates")
        d_drop = self.noise_features
        keep, drop = (r[..., d_drop:], r[..., :d_drop]) if self.keep == "last" else \
            (r[..., :d_out], r[..., d_out:])
        y = (keep * log_s.exp()) @ f.u().T
        if shift is not None:
            y = y + shift
        c = log_s.sum().expand(y.shape[:-1])
        if self.kind == "square":
            return y, c, y.new_zeros(c.shape + (0,))
        mean, log_std = self._funnel(y, context)
        eps = (drop - mean) * torch.exp(-log_std)
        return y, c + standard_normal_log_prob(eps) - log_std.sum(-1), eps

    def _forward(self, x: Tensor, context: Tensor | None, noise: bool) -> tuple[Tensor, Tensor]:
        if self.kind != "increasing":
            y, c, _ = self._forward_with_noise(x, context)
            return y, c
        f = self.factors
        log_s = f.log_scales()
        eps = self._draw_noise(x, context, noise)
        h = torch.cat([x @ f.v(), eps], dim=-1) * log_s.exp()
        y = h @ f.u().T
        shift = f.shift(context)
        if shift is not None:
            y = y + shift
        return y, log_s.sum() - self._noise_log_prob(eps, x, context)

    def _inverse(self, y: Tensor, context: Tensor | None, mode: str,
                 noise: Tensor | None) -> tuple[Tensor, Tensor]:
        f = self.factors
        d_in = self.in_shape[0]
        log_s = f.log_scales()
        shift = f.shift(context)
        h = (y - shift if shift is not None else y) @ f.u()
        if self.kind == "increasing":
            x = (h[..., :d_in] * torch.exp(-log_s[:d_in])) @ f.v().T
            eps = h[..., d_in:] * torch.exp(-log_s[d_in:])
            return x, log_s.sum() - self._noise_log_prob(eps, x, context)
        keep = h * torch.exp(-log_s)
        c = log_s.sum().expand(y.shape[:-1])
        if self.kind == "square":
            return keep @ f.v().T, c
        mean, log_std = self._funnel(y, context)
        if noise is None:
            noise = torch.randn_like(mean) if mode == "sample" else torch.zeros_like(mean)
        drop = mean + torch.exp(log_std) * noise
        batch = torch.broadcast_shapes(keep.shape[:-1], drop.shape[:-1])
        keep, drop = keep.expand(batch + keep.shape[-1:]), drop.expand(batch + drop.shape[-1:])
        parts = [drop, keep] if self.keep == "last" else [keep, drop]
        x = torch.cat(parts, dim=-1) @ f.v().T
        return x, c + standard_normal_log_prob(noise) - log_std.sum(-1)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_shape[0]}, out_features={self.out_shape[0]}, "
                f"kind={self.kind!r}, is_exact={self.is_exact}")
