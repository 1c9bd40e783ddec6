"""Flowified linear layers ``f(x) = W x + b`` parametrised by their SVD ``W = U diag(s) V^T``.

``U in SO(d_out)`` and ``V in SO(d_in)`` are :class:`~pyro_flowvi.transforms.flowify.rotation.Rotation`
modules, ``s = exp(log_s)`` has ``d_out`` entries with the soft bound
:math:`\\log s = B \\tanh(\\tilde\\ell / B)` (``B = max_log_scale``), and ``W`` is never decomposed.
With :math:`r = V^\\top x` (row vectors in code: ``r = x @ V``):

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

import torch
from torch import Tensor, nn

from pyro_flowvi.transforms.base import FlowTransform
from pyro_flowvi.transforms.flowify.conditioners import make_conditioner
from pyro_flowvi.transforms.flowify.layer import FlowifiedLayer, standard_normal_log_prob
from pyro_flowvi.transforms.flowify.rotation import Rotation

__all__ = ["NOISES", "FlowifiedLinear", "SVDFactors", "SVDLinear"]

NOISES = ("gaussian", "conditional", "uniform")


class SVDFactors(nn.Module):
    """The parameters of ``W = U diag(s) V^T`` and ``b`` (plus a context-dependent bias shift).

    Example:
        >>> f = SVDFactors(3, 2)
        >>> f.weight.shape, f.singular_values.tolist()
        (torch.Size([2, 3]), [1.0, 1.0])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 context_dim: int | None = None, init: str = "identity",
                 max_log_scale: float = 8.0, rotation: str = "exp", seed: int = 0,
                 keep: str = "first") -> None:
        super().__init__()
        if keep not in ("first", "last"):
            raise ValueError(f"flowified linear: keep must be 'first' or 'last', got {keep!r}")
        self.keep = keep
        if min(in_features, out_features) < 1:
            raise ValueError(f"flowified linear: sizes must be positive, got "
                             f"({in_features}, {out_features})")
        if not max_log_scale > 0:
            raise ValueError(f"flowified linear: max_log_scale must be positive, got {max_log_scale}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.max_log_scale = float(max_log_scale)
        self.u = Rotation(out_features, rotation, init, seed=seed)
        self.v = Rotation(in_features, rotation, init, seed=seed + 1)
        raw = torch.zeros(out_features)
        if init == "random" and in_features != out_features:
            raw = torch.randn(out_features, generator=torch.Generator().manual_seed(seed + 2))
            raw = raw / math.sqrt(out_features)
        self.raw_log_scale = nn.Parameter(raw)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.context_bias = (None if context_dim is None
                             else nn.Linear(context_dim, out_features, bias=False))
        if self.context_bias is not None:
            nn.init.zeros_(self.context_bias.weight)

    def log_scales(self) -> Tensor:
        """``log s`` (``d_out`` entries), soft-bounded to ``[-B, B]``."""
        b = self.max_log_scale
        return b * torch.tanh(self.raw_log_scale / b)

    def shift(self, context: Tensor | None) -> Tensor | None:
        """The bias ``b`` (plus ``B_c c`` for a context ``c``), or ``None``."""
        out = self.bias
        if self.context_bias is not None and context is not None:
            cb = self.context_bias(context)
            out = cb if out is None else out + cb
        return out

    @property
    def singular_values(self) -> Tensor:
        """The ``min(d_in, d_out)`` singular values of ``W``."""
        return self.log_scales()[: min(self.in_features, self.out_features)].exp()

    @property
    def weight(self) -> Tensor:
        """The assembled ``W = U[:, :m] diag(s[:m]) V[:, :m]^T``, ``m = min(d_in, d_out)``."""
        m = min(self.in_features, self.out_features)
        v = self.v()
        v = v[:, v.shape[1] - m:] if self.keep == "last" else v[:, :m]
        u = self.u()[:, :m]
        return (u * self.log_scales()[:m].exp()) @ v.T


class SVDLinear(FlowTransform):
    """Square flowified linear layer as a Pyro ``TransformModule``: ``y = U diag(s) V^T x + b``.

    .. math:: \\log|\\det J| = \\sum_i \\log s_i, \\qquad x = V\\,\\big(U^\\top (y - b) / s\\big).

    Covers the invertible matrices with ``det W > 0``; starts at the identity.  The family is
    closed under inversion, so it serves both as a density-direction layer (flowified nets) and as
    a sampling-direction flow layer (guides).  With ``context_dim`` the bias is shifted by a
    zero-initialised linear function of the context.  Cost: one ``matrix_exp`` per rotation per
    call (O(d^3)); use ``rotation="householder"`` for ``d`` in the hundreds.

    Args:
        dim: feature size.
        context_dim: context size (bias shift), or ``None``.
        bias: learn ``b``.
        init: ``"identity"`` or ``"random"`` (random rotations, as the paper's code).
        max_log_scale: soft bound ``B`` of the log singular values.
        rotation: ``"exp"`` or ``"householder"``.
        factors: share an existing :class:`SVDFactors` (used by :class:`FlowifiedLinear`).

    Example:
        >>> t = SVDLinear(3)
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(t(x), x)
        True
    """

    def __init__(self, dim: int, context_dim: int | None = None, bias: bool = True,
                 init: str = "identity", max_log_scale: float = 8.0, rotation: str = "exp",
                 factors: SVDFactors | None = None) -> None:
        super().__init__(dim, context_dim)
        self.factors = factors or SVDFactors(dim, dim, bias, context_dim, init, max_log_scale,
                                             rotation)

    @property
    def weight(self) -> Tensor:
        return self.factors.weight

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        f = self.factors
        log_s = f.log_scales()
        y = (x @ f.v() * log_s.exp()) @ f.u().T
        shift = f.shift(context)
        if shift is not None:
            y = y + shift
        return y, log_s.sum().expand(y.shape[:-1])

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        f = self.factors
        log_s = f.log_scales()
        shift = f.shift(context)
        if shift is not None:
            y = y - shift
        x = (y @ f.u() * torch.exp(-log_s)) @ f.v().T
        return x, log_s.sum().expand(x.shape[:-1])


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
        """The square layer as a ``TransformModule`` sharing these parameters."""
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

