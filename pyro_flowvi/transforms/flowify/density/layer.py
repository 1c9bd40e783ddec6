"""The flowified-layer interface (forward with a likelihood contribution, stochastic inverse) and the
container that composes layers by summing their contributions.

Direction (``docs/flowified.rst``): a flowified layer's ``forward`` is the *density* direction, as in
``nn.Linear`` (data or guide sample ``x`` -> code ``y``); its ``inverse`` is the *sampling* direction
and may be stochastic.  Every layer returns a likelihood contribution ``C`` per batch element with
SurVAE's sign,

.. math::

    \\log p_{\\text{in}}(x) = \\log p_{\\text{out}}(y) + C \\quad\\text{(exact layers)},\\qquad
    \\log p_{\\text{in}}(x) \\ge \\mathbb E_{\\varepsilon}\\left[\\log p_{\\text{out}}(y) + C\\right]
    \\quad\\text{(dimension-increasing layers)},

i.e. *plus* the log-determinant of the forward map, not Pyro's sampling-direction log-det.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["FlowifiedLayer", "FlowifiedReshape", "FlowifiedSequential", "standard_normal_log_prob"]

MODES = ("sample", "mean")
Shape = tuple[int, ...]


def standard_normal_log_prob(eps: Tensor, event_dims: int = 1) -> Tensor:
    """``log N(eps; 0, I)`` summed over the last ``event_dims`` dimensions (0 for an empty event)."""
    value = -0.5 * (eps.square() + math.log(2.0 * math.pi))
    return value.sum(tuple(range(-event_dims, 0))) if event_dims else value


class FlowifiedLayer(nn.Module):
    """Base class of the flowified layers: a map with a likelihood contribution and an inverse.

    Subclasses set ``in_shape``, ``out_shape`` (event shapes; ``None`` for elementwise layers
    until a container fixes them), ``is_exact``, ``context_dim`` and ``noise_features`` (how many
    standard-normal draws their sampling direction consumes; only exact layers), and implement

    * ``_forward(x, context, noise) -> (y, C)`` (density direction, ``C`` with the batch shape);
    * ``_inverse(y, context, mode, noise) -> (x, c)``: the sampling direction, with ``c`` the
      contribution evaluated at the realised values (for a decreasing layer ``c`` equals forward's
      ``C`` at the returned ``x``; for an increasing one it uses the discarded coordinates);
      ``noise`` (shape ``(..., noise_features)``, standard normal) replaces the internal draw;
    * ``_forward_with_noise(x, context) -> (y, C, eps)`` for exact layers: ``eps`` are the
      standardised coordinates the inverse would have drawn (the reparameterised dropped
      coordinates), so that ``_inverse(y, noise=eps)`` returns ``x`` exactly.

    The public methods check shapes and context and call these hooks.
    """

    in_shape: Shape | None = None
    out_shape: Shape | None = None
    is_exact: bool = True
    context_dim: int | None = None
    noise_features: int = 0

    # -- shapes -----------------------------------------------------------------------------------
    @property
    def in_features(self) -> int | None:
        return None if self.in_shape is None else math.prod(self.in_shape)

    @property
    def out_features(self) -> int | None:
        return None if self.out_shape is None else math.prod(self.out_shape)

    def resolve_shape(self, shape: Shape) -> Shape:
        """Fix the input shape (elementwise layers) and return the output shape."""
        shape = tuple(shape)
        if self.in_shape is not None and self.in_shape != shape:
            raise ValueError(
                f"{type(self).__name__}: expects inputs of event shape {self.in_shape}, but the "
                f"previous layer outputs {shape}; insert a FlowifiedReshape or fix the sizes."
            )
        assert self.out_shape is not None
        return self.out_shape

    def _event_dims(self, x: Tensor) -> int:
        return 1 if self.in_shape is None else len(self.in_shape)

    def _check(self, what: str, value: Tensor, shape: Shape | None, context: Tensor | None) -> None:
        name = type(self).__name__
        if shape is not None:
            n = len(shape)
            if value.dim() < n or tuple(value.shape[value.dim() - n:]) != tuple(shape):
                raise ValueError(
                    f"{name}.{what}: expected a tensor with event shape {tuple(shape)} (any batch "
                    f"shape before it), got shape {tuple(value.shape)}. Reshape it so its last "
                    f"{n} dimension(s) are {tuple(shape)}."
                )
        if self.context_dim is None:
            if context is not None:
                raise ValueError(
                    f"{name}.{what}: this layer is unconditional but got a context of shape "
                    f"{tuple(context.shape)}; build it with context_dim=... to condition on it."
                )
        elif context is None:
            raise ValueError(
                f"{name}.{what}: this layer is conditional (context_dim={self.context_dim}); pass "
                f"context=... of shape (..., {self.context_dim})."
            )
        elif context.shape[-1] != self.context_dim:
            raise ValueError(
                f"{name}.{what}: expected a context with last dimension {self.context_dim}, got "
                f"shape {tuple(context.shape)}."
            )

    # -- public API ---------------------------------------------------------------------------------
    def forward(self, x: Tensor, context: Tensor | None = None,
                noise: bool = True) -> tuple[Tensor, Tensor]:
        """Density direction: ``(y, C)``; ``noise=False`` (increasing layers: noise at its mean) is
        for visualisation only, not an estimator."""
        self._check("forward", x, self.in_shape, context)
        return self._forward(x, context, noise)

    def inverse(self, y: Tensor, context: Tensor | None = None, mode: str = "sample") -> Tensor:
        """Sampling direction: ``x``; ``mode="mean"`` uses the conditional means (reconstructions)."""
        if mode not in MODES:
            raise ValueError(f"{type(self).__name__}.inverse: mode must be one of {MODES}")
        self._check("inverse", y, self.out_shape, context)
        return self._inverse(y, context, mode, None)[0]

    def inverse_with_contribution(self, y: Tensor, context: Tensor | None = None, *,
                                  noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Sampling direction with the contribution at the realised values: ``(x, c)``."""
        self._check("inverse_with_contribution", y, self.out_shape, context)
        return self._inverse(y, context, "sample", noise)

    def forward_with_noise(self, x: Tensor,
                           context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Exact layers only: ``(y, C, eps)`` with ``eps`` the standardised dropped coordinates."""
        if not self.is_exact:
            raise ValueError(
                f"{type(self).__name__}: forward_with_noise needs an exact (non-increasing) layer")
        self._check("forward_with_noise", x, self.in_shape, context)
        return self._forward_with_noise(x, context)

    # -- hooks ----------------------------------------------------------------------------------------
    def _forward(self, x: Tensor, context: Tensor | None, noise: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse(self, y: Tensor, context: Tensor | None, mode: str,
                 noise: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _forward_with_noise(self, x: Tensor,
                            context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        y, c = self._forward(x, context, True)
        return y, c, x.new_zeros(c.shape + (0,))


class FlowifiedReshape(FlowifiedLayer):
    """Reshape the event (e.g. an image ``(C, H, W)`` to a vector); ``C = 0``, exact.

    Example:
        >>> y, c = FlowifiedReshape((2, 3, 3), (18,))(torch.zeros(5, 2, 3, 3))
        >>> y.shape, c.shape
        (torch.Size([5, 18]), torch.Size([5]))
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise ValueError(f"FlowifiedReshape: cannot reshape {self.in_shape} to {self.out_shape}")

    def _forward(self, x: Tensor, context: Tensor | None, noise: bool) -> tuple[Tensor, Tensor]:
        batch = x.shape[: x.dim() - len(self.in_shape)]
        return x.reshape(batch + self.out_shape), x.new_zeros(batch)

    def _inverse(self, y: Tensor, context: Tensor | None, mode: str,
                 noise: Tensor | None) -> tuple[Tensor, Tensor]:
        batch = y.shape[: y.dim() - len(self.out_shape)]
        return y.reshape(batch + self.in_shape), y.new_zeros(batch)


class FlowifiedSequential(FlowifiedLayer):
    """A flowified network: layers applied in order, contributions summed.

    .. math::

        \\log p(x)\\ (= \\text{or} \\ge)\\ \\log p_{\\text{base}}(F(x)) + \\sum_{l} C_l,

    exact when every layer is (``is_exact``); sampling runs the inverses in reverse order.  Elementwise
    layers (activations) take their shape from the previous layer.  A context (if any) is passed to
    the layers built with a ``context_dim``.

    Example:
        >>> from pyro_flowvi.transforms.flowify import FlowifiedLeakyReLU, FlowifiedLinear
        >>> net = FlowifiedSequential(FlowifiedLinear(4, 4), FlowifiedLeakyReLU(), FlowifiedLinear(4, 2))
        >>> y, c = net(torch.randn(7, 4))
        >>> y.shape, c.shape, net.is_exact
        (torch.Size([7, 2]), torch.Size([7]), True)
        >>> net.inverse(y).shape
        torch.Size([7, 4])
    """

    def __init__(self, *layers: FlowifiedLayer, context_dim: int | None = None) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], list | tuple):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("FlowifiedSequential: needs at least one layer")
        # leading elementwise layers take the shape of the first sized layer
        shape = next((s for la in layers if (s := getattr(la, "in_shape", None)) is not None), None)
        if shape is None:
            raise ValueError("FlowifiedSequential: no layer fixes the input shape")
        self.in_shape = tuple(shape)
        for layer in layers:
            if not isinstance(layer, FlowifiedLayer):
                raise TypeError(
                    f"FlowifiedSequential: {type(layer).__name__} is not a FlowifiedLayer; wrap "
                    "bijective FlowTransforms with FlowifiedBijective")
            shape = layer.resolve_shape(shape)
            if layer.context_dim is not None and layer.context_dim != context_dim:
                if context_dim is None:
                    context_dim = layer.context_dim
                else:
                    raise ValueError(
                        f"FlowifiedSequential: layer {type(layer).__name__} has context_dim="
                        f"{layer.context_dim} but the network has context_dim={context_dim}")
        self.out_shape = tuple(shape)
        self.layers = nn.ModuleList(layers)
        self.context_dim = context_dim
        self.is_exact = all(la.is_exact for la in layers)
        self.noise_features = sum(la.noise_features for la in layers)

    def _ctx(self, layer: FlowifiedLayer, context: Tensor | None) -> Tensor | None:
        return context if layer.context_dim is not None else None

    def _forward(self, x: Tensor, context: Tensor | None, noise: bool) -> tuple[Tensor, Tensor]:
        total = None
        for layer in self.layers:
            x, c = layer._forward(x, self._ctx(layer, context), noise)
            total = c if total is None else total + c
        assert total is not None
        return x, total

    def _forward_with_noise(self, x: Tensor,
                            context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        total, noises = None, []
        for layer in self.layers:
            x, c, eps = layer._forward_with_noise(x, self._ctx(layer, context))
            total = c if total is None else total + c
            noises.append(eps)
        assert total is not None
        # the sampling direction consumes the last layer's noise first
        eps_all = torch.cat(noises[::-1], dim=-1) if noises else x.new_zeros(total.shape + (0,))
        return x, total, eps_all

    def _inverse(self, y: Tensor, context: Tensor | None, mode: str,
                 noise: Tensor | None) -> tuple[Tensor, Tensor]:
        total, start = None, 0
        for layer in reversed(self.layers):
            eps = None
            if noise is not None and layer.noise_features:
                eps = noise[..., start: start + layer.noise_features]
                start += layer.noise_features
            y, c = layer._inverse(y, self._ctx(layer, context), mode, eps)
            total = c if total is None else total + c
        assert total is not None
        return y, total

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> FlowifiedLayer:
        return self.layers[index]  # type: ignore[return-value]
