"""One masked multilayer perceptron: MADE conditioners, coupling conditioners and hypernetworks.

A dense network is the special case with no masks.  The optional context enters the first hidden
layer through its own (unmasked) weight matrix,

.. math:: h_1 = \\sigma(W_x^{(1)} \\odot M^{(1)}\\, x + W_c\\, c + b^{(1)}),

so the context's batch shape broadcasts against the input's without copying either.  The output
layer is zero-initialised: every flow built on it starts at the identity (or its fixed offset).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaskedLinear", "MaskedMLP"]


class MaskedLinear(nn.Linear):
    """``y = (W \\odot M) x + b``; with ``mask=None`` an ordinary linear layer.

    Example:
        >>> layer = MaskedLinear(2, 2, mask=torch.eye(2))
        >>> with torch.no_grad():
        ...     _ = layer.weight.fill_(3.0), layer.bias.zero_()
        >>> layer(torch.tensor([1.0, 2.0])).tolist()
        [3.0, 6.0]
    """

    mask: Tensor | None

    def __init__(
        self, in_features: int, out_features: int, mask: Tensor | None = None, bias: bool = True
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if mask is not None and mask.shape != (out_features, in_features):
            raise ValueError(
                f"MaskedLinear: mask shape {tuple(mask.shape)} != ({out_features}, {in_features})"
            )
        self.register_buffer("mask", None if mask is None else mask.clone())

    def reset_parameters(self) -> None:
        if 0 in (self.in_features, self.out_features):  # only the bias acts (e.g. a coupling
            # with nothing to condition on); an empty weight needs no (and warns at) init
            nn.init.zeros_(self.weight)
            if self.bias is not None:
                nn.init.uniform_(self.bias, -1.0, 1.0)
            return
        super().reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if 0 in (self.in_features, self.out_features) and self.bias is not None:
            # W x = 0 (an empty side of a D = 1 coupling): F.linear's JIT backward cannot
            # reshape a 0-wide tensor
            return self.bias.expand(*x.shape[:-1], self.out_features)
        weight = self.weight if self.mask is None else self.weight * self.mask
        return F.linear(x, weight, self.bias)


class MaskedMLP(nn.Module):
    """MLP ``R^in x R^context -> R^(num_params x out)`` with optional MADE masks.

    Args:
        in_features: input size ``D_in`` (may be 0: then only the context and biases act).
        hidden_dims: hidden layer sizes (at least one).
        out_features: number of outputs per parameter.
        num_params: parameters per output; the result has shape ``(..., num_params, out)``.
        context_dim: size of the context vector, or ``None``.
        masks: ``len(hidden_dims) + 1`` masks (see :func:`pyro_flowvi.nn.masks.made_masks`).
        activation: hidden non-linearity (a module class).

    Example:
        >>> net = MaskedMLP(3, [8], out_features=3, num_params=2, context_dim=4)
        >>> net(torch.zeros(5, 3), torch.zeros(4)).shape
        torch.Size([5, 2, 3])
    """

    def __init__(
        self,
        in_features: int,
        hidden_dims: Sequence[int],
        out_features: int,
        num_params: int = 1,
        context_dim: int | None = None,
        masks: Sequence[Tensor] | None = None,
        activation: Callable[[], nn.Module] = nn.ELU,
    ) -> None:
        super().__init__()
        hidden_dims = list(hidden_dims)
        if not hidden_dims:
            raise ValueError("MaskedMLP: hidden_dims must name at least one hidden layer")
        if masks is not None and len(masks) != len(hidden_dims) + 1:
            raise ValueError("MaskedMLP: need one mask per layer (len(hidden_dims) + 1)")
        sizes = [in_features, *hidden_dims, num_params * out_features]
        self.layers = nn.ModuleList(
            MaskedLinear(sizes[k], sizes[k + 1], None if masks is None else masks[k])
            for k in range(len(sizes) - 1)
        )
        self.context_layer = (
            None if context_dim is None else nn.Linear(context_dim, hidden_dims[0], bias=False)
        )
        self.activation = activation()
        self.out_shape = (num_params, out_features)
        with torch.no_grad():
            self.layers[-1].weight.zero_()
            self.layers[-1].bias.zero_()

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        # Inner layers are called through ``.forward``: this network runs many times per step
        # (an IAF inverse runs it D times), and at flow sizes the per-call module machinery
        # (hook dispatch) costs as much as the arithmetic.
        activation = self.activation.forward
        h = x
        for k, layer in enumerate(self.layers):
            if k == 0:
                h = layer.forward(h)
                if self.context_layer is not None:
                    if context is None:
                        raise ValueError("MaskedMLP: this network was built with a context_dim")
                    h = h + self.context_layer.forward(context)
            else:
                h = layer.forward(activation(h))
        return h.unflatten(-1, self.out_shape)
