"""Coupling flows: some features condition an elementwise transformer of the others (affine:
RealNVP; rational-quadratic spline: coupling NSF)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pyro_flowvi.nn.masks import alternating_mask
from pyro_flowvi.nn.mlp import MaskedMLP
from pyro_flowvi.transforms.base import ConditionalFlowTransform, FlowTransform
from pyro_flowvi.transforms.elementwise import AffineTransformer, Transformer
from pyro_flowvi.transforms.spline import SplineTransformer

__all__ = ["AffineCoupling", "ConditionalAffineCoupling", "ConditionalCoupling", "Coupling",
           "real_nvp_layer", "spline_coupling"]


class Coupling(FlowTransform):
    """Coupling layer with a binary mask ``m`` (``True`` = passed through): the features
    ``x_m`` drive an elementwise ``transformer`` of the others.

    .. math::

        y_{m} = x_{m}, \\qquad
        y_{\\bar m} = \\tau(x_{\\bar m};\\, \\theta(x_m; c)), \\qquad
        \\log|\\det J| = \\sum_{j \\in \\bar m} \\log \\tau'(x_j;\\, \\theta_j(x_m; c)),

    with :math:`\\tau` any transformer (:class:`~pyro_flowvi.transforms.AffineTransformer`,
    :class:`~pyro_flowvi.transforms.SplineTransformer`...), whose ``num_params`` sizes the
    conditioner's output.  Both directions cost one conditioner pass.

    References:
        Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR 2017,
        arXiv:1605.08803.
        Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019,
        arXiv:1906.04032.

    Args:
        dim: event size ``D``.
        transformer: the elementwise bijection.
        mask: boolean ``(D,)``; default :func:`~pyro_flowvi.nn.masks.alternating_mask` ``(D, 0)``.
        hidden_dims: conditioner hidden sizes.
        context_dim: context size, or ``None``.
        activation: conditioner hidden non-linearity (a module class).

    Example:
        >>> layer = Coupling(4, SplineTransformer(count_bins=4), hidden_dims=[16])
        >>> x = torch.randn(3, 4)
        >>> layer.inv(layer(x)).allclose(x, atol=1e-6)
        True
    """

    identity_index: Tensor
    transformed_index: Tensor
    merge_index: Tensor

    def __init__(
        self,
        dim: int,
        transformer: Transformer,
        mask: Tensor | None = None,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        activation: Callable[[], nn.Module] = nn.ELU,
    ) -> None:
        super().__init__(dim, context_dim)
        mask = alternating_mask(dim, 0) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (dim,):
            raise ValueError(
                f"{type(self).__name__}: mask must have shape ({dim},), got {tuple(mask.shape)}")
        identity = mask.nonzero().flatten()
        transformed = (~mask).nonzero().flatten()
        self.register_buffer("identity_index", identity)
        self.register_buffer("transformed_index", transformed)
        self.register_buffer("merge_index", torch.argsort(torch.cat([identity, transformed])))
        # A mask that passes a leading or trailing block through needs no gathers at all.
        n_id = identity.numel()
        self._block: str | None = None
        if torch.equal(identity, torch.arange(n_id)):
            self._block = "head"
        elif torch.equal(identity, torch.arange(dim - n_id, dim)):
            self._block = "tail"
        self.transformer = transformer
        self.conditioner = MaskedMLP(
            identity.numel(),
            hidden_dims,
            transformed.numel(),
            transformer.num_params,
            context_dim,
            activation=activation,
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, transformer={self.transformer!r}"

    @property
    def mask(self) -> Tensor:
        mask = torch.zeros(self.dim, dtype=torch.bool, device=self.identity_index.device)
        mask[self.identity_index] = True
        return mask

    def _couple(
        self, v: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        n_id = self.identity_index.numel()
        if self._block is None:  # scattered mask: gather both halves, scatter back
            v_id = v.index_select(-1, self.identity_index)
            v_tr = v.index_select(-1, self.transformed_index)
        elif self._block == "head":  # identity features first: free views
            v_id, v_tr = v.split([n_id, self.dim - n_id], dim=-1)
        else:
            v_tr, v_id = v.split([self.dim - n_id, n_id], dim=-1)
        params = self.conditioner.forward(v_id, context)
        step = self.transformer.inverse if inverse else self.transformer.forward
        out_tr, log_grad = step(v_tr, params)
        v_id = v_id.expand(out_tr.shape[:-1] + v_id.shape[-1:])
        if self._block is None:
            out = torch.cat([v_id, out_tr], dim=-1).index_select(-1, self.merge_index)
        elif self._block == "head":
            out = torch.cat([v_id, out_tr], dim=-1)
        else:
            out = torch.cat([out_tr, v_id], dim=-1)
        return out, log_grad.sum(-1)

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._couple(y, context, inverse=True)


class AffineCoupling(Coupling):
    """RealNVP affine coupling layer: :class:`Coupling` with the affine transformer.

    .. math::

        y_{m} = x_{m}, \\qquad
        y_{\\bar m} = x_{\\bar m} \\odot \\exp(s(x_m; c)) + t(x_m; c), \\qquad
        \\log|\\det J| = \\sum_{j \\in \\bar m} s_j(x_m; c),

    with :math:`s = B\\tanh(a/B)` bounded (the seed's §7.3 ``tanh`` trick is ``B = 1``).  Both
    directions cost one conditioner pass.

    References:
        Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR 2017,
        arXiv:1605.08803.

    Args:
        dim: event size ``D``.
        mask: boolean ``(D,)``; default :func:`~pyro_flowvi.nn.masks.alternating_mask` ``(D, 0)``.
        hidden_dims: conditioner hidden sizes.
        context_dim: context size, or ``None``.
        scale, max_log_scale: see :class:`~pyro_flowvi.transforms.elementwise.AffineTransformer`.

    Example:
        >>> layer = AffineCoupling(4, hidden_dims=[16])
        >>> x = torch.randn(3, 4)
        >>> layer.inv(layer(x)).allclose(x)
        True
    """

    def __init__(
        self,
        dim: int,
        mask: Tensor | None = None,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: int | None = None,
        scale: str = "exp",
        max_log_scale: float | None = 2.0,
        activation: Callable[[], nn.Module] = nn.ELU,
    ) -> None:
        super().__init__(dim, AffineTransformer(scale, max_log_scale), mask, hidden_dims,
                         context_dim, activation)


class ConditionalAffineCoupling(ConditionalFlowTransform):
    """Conditional RealNVP coupling layer; arguments as :class:`AffineCoupling`.

    Example:
        >>> t = ConditionalAffineCoupling(4, context_dim=3, hidden_dims=[16])
        >>> t.condition(torch.randn(3))(torch.randn(10, 4)).shape
        torch.Size([10, 4])
    """

    def __init__(self, dim: int, context_dim: int, **kwargs: object) -> None:
        super().__init__(AffineCoupling(dim, context_dim=context_dim, **kwargs))


def real_nvp_layer(dim: int, parity: int = 0, **kwargs: object) -> AffineCoupling:
    """One coupling layer passing the even (``parity=0``) or odd features through."""
    return AffineCoupling(dim, alternating_mask(dim, parity), **kwargs)


class ConditionalCoupling(ConditionalFlowTransform):
    """Conditional coupling layer; arguments as :class:`Coupling`.

    Example:
        >>> t = ConditionalCoupling(4, SplineTransformer(), context_dim=3, hidden_dims=[16])
        >>> t.condition(torch.randn(3))(torch.randn(10, 4)).shape
        torch.Size([10, 4])
    """

    def __init__(self, dim: int, transformer: Transformer, context_dim: int,
                 **kwargs: object) -> None:
        super().__init__(Coupling(dim, transformer, context_dim=context_dim, **kwargs))


def spline_coupling(dim: int, parity: int = 0, count_bins: int = 8, bound: float = 3.0,
                    **kwargs: object) -> Coupling:
    """One coupling neural-spline layer passing the even (``parity=0``) or odd features through.
    See :class:`Coupling` and :class:`~pyro_flowvi.transforms.spline.SplineTransformer`."""
    return Coupling(dim, SplineTransformer(count_bins, bound), alternating_mask(dim, parity),
                    **kwargs)
