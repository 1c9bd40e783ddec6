"""Guide specs: one small language for every experiment (``"mvn"``, ``"iaf+full+fkl"``, ...)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import pyro.distributions.transforms as T
import torch
from pyro.infer.autoguide import (
    AutoGuide,
    AutoIAFNormal,
    AutoMultivariateNormal,
    AutoNormal,
    AutoNormalizingFlow,
)

from pyro_flowvi import AutoFlowGuide, available_archs
from pyro_flowvi.initialization import (
    init_to_feasible_point,
    init_to_median_or_feasible,
)

__all__ = ["MODIFIERS", "STOCK_GUIDES", "STOCK_INITS", "GuideSpec", "build_guide", "parse_spec",
           "stock_coupling"]



def stock_coupling(model: Callable, init_loc_fn: Callable | None = None, num_layers: int = 4,
                   hidden: int = 64) -> AutoGuide:
    """``AutoNormalizingFlow`` of Pyro affine couplings (``num_layers``, two hidden layers of
    ``hidden``), reversing the coordinates in between: Pyro's own coupling flow guide."""

    def init(dim: int) -> T.ComposeTransformModule:
        parts: list[torch.distributions.Transform] = []
        for k in range(num_layers):
            if k:
                parts.append(T.Permute(torch.arange(dim - 1, -1, -1)))
            parts.append(T.affine_coupling(dim, hidden_dims=[hidden, hidden]))
        return T.ComposeTransformModule(parts)

    guide = AutoNormalizingFlow(model, init)
    if init_loc_fn is not None:
        guide.init_loc_fn = init_loc_fn
    return guide


STOCK_GUIDES: dict[str, Callable[..., AutoGuide]] = {
    "normal": AutoNormal,
    "mvn": AutoMultivariateNormal,
    "iafnormal": AutoIAFNormal,
    "autoiafnormal-default": AutoIAFNormal,
    "autoiafnormal-2x32": functools.partial(AutoIAFNormal, hidden_dim=[32, 32], num_transforms=2),
    "autonormalizingflow-coupling": stock_coupling,
}
"""Stock Pyro guides with Pyro's own defaults, as a user writes them (``AutoNormal(model)``),
and the banana benchmark's variants (spelled ``AutoIAFNormal-default``, ``AutoIAFNormal-2x32``,
``AutoNormalizingFlow-coupling``).
Their default initialisations (``init_to_feasible``, ``init_to_median``) sample the prior, which
a flat prior (``ImproperUniform``) cannot do: there :func:`build_guide` gives them the twin that
does not sample (:data:`STOCK_INITS`)."""
STOCK_INITS: dict[str, Callable] = {
    "normal": init_to_feasible_point,
    "mvn": init_to_median_or_feasible,
    "iafnormal": init_to_median_or_feasible,
    "autoiafnormal-default": init_to_median_or_feasible,
    "autoiafnormal-2x32": init_to_median_or_feasible,
    "autonormalizingflow-coupling": init_to_feasible_point,
}
_ALIASES = {"autonormal": "normal", "automultivariatenormal": "mvn", "autoiafnormal": "iafnormal"}

MODIFIERS: dict[str, tuple[str, Any]] = {
    "full": ("base", "full"), "diagonal": ("base", "diagonal"),
    "map": ("warm_start", "map"), "laplace": ("warm_start", "laplace"),
    "cold": ("warm_start", None), "stl": ("stl", True), "nostl": ("stl", False),
    "natural": ("permutation", "reverse_last_natural"),
}
"""``+name`` modifiers of a flow spec -> the :class:`~pyro_flowvi.AutoFlowGuide` option they set.
``+fkl`` is not among them: it names the objective (:class:`~pyro_flowvi.MassCoveringELBO`)."""
COVERING = "fkl"


@dataclasses.dataclass(frozen=True)
class GuideSpec:
    """A parsed guide spec: a stock guide or a flow ``arch`` with :class:`AutoFlowGuide`
    ``options`` and the training ``objective`` (``"elbo"`` or ``"mass_covering"``)."""

    text: str
    head: str
    options: dict[str, Any]
    objective: str

    @property
    def is_flow(self) -> bool:
        return self.head not in STOCK_GUIDES


def parse_spec(spec: str) -> GuideSpec:
    """Parse ``HEAD[+MOD...]``: ``HEAD`` a stock guide (:data:`STOCK_GUIDES`, also by class
    name) or a registered arch; ``MOD`` one of :data:`MODIFIERS` or ``fkl``.

    Example:
        >>> parse_spec("iaf+full+fkl")
        GuideSpec(text='iaf+full+fkl', head='iaf', options={'base': 'full'}, objective='mass_covering')
        >>> parse_spec("AutoMultivariateNormal").head
        'mvn'
    """
    head, *mods = [part.strip() for part in spec.split("+")]
    key = _ALIASES.get(head.lower(), head.lower())
    if key not in STOCK_GUIDES and key not in available_archs():
        raise ValueError(f"unknown guide {spec!r}: its head must be a stock guide "
                         f"({', '.join(STOCK_GUIDES)}) or a registered arch "
                         f"({', '.join(available_archs())})")
    options: dict[str, Any] = {}
    objective = "elbo"
    for mod in mods:
        if mod == COVERING:
            objective = "mass_covering"
        elif mod in MODIFIERS:
            name, value = MODIFIERS[mod]
            options[name] = value
        elif mod[:1] == "t" and mod[1:].replace(".", "", 1).isdigit():
            options["base_df"] = float(mod[1:])  # +t10: a Student-t(10) base
        else:
            raise ValueError(f"unknown modifier {mod!r} in guide {spec!r}; use "
                             f"{', '.join([*MODIFIERS, COVERING])} or tDF (a Student-t base)")
    if key in STOCK_GUIDES and (options or objective != "elbo"):
        raise ValueError(f"guide {spec!r}: modifiers (+{'+'.join(mods)}) apply to flow guides "
                         "(AutoFlowGuide archs) only, not to the stock guide")
    return GuideSpec(spec, key, options, objective)


def build_guide(spec: str | GuideSpec, model: Callable, **flow_options: Any) -> AutoGuide:
    """The guide a spec names; ``flow_options`` (then the spec's modifiers) go to flow guides.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> type(build_guide("mvn", model)).__name__, build_guide("realnvp+cold", model).arch
        ('AutoMultivariateNormal', 'realnvp')
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if not parsed.is_flow:
        return STOCK_GUIDES[parsed.head](model, init_loc_fn=STOCK_INITS[parsed.head])
    return AutoFlowGuide(model, arch=parsed.head, **{**flow_options, **parsed.options})
