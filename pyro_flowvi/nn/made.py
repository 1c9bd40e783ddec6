"""MADE: the masked autoregressive conditioner (Germain et al. 2015), optionally with context."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pyro_flowvi.nn.masks import made_masks
from pyro_flowvi.nn.mlp import MaskedMLP

__all__ = ["MADE"]


class MADE(MaskedMLP):
    """Autoregressive network: output ``(p, i)`` depends only on inputs earlier in ``order``.

    .. math:: \\theta_i = \\mathrm{NN}_i(x_{\\pi(1)}, \\dots, x_{\\pi(k-1)};\\ c),
              \\quad \\pi(k) = i,

    so an elementwise transformer driven by it has a triangular Jacobian in the order ``order``.

    References:
        Germain, Gregor, Murray, Larochelle, "MADE: Masked Autoencoder for Distribution
        Estimation", ICML 2015, arXiv:1502.03509.

    Args:
        dim: number of inputs ``D``.
        hidden_dims: hidden sizes; each should be at least ``D - 1`` for full connectivity.
        num_params: parameters per input (the elementwise transformer's count).
        context_dim: optional context size; the context reaches every output.
        order: a permutation of ``range(D)``; default the natural order.

    Example:
        >>> made = MADE(3, [16], num_params=2, order=torch.tensor([2, 1, 0]))
        >>> made(torch.randn(4, 3)).shape
        torch.Size([4, 2, 3])
    """

    order: Tensor

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int],
        num_params: int,
        context_dim: int | None = None,
        order: Tensor | None = None,
        activation: Callable[[], nn.Module] = nn.ELU,
    ) -> None:
        order = torch.arange(dim) if order is None else torch.as_tensor(order).long()
        if sorted(order.tolist()) != list(range(dim)):
            raise ValueError(f"MADE: order must be a permutation of range({dim}), got {order}")
        masks = made_masks(order, list(hidden_dims), num_params, conditional=context_dim is not None)
        super().__init__(dim, hidden_dims, dim, num_params, context_dim, masks, activation)
        self.register_buffer("order", order)
