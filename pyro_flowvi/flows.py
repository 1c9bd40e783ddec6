"""The architecture registry: one name builds a whole flow stack, with one set of defaults.

``build_flow(arch, dim, ...)`` returns a :class:`~pyro_flowvi.transforms.base.FlowStack` (a Pyro
``TransformModule``) or, given ``context_dim``, a
:class:`~pyro_flowvi.transforms.base.ConditionalFlowTransform` whose ``condition(h)`` binds the
context.  Every architecture's defaults (depth, conditioner widths, options such as the
activation, the sticking-the-landing policy) and capabilities (inverse, autoregressive) live in
its :class:`ArchSpec`, next to its builder: ``build_flow`` and the guides read them there and
nowhere else, so ``build_flow("iaf", D)`` is the flow ``AutoFlowGuide(model, "iaf")`` trains.
``register_arch(name, builder, spec)`` adds an architecture; a builder has the signature
``builder(dim, *, context_dim, num_layers, hidden_dims, **options) -> FlowStack``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pyro.distributions.transforms import ConditionalPlanar, ConditionalRadial, Planar, Radial
from torch import nn

from pyro_flowvi.archs import (
    autoregressive_flow,
    coupling_flow,
    gaussian_flow,
    iaf_flow,
    maf_flow,
    nsf_coupling_flow,
    nsf_flow,
    pyro_builder,
    realnvp_flow,
    sylvester_builder,
)
from pyro_flowvi.transforms.base import ConditionalFlowTransform, FlowStack
from pyro_flowvi.transforms.flowify.sampling.arch import flowified_block, flowified_flow
from pyro_flowvi.transforms.sylvester import Sylvester
from pyro_flowvi.transforms.tails import TukeyTails

__all__ = [
    "UNIVERSAL_OPTIONS",
    "ArchBuilder",
    "ArchSpec",
    "arch_spec",
    "available_archs",
    "build_flow",
    "check_arch",
    "check_flow_options",
    "default_hidden_dims",
    "register_arch",
    "widths",
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


def widths(minimum: int, per_dim: int, layers: int) -> Callable[[int], list[int]]:
    """A conditioner-width rule: ``layers`` hidden layers of ``max(minimum, per_dim * D)``.

    Example:
        >>> widths(64, 2, 2)(40)
        [80, 80]
    """

    def rule(dim: int) -> list[int]:
        return [max(minimum, per_dim * dim)] * layers

    rule.__doc__ = f"{layers} x max({minimum}, {per_dim} D)"
    return rule


def default_hidden_dims(dim: int) -> list[int]:
    """Two hidden layers of ``max(64, 2 D)`` units (MADE needs at least ``D - 1``)."""
    return [max(64, 2 * dim)] * 2


_STRUCTURAL = {"dim", "context_dim", "num_layers", "hidden_dims", "self", "variant", "layer_index",
               "keep", "invert", "layer"}  # set by the builders themselves


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """What an architecture is, besides its builder: defaults and capabilities.

    Attributes:
        num_layers: default depth.
        hidden: conditioner-width rule, latent size ``D`` -> hidden sizes (see :func:`widths`).
        options: defaults of builder options (e.g. ``{"activation": nn.ReLU}``).
        stl: whether ``AutoFlowGuide`` uses the sticking-the-landing gradient by default,
            while ``D <= stl_max_dim`` (``None``: any ``D``); it needs an inverse.
        has_inverse, autoregressive: capabilities of the built flow (tested against it).
        option_sources: callables whose keyword parameters are further valid options (for a
            builder that forwards ``**options``).
        summary: one line for listings.
    """

    num_layers: int = 4
    hidden: Callable[[int], list[int]] = default_hidden_dims
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stl: bool = False
    stl_max_dim: int | None = None
    has_inverse: bool = True
    autoregressive: bool = False
    option_sources: tuple[Callable, ...] = ()
    summary: str = ""

    def uses_stl(self, dim: int) -> bool:
        """The default STL policy at latent size ``dim``."""
        return self.stl and self.has_inverse and (self.stl_max_dim is None
                                                  or dim <= self.stl_max_dim)


_REGISTRY: dict[str, tuple[ArchBuilder, ArchSpec]] = {}


def register_arch(name: str, builder: ArchBuilder, spec: ArchSpec | None = None, *,
                  overwrite: bool = False) -> None:
    """Register ``builder`` with its :class:`ArchSpec` under ``name`` (lower case); refuse to
    overwrite unless asked."""
    key = name.lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"register_arch: {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[key] = (builder, ArchSpec() if spec is None else spec)


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


def arch_spec(arch: str) -> ArchSpec:
    """The :class:`ArchSpec` of a registered architecture.

    Example:
        >>> spec = arch_spec("iaf")
        >>> spec.num_layers, spec.hidden(10), spec.autoregressive
        (2, [64, 64], True)
    """
    return _REGISTRY[check_arch(arch)][1]


def _valid_options(key: str) -> set[str] | None:
    """Option names the builder accepts (``None``: it takes any)."""
    builder, spec = _REGISTRY[key]
    names: set[str] = set()
    for fn in (builder, *spec.option_sources):
        params = inspect.signature(fn).parameters.values()
        if fn is builder and not spec.option_sources and any(
                p.kind is p.VAR_KEYWORD for p in params):
            return None
        names |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return names - _STRUCTURAL


def check_flow_options(arch: str, options: Mapping[str, Any], *, caller: str = "build_flow",
                       num_layers: Any = None, hidden_dims: Any = None) -> None:
    """Raise a ``ValueError`` naming any option ``arch``'s builder does not take, with the valid
    names, so a misspelt option fails when the guide is built, not at its first step; also
    check ``num_layers`` and ``hidden_dims`` when given.

    Example:
        >>> check_flow_options("iaf", {"hidden": 32})
        Traceback (most recent call last):
        ...
        ValueError: build_flow: unknown option 'hidden' for arch 'iaf' (did you mean ...
    """
    key = check_arch(arch)
    if num_layers is not None:
        _positive_int("num_layers", num_layers, 0 if arch_spec(key).num_layers == 0 else 1,
                      caller)
    if hidden_dims is not None:
        _hidden_list(hidden_dims, caller)
    _check_tails(options.get("tails"), caller)
    valid = _valid_options(key)
    if valid is None:
        return
    for name in options:
        if name not in valid and name not in UNIVERSAL_OPTIONS:
            close = difflib.get_close_matches(name, [*valid, "hidden_dims", "num_layers"], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"{caller}: unknown option {name!r} for arch {key!r} ({hint}valid options: "
                f"{', '.join(sorted(valid))}; and num_layers, hidden_dims, context_dim)")


UNIVERSAL_OPTIONS = ("tails",)
"""Options every architecture takes, handled by :func:`build_flow` itself: ``tails="tukey"``
appends a :class:`~pyro_flowvi.transforms.tails.TukeyTails` layer (learned power-law tails)."""


def _check_tails(tails: Any, caller: str) -> None:
    if tails not in (None, "tukey"):
        raise ValueError(f"{caller}: tails must be None or 'tukey' (a final TukeyTails layer "
                         f"with learned tail indices), got {tails!r}")


def _positive_int(name: str, value: Any, minimum: int = 1, caller: str = "build_flow") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{caller}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _hidden_list(hidden_dims: Any, caller: str = "build_flow") -> list[int]:
    if isinstance(hidden_dims, str | int) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden_dims):
        raise ValueError(f"{caller}: hidden_dims must be a list of positive integers, got "
                         f"{hidden_dims!r}")
    return list(hidden_dims)


def build_flow(
    arch: str,
    dim: int,
    *,
    context_dim: int | None = None,
    num_layers: int | None = None,
    hidden_dims: Sequence[int] | None = None,
    **options: object,
) -> FlowStack | ConditionalFlowTransform:
    """Build a flow stack by architecture name, with the defaults of its :class:`ArchSpec`.

    Args:
        arch: a registered name (see :func:`available_archs`), e.g. ``"iaf"``, ``"realnvp"``.
        dim: event size of the flow.
        context_dim: context size for a conditional flow, or ``None``.
        num_layers: number of flow layers (permutations/ActNorm between them not counted);
            default ``spec.num_layers``.
        hidden_dims: conditioner hidden sizes; default ``spec.hidden(dim)``.
        options: architecture-specific options (``scale``, ``max_log_scale``, ``actnorm``...),
            over ``spec.options``; an unknown one is a ``ValueError`` listing the valid names.
            Every architecture also takes ``tails="tukey"``: a final
            :class:`~pyro_flowvi.transforms.tails.TukeyTails` layer with learned tail indices.

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
    builder, spec = _REGISTRY[key]
    dim = _positive_int("dim", dim)
    if context_dim is not None:
        context_dim = _positive_int("context_dim", context_dim)
    num_layers = spec.num_layers if num_layers is None else _positive_int(
        "num_layers", num_layers, minimum=0 if spec.num_layers == 0 else 1)
    hidden = spec.hidden(dim) if hidden_dims is None else _hidden_list(hidden_dims)
    check_flow_options(key, options)
    tails = options.pop("tails", None)
    stack = builder(dim, context_dim=context_dim, num_layers=num_layers, hidden_dims=hidden,
                    **{**spec.options, **options})
    if tails == "tukey":  # last in the sampling direction: it shapes the tails the rest built
        stack = FlowStack([*stack.layers, TukeyTails(dim)], context_dim, dim=dim)
    return stack if context_dim is None else ConditionalFlowTransform(stack)


_AUTOREGRESSIVE = dict(num_layers=2, hidden=widths(64, 2, 2), options={"activation": nn.ReLU},
                       stl=True, stl_max_dim=64, autoregressive=True)
register_arch("iaf", iaf_flow, ArchSpec(
    **_AUTOREGRESSIVE, option_sources=(iaf_flow, autoregressive_flow),
    summary="inverse autoregressive (MADE) affine layers: one-pass sampling"))
register_arch("maf", maf_flow, ArchSpec(
    **_AUTOREGRESSIVE, option_sources=(maf_flow, autoregressive_flow),
    summary="masked autoregressive affine layers: one-pass density"))
register_arch("nsf", nsf_flow, ArchSpec(
    **_AUTOREGRESSIVE, option_sources=(nsf_flow, autoregressive_flow),
    summary="autoregressive rational-quadratic spline layers: one-pass sampling"))
_COUPLING = dict(num_layers=5, hidden=widths(32, 2, 1), options={"activation": nn.SiLU}, stl=True)
register_arch("realnvp", realnvp_flow, ArchSpec(
    **_COUPLING, option_sources=(realnvp_flow, coupling_flow),
    summary="affine coupling layers: one-pass sampling and density"))
register_arch("nsf-coupling", nsf_coupling_flow, ArchSpec(
    **_COUPLING, option_sources=(nsf_coupling_flow, coupling_flow),
    summary="rational-quadratic spline coupling layers: one-pass sampling and density"))
_SYLVESTER = dict(has_inverse=False, option_sources=(Sylvester.__init__,))
for _name, _variant in [("sylvester", "householder"), ("sylvester-orthogonal", "orthogonal"),
                        ("sylvester-householder", "householder"),
                        ("sylvester-triangular", "triangular")]:
    register_arch(_name, sylvester_builder(_variant), ArchSpec(
        **_SYLVESTER, summary=f"Sylvester flow, {_variant} Q (no analytic inverse)"))
register_arch("planar", pyro_builder(Planar, ConditionalPlanar), ArchSpec(
    has_inverse=False, summary="Pyro's planar flow (no analytic inverse)"))
register_arch("radial", pyro_builder(Radial, ConditionalRadial), ArchSpec(
    has_inverse=False, summary="Pyro's radial flow (no analytic inverse)"))
register_arch("flowified", flowified_flow, ArchSpec(
    option_sources=(flowified_flow, flowified_block),
    summary="flowified linear + activation blocks (Mate et al. 2022)"))
register_arch("gaussian", gaussian_flow, ArchSpec(
    num_layers=0, stl=True,
    summary="no flow: the full-rank (or diagonal) Gaussian base alone"))
