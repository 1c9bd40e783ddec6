"""The built-in architectures' builders: iaf / maf / nsf, realnvp / nsf-coupling, sylvester,
planar / radial, gaussian.

Each builder has the registry's signature ``builder(dim, *, context_dim, num_layers, hidden_dims,
**options) -> FlowStack`` and places the structure between layers (reversed or random orders,
alternating masks, ActNorm and LU-linear layers where asked); :mod:`pyro_flowvi.flows` registers
them with their :class:`~pyro_flowvi.flows.ArchSpec` (defaults and capabilities).  Structure and
transformer are independent: :func:`autoregressive_flow` and :func:`coupling_flow` stack layers of
any elementwise transformer, and each family is one structure plus one transformer.
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
from pyro_flowvi.transforms.autoregressive import AffineAutoregressive, Autoregressive
from pyro_flowvi.transforms.base import FlowStack, FlowTransform, Inverted
from pyro_flowvi.transforms.coupling import AffineCoupling, Coupling
from pyro_flowvi.transforms.elementwise import (
    AffineTransformer,
    ComposedTransformer,
    Transformer,
)
from pyro_flowvi.transforms.linear import LULinear
from pyro_flowvi.transforms.pyro_layers import PyroLayer
from pyro_flowvi.transforms.spline import SplineTransformer
from pyro_flowvi.transforms.sylvester import Sylvester

__all__ = ["autoregressive_flow", "coupling_flow", "gaussian_flow", "iaf_flow", "maf_flow",
           "nsf_coupling_flow", "nsf_flow", "pyro_builder", "realnvp_flow", "sylvester_builder"]

Builder = Callable[..., FlowStack]
LayerFactory = Callable[..., FlowTransform]


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


def autoregressive_flow(
    dim: int,
    *,
    context_dim: int | None,
    num_layers: int,
    hidden_dims: Sequence[int],
    layer: LayerFactory,
    invert: bool = False,
    permutation: str = "reverse",
    activation: Callable[[], nn.Module] = nn.ELU,
    actnorm: bool = False,
    linear: str | None = None,
    seed: int = 0,
) -> FlowStack:
    """Autoregressive layers ``layer(dim, hidden_dims=, context_dim=, order=, activation=)`` of
    any transformer, orders changing between layers, ``Inverted`` when ``invert`` (fast density
    instead of fast sampling).

    Options shared by every autoregressive family: ``permutation`` -- ``"reverse"`` (default; the
    first layer in the natural order), ``"reverse_last_natural"`` (the last layer in the natural
    order: the model's site order, parents first, which holds the tails best on the banana),
    ``"random"`` or ``"none"``; the conditioners' ``activation``; Glow's ``actnorm`` and
    ``linear="lu"`` before each layer; the ``seed`` of random orders.

    Example:
        >>> from pyro_flowvi.transforms import Autoregressive, SplineTransformer
        >>> spline = lambda d, **kw: Autoregressive(d, SplineTransformer(), **kw)
        >>> len(autoregressive_flow(3, context_dim=None, num_layers=2, hidden_dims=[8],
        ...                         layer=spline))
        2
    """
    layers: list[FlowTransform] = []
    for order in _orders(dim, num_layers, permutation, seed):
        made = layer(dim, hidden_dims=hidden_dims, context_dim=context_dim, order=order,
                     activation=activation)
        layers.append(Inverted(made) if invert else made)
    return FlowStack(_with_extras(layers, dim, actnorm, linear), context_dim)


def coupling_flow(
    dim: int,
    *,
    context_dim: int | None,
    num_layers: int,
    hidden_dims: Sequence[int],
    layer: LayerFactory,
    mask: str = "halves",
    activation: Callable[[], nn.Module] = nn.ELU,
    actnorm: bool = False,
    linear: str | None = None,
    seed: int = 0,
) -> FlowStack:
    """Coupling layers ``layer(dim, mask=, hidden_dims=, context_dim=, activation=)`` of any
    transformer, masks alternating between layers.

    ``mask="halves"`` (default) alternates passing the first and the second half through (free
    views, no gathers); ``"alternate"`` alternates even and odd features; ``"random"`` draws a
    random half per layer (seeded).  ``activation``, ``actnorm``, ``linear``, ``seed`` as
    :func:`autoregressive_flow`.
    """
    gen = torch.Generator().manual_seed(seed)
    if mask == "halves":
        masks = [half_mask(dim, k) for k in range(num_layers)]
    elif mask == "alternate":
        masks = [alternating_mask(dim, k) for k in range(num_layers)]
    elif mask == "random":
        masks = [random_mask(dim, gen) for _ in range(num_layers)]
    else:
        raise ValueError(
            f"coupling: unknown mask {mask!r}: use 'halves', 'alternate' or 'random'")
    layers = [layer(dim, mask=m, hidden_dims=hidden_dims, context_dim=context_dim,
                    activation=activation) for m in masks]
    return FlowStack(_with_extras(layers, dim, actnorm, linear), context_dim)


def _affine(cls: type, scale: str, max_log_scale: float | None) -> LayerFactory:
    def make(dim: int, **structure: Any) -> FlowTransform:
        return cls(dim, scale=scale, max_log_scale=max_log_scale, **structure)

    return make


def _spline(cls: type, count_bins: int, bound: float, affine: bool) -> LayerFactory:
    # a transformer holds no state: one instance (checked here, at construction) serves every layer
    spline: Transformer = SplineTransformer(count_bins, bound)
    if affine:  # then an affine map: moves what the spline shapes, linear tails
        spline = ComposedTransformer(spline, AffineTransformer("exp", 3.0))

    def make(dim: int, **structure: Any) -> FlowTransform:
        return cls(dim, spline, **structure)

    return make


def iaf_flow(dim: int, *, scale: str = "exp", max_log_scale: float | None = 3.0,
             **options: Any) -> FlowStack:
    """IAF: affine autoregressive layers, sampling in one pass (``scale``, ``max_log_scale``: see
    :class:`~pyro_flowvi.transforms.elementwise.AffineTransformer`; the rest as
    :func:`autoregressive_flow`)."""
    return autoregressive_flow(dim, layer=_affine(AffineAutoregressive, scale, max_log_scale),
                               **options)


def maf_flow(dim: int, *, scale: str = "exp", max_log_scale: float | None = 3.0,
             **options: Any) -> FlowStack:
    """MAF: inverted IAF layers, density in one pass, sampling in ``D`` passes per layer."""
    return autoregressive_flow(dim, layer=_affine(AffineAutoregressive, scale, max_log_scale),
                               invert=True, **options)


def nsf_flow(dim: int, *, count_bins: int = 8, bound: float = 3.0, affine: bool = False,
             **options: Any) -> FlowStack:
    """Autoregressive neural spline flow: rational-quadratic spline layers driven by MADEs,
    sampling in one pass (``count_bins``, ``bound``: see
    :class:`~pyro_flowvi.transforms.spline.SplineTransformer`; ``affine``: follow each spline
    by a conditional affine map; the rest as :func:`autoregressive_flow`)."""
    return autoregressive_flow(dim, layer=_spline(Autoregressive, count_bins, bound, affine),
                               **options)


def realnvp_flow(dim: int, *, scale: str = "exp", max_log_scale: float | None = 2.0,
                 **options: Any) -> FlowStack:
    """RealNVP: affine coupling layers (``scale``, ``max_log_scale``: see
    :class:`~pyro_flowvi.transforms.elementwise.AffineTransformer`; the rest as
    :func:`coupling_flow`)."""
    return coupling_flow(dim, layer=_affine(AffineCoupling, scale, max_log_scale), **options)


def nsf_coupling_flow(dim: int, *, count_bins: int = 8, bound: float = 3.0, affine: bool = False,
                      **options: Any) -> FlowStack:
    """Coupling neural spline flow: rational-quadratic spline coupling layers, one pass both ways
    (``count_bins``, ``bound``, ``affine`` as :func:`nsf_flow`; the rest as
    :func:`coupling_flow`)."""
    return coupling_flow(dim, layer=_spline(Coupling, count_bins, bound, affine), **options)


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
