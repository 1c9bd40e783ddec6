"""The built-in architectures' builders: iaf / maf, realnvp, sylvester, planar / radial, gaussian.

Each builder has the registry's signature ``builder(dim, *, context_dim, num_layers, hidden_dims,
**options) -> FlowStack`` and places the structure between layers (reversed or random orders,
alternating masks, ActNorm and LU-linear layers where asked); :mod:`pyro_flowvi.flows` registers
them with their :class:`~pyro_flowvi.flows.ArchSpec` (defaults and capabilities).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pyro.distributions.transforms import Planar
from pyro.nn import DenseNN
from torch import Tensor, nn

from pyro_flowvi.nn.masks import alternating_mask, half_mask, random_mask
from pyro_flowvi.transforms.actnorm import ActNorm
from pyro_flowvi.transforms.autoregressive import AffineAutoregressive
from pyro_flowvi.transforms.base import FlowStack, FlowTransform, Inverted
from pyro_flowvi.transforms.coupling import AffineCoupling
from pyro_flowvi.transforms.linear import LULinear
from pyro_flowvi.transforms.pyro_layers import PyroLayer
from pyro_flowvi.transforms.sylvester import Sylvester

__all__ = ["affine_options", "gaussian_flow", "iaf_flow", "maf_flow", "pyro_builder",
           "realnvp_flow", "sylvester_builder"]

Builder = Callable[..., FlowStack]


def affine_options(*, scale: str = "exp", max_log_scale: float | None = None,
                   activation: Callable[[], nn.Module] = nn.ELU, actnorm: bool = False,
                   linear: str | None = None, seed: int = 0) -> dict[str, Any]:
    """The options of every affine family (iaf, maf, realnvp), with their defaults: the
    transformer's ``scale`` and ``max_log_scale`` (the family supplies its own default bound),
    the conditioners' ``activation``, Glow's ``actnorm`` and ``linear="lu"`` before each layer,
    and the ``seed`` of random orders or masks.

    Example:
        >>> affine_options(actnorm=True)["actnorm"], affine_options()["scale"]
        (True, 'exp')
    """
    return {"scale": scale, "max_log_scale": max_log_scale, "activation": activation,
            "actnorm": actnorm, "linear": linear, "seed": seed}


def _orders(dim: int, num_layers: int, permutation: str, seed: int) -> list[Tensor]:
    """Autoregressive orders per layer: reversing between layers is a free permutation.

    ``"reverse"`` starts in the natural order ``0..D-1``; ``"reverse_last_natural"`` alternates
    the other way round so that the *last* layer is in the natural order, i.e. it moves each
    coordinate given the ones before it, as the model declared them (parents first).  That last
    layer then sees inputs from the base side of the flow rather than the far tails the earlier
    layers produce (banana b = 2, ``BENCHMARKS.md``)."""
    if permutation in ("reverse", "reverse_last_natural"):
        start = 0 if permutation == "reverse" else (num_layers - 1) % 2
        return [torch.arange(dim) if (k + start) % 2 == 0 else torch.arange(dim).flip(0)
                for k in range(num_layers)]
    if permutation == "random":
        gen = torch.Generator().manual_seed(seed)
        return [torch.randperm(dim, generator=gen) for _ in range(num_layers)]
    if permutation == "none":
        return [torch.arange(dim)] * num_layers
    raise ValueError(f"unknown permutation {permutation!r}: use 'reverse', "
                     "'reverse_last_natural', 'random' or 'none'")


def _with_extras(
    layers: list[FlowTransform], dim: int, actnorm: bool, linear: str | None
) -> list[FlowTransform]:
    """Insert ActNorm and/or an LU linear layer before each flow layer (Glow's step order)."""
    if linear not in (None, "lu"):
        raise ValueError(f"unknown linear option {linear!r}: use None or 'lu'")
    out: list[FlowTransform] = []
    for layer in layers:
        if actnorm:
            out.append(ActNorm(dim))
        if linear == "lu":
            out.append(LULinear(dim))
        out.append(layer)
    return out


def _autoregressive(
    dim: int,
    *,
    context_dim: int | None,
    num_layers: int,
    hidden_dims: Sequence[int],
    invert: bool,
    permutation: str = "reverse",
    **options: Any,
) -> FlowStack:
    o = affine_options(**{"max_log_scale": 3.0, **options})
    layers: list[FlowTransform] = []
    for order in _orders(dim, num_layers, permutation, o["seed"]):
        layer = AffineAutoregressive(dim, hidden_dims, context_dim, order, o["scale"],
                                     o["max_log_scale"], o["activation"])
        layers.append(Inverted(layer) if invert else layer)
    return FlowStack(_with_extras(layers, dim, o["actnorm"], o["linear"]), context_dim)


def iaf_flow(dim: int, **kwargs: object) -> FlowStack:
    """IAF: affine autoregressive layers, sampling in one pass; orders reversed between layers
    (options: :func:`affine_options`, ``max_log_scale`` 3 by default).

    ``permutation``: ``"reverse"`` (default; the first layer in the natural order),
    ``"reverse_last_natural"`` (the last layer in the natural order: the model's site order,
    parents first, which holds the tails best on the banana), ``"random"`` or ``"none"``."""
    return _autoregressive(dim, invert=False, **kwargs)  # type: ignore[arg-type]


def maf_flow(dim: int, **kwargs: object) -> FlowStack:
    """MAF: inverted IAF layers, density in one pass, sampling in ``D`` passes per layer."""
    return _autoregressive(dim, invert=True, **kwargs)  # type: ignore[arg-type]


def realnvp_flow(
    dim: int,
    *,
    context_dim: int | None,
    num_layers: int,
    hidden_dims: Sequence[int],
    mask: str = "halves",
    **options: Any,
) -> FlowStack:
    """RealNVP: affine coupling layers with alternating masks (options: :func:`affine_options`,
    ``max_log_scale`` 2 by default).

    ``mask="halves"`` (default) alternates passing the first and the second half through (free
    views, no gathers); ``"alternate"`` alternates even and odd features; ``"random"`` draws a
    random half per layer (seeded).
    """
    o = affine_options(**{"max_log_scale": 2.0, **options})
    gen = torch.Generator().manual_seed(o["seed"])
    if mask == "halves":
        masks = [half_mask(dim, k) for k in range(num_layers)]
    elif mask == "alternate":
        masks = [alternating_mask(dim, k) for k in range(num_layers)]
    elif mask == "random":
        masks = [random_mask(dim, gen) for _ in range(num_layers)]
    else:
        raise ValueError(
            f"realnvp: unknown mask {mask!r}: use 'halves', 'alternate' or 'random'")
    layers: list[FlowTransform] = [
        AffineCoupling(dim, m, hidden_dims, context_dim, o["scale"], o["max_log_scale"],
                       o["activation"])
        for m in masks
    ]
    return FlowStack(_with_extras(layers, dim, o["actnorm"], o["linear"]), context_dim)


def sylvester_builder(variant: str) -> Builder:
    def build(dim: int, *, context_dim: int | None, num_layers: int,
              hidden_dims: Sequence[int], **options: object) -> FlowStack:
        layers = [
            Sylvester(dim, variant=variant, context_dim=context_dim, hidden_dims=hidden_dims,
                      layer_index=k, **options)
            for k in range(num_layers)
        ]
        return FlowStack(layers, context_dim)

    build.__doc__ = f"Sylvester normalizing flow, {variant} variant (van den Berg et al. 2018)."
    return build


def pyro_builder(plain: type, conditional: type) -> Builder:
    def build(dim: int, *, context_dim: int | None, num_layers: int,
              hidden_dims: Sequence[int]) -> FlowStack:
        layers: list[FlowTransform] = []
        for _ in range(num_layers):
            if context_dim is None:
                layers.append(PyroLayer(plain(dim), dim))
            else:
                sizes = [1, dim, dim] if plain is Planar else [dim, 1, 1]
                hyper = DenseNN(context_dim, list(hidden_dims), param_dims=sizes)
                layers.append(PyroLayer(conditional(hyper), dim, context_dim))
        return FlowStack(layers, context_dim)

    build.__doc__ = f"Pyro's {plain.__name__} flow (no analytic inverse)."
    return build


def gaussian_flow(dim: int, *, context_dim: int | None, num_layers: int,
                  hidden_dims: Sequence[int]) -> FlowStack:
    """No flow layers: the guide is its affine (Gaussian) base alone."""
    if num_layers:
        raise ValueError(f"gaussian: the arch has no layers, got num_layers={num_layers}")
    return FlowStack([], context_dim, dim=dim)
