"""The architecture registry: one name builds a whole flow stack.

``build_flow(arch, dim, ...)`` returns a :class:`~pyro_flowvi.transforms.base.FlowStack` (a Pyro
``TransformModule``) or, given ``context_dim``, a
:class:`~pyro_flowvi.transforms.base.ConditionalFlowTransform` whose ``condition(h)`` binds the
context.  ``register_arch(name, builder)`` adds an architecture; a builder has the signature
``builder(dim, *, context_dim, num_layers, hidden_dims, **options) -> FlowStack``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from pyro.distributions.transforms import ConditionalPlanar, ConditionalRadial, Planar, Radial
from pyro.nn import DenseNN
from torch import Tensor, nn

from pyro_flowvi.nn.masks import alternating_mask, half_mask, random_mask
from pyro_flowvi.transforms.actnorm import ActNorm
from pyro_flowvi.transforms.autoregressive import AffineAutoregressive
from pyro_flowvi.transforms.base import ConditionalFlowTransform, FlowStack, FlowTransform, Inverted
from pyro_flowvi.transforms.coupling import AffineCoupling
from pyro_flowvi.transforms.flowify.arch import flowified_flow
from pyro_flowvi.transforms.linear import LULinear
from pyro_flowvi.transforms.pyro_layers import PyroLayer
from pyro_flowvi.transforms.sylvester import Sylvester

__all__ = [
    "ArchBuilder",
    "available_archs",
    "build_flow",
    "check_arch",
    "default_hidden_dims",
    "register_arch",
]


class ArchBuilder(Protocol):
    def __call__(
        self,
        dim: int,
        *,
        context_dim: int | None,
        num_layers: int,
        hidden_dims: Sequence[int],
        **options: object,
    ) -> FlowStack: ...


_REGISTRY: dict[str, ArchBuilder] = {}


def default_hidden_dims(dim: int) -> list[int]:
    """Two hidden layers of ``max(64, 2 D)`` units (MADE needs at least ``D - 1``)."""
    return [max(64, 2 * dim)] * 2


def register_arch(name: str, builder: ArchBuilder, *, overwrite: bool = False) -> None:
    """Register ``builder`` under ``name`` (lower case); refuse to overwrite unless asked."""
    key = name.lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"register_arch: {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[key] = builder


def available_archs() -> list[str]:
    """Sorted names of every registered architecture."""
    return sorted(_REGISTRY)


def check_arch(arch: str) -> str:
    """Return the registry key for ``arch`` or raise a ``ValueError`` naming the closest match."""
    key = arch.lower() if isinstance(arch, str) else arch
    if key not in _REGISTRY:
        close = difflib.get_close_matches(str(key), _REGISTRY, n=1, cutoff=0.0)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown architecture {arch!r}.{hint} Known architectures: "
            f"{', '.join(available_archs())}. Add your own with register_arch(name, builder)."
        )
    return key


def build_flow(
    arch: str,
    dim: int,
    *,
    context_dim: int | None = None,
    num_layers: int = 4,
    hidden_dims: Sequence[int] | None = None,
    **options: object,
) -> FlowStack | ConditionalFlowTransform:
    """Build a flow stack by architecture name.

    Args:
        arch: a registered name (see :func:`available_archs`), e.g. ``"iaf"``, ``"realnvp"``.
        dim: event size of the flow.
        context_dim: context size for a conditional flow, or ``None``.
        num_layers: number of flow layers (permutations/ActNorm between them not counted).
        hidden_dims: conditioner hidden sizes (default :func:`default_hidden_dims`).
        options: architecture-specific options (``scale``, ``max_log_scale``, ``actnorm``...).

    Example:
        >>> import pyro.distributions as dist
        >>> flow = build_flow("iaf", dim=10, num_layers=4, hidden_dims=[64, 64])
        >>> q = dist.TransformedDistribution(dist.Normal(0.0, 1.0).expand([10]).to_event(1), flow)
        >>> z = q.rsample((256,))
        >>> q.log_prob(z).shape
        torch.Size([256])
        >>> build_flow("realnvp", dim=10, context_dim=32, num_layers=6).condition(
        ...     torch.zeros(32))(torch.zeros(10)).shape
        torch.Size([10])
    """
    key = check_arch(arch)
    if int(dim) < 1:
        raise ValueError(f"build_flow: dim must be a positive integer, got {dim}")
    if int(num_layers) < 1:
        raise ValueError(f"build_flow: num_layers must be at least 1, got {num_layers}")
    hidden = default_hidden_dims(dim) if hidden_dims is None else [int(h) for h in hidden_dims]
    stack = _REGISTRY[key](
        int(dim), context_dim=context_dim, num_layers=int(num_layers), hidden_dims=hidden, **options
    )
    return stack if context_dim is None else ConditionalFlowTransform(stack)


# --------------------------------------------------------------------------------------------
# Built-in architectures
# --------------------------------------------------------------------------------------------


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
    scale: str = "exp",
    max_log_scale: float | None = 3.0,
    actnorm: bool = False,
    linear: str | None = None,
    activation: Callable[[], nn.Module] = nn.ELU,
    seed: int = 0,
) -> FlowStack:
    layers: list[FlowTransform] = []
    for order in _orders(dim, num_layers, permutation, seed):
        layer = AffineAutoregressive(
            dim, hidden_dims, context_dim, order, scale, max_log_scale, activation
        )
        layers.append(Inverted(layer) if invert else layer)
    return FlowStack(_with_extras(layers, dim, actnorm, linear), context_dim)


def iaf_flow(dim: int, **kwargs: object) -> FlowStack:
    """IAF: affine autoregressive layers, sampling in one pass; orders reversed between layers.

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
    scale: str = "exp",
    max_log_scale: float | None = 2.0,
    actnorm: bool = False,
    linear: str | None = None,
    activation: Callable[[], nn.Module] = nn.ELU,
    seed: int = 0,
) -> FlowStack:
    """RealNVP: affine coupling layers with alternating masks.

    ``mask="halves"`` (default) alternates passing the first and the second half through (free
    views, no gathers); ``"alternate"`` alternates even and odd features; ``"random"`` draws a
    random half per layer (seeded).
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
            f"realnvp: unknown mask {mask!r}: use 'halves', 'alternate' or 'random'")
    layers: list[FlowTransform] = [
        AffineCoupling(dim, m, hidden_dims, context_dim, scale, max_log_scale, activation)
        for m in masks
    ]
    return FlowStack(_with_extras(layers, dim, actnorm, linear), context_dim)


def _sylvester_builder(variant: str) -> ArchBuilder:
    def build(
        dim: int,
        *,
        context_dim: int | None,
        num_layers: int,
        hidden_dims: Sequence[int],
        **options: object,
    ) -> FlowStack:
        layers = [
            Sylvester(dim, variant=variant, context_dim=context_dim, hidden_dims=hidden_dims,
                      layer_index=k, **options)
            for k in range(num_layers)
        ]
        return FlowStack(layers, context_dim)

    build.__doc__ = f"Sylvester normalizing flow, {variant} variant (van den Berg et al. 2018)."
    return build


def _pyro_builder(plain: type, conditional: type) -> ArchBuilder:
    def build(
        dim: int,
        *,
        context_dim: int | None,
        num_layers: int,
        hidden_dims: Sequence[int],
    ) -> FlowStack:
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


register_arch("iaf", iaf_flow)
register_arch("maf", maf_flow)
register_arch("realnvp", realnvp_flow)
register_arch("sylvester", _sylvester_builder("householder"))
register_arch("sylvester-orthogonal", _sylvester_builder("orthogonal"))
register_arch("sylvester-householder", _sylvester_builder("householder"))
register_arch("sylvester-triangular", _sylvester_builder("triangular"))
register_arch("planar", _pyro_builder(Planar, ConditionalPlanar))
register_arch("radial", _pyro_builder(Radial, ConditionalRadial))
register_arch("flowified", flowified_flow)
