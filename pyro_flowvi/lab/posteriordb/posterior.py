"""The :class:`Posterior` bundle: a Pyro model with its data, reference and Stan-order flattening."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from torch import Tensor
from torch.distributions import biject_to

from .data import Reference, parse_stan_name

__all__ = ["Posterior", "unconstrained_dim"]


@dataclass
class Posterior:
    """A posterior to fit: ``model(*args, **kwargs)`` plus its reference on the constrained scale.

    Sites are named after the Stan parameters (``beta``, ``sigma``, ``theta1``, ...), one site per
    parameter, vectors as one site with event shape ``(K,)``.  The model broadcasts over any leading
    batch dimensions of its parameters, laid out the Pyro way: under an outer
    ``pyro.plate(..., dim=-(max_plate_nesting + 1))`` a vector site has shape
    ``(S,) + (1,) * max_plate_nesting + (K,)``.

    Args:
        name: posteriordb name ``<data>-<model>``.
        model, args, kwargs: the Pyro model and its data arguments.
        dim: number of unconstrained scalar parameters (a ``simplex[K]`` counts K - 1).
        reference: the reference posterior; its ``names`` fix the flattened coordinate order.
        description, why_hard: from ``reference.json`` (or our own text for our own posteriors).
        max_plate_nesting: plates the model opens (0 or 1); an addition to the documented fields.

    Example:
        >>> from pyro_flowvi.lab.posteriordb import load_posterior
        >>> p = load_posterior("funnel-centered_hierarchical")
        >>> p.dim, p.reference.names[:3]
        (14, ['mu', 'tau', 'theta[1]'])
        >>> x = p.flatten(p.unflatten(p.reference.draws[:5]))
        >>> bool((x == p.reference.draws[:5]).all())
        True
    """

    name: str
    model: Callable[..., Any]
    args: tuple
    kwargs: dict
    dim: int
    reference: Reference
    description: str
    why_hard: str
    max_plate_nesting: int = 1
    _columns: list[tuple[str, tuple[int, ...]]] = field(init=False, repr=False)
    _shapes: dict[str, tuple[int, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._columns = [parse_stan_name(n) for n in self.reference.names]
        shapes: dict[str, tuple[int, ...]] = {}
        for site, index in self._columns:
            old = shapes.get(site, tuple(0 for _ in index))
            shapes[site] = tuple(max(a, i + 1) for a, i in zip(old, index, strict=True))
        self._shapes = shapes

    def __call__(self) -> Any:
        return self.model(*self.args, **self.kwargs)

    @property
    def site_shapes(self) -> dict[str, tuple[int, ...]]:
        """Event shape of every parameter site, e.g. ``{"beta": (5,), "sigma": ()}``."""
        return dict(self._shapes)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's data (the ``dtype`` given to ``load_posterior``)."""
        for a in (*self.args, *self.kwargs.values()):
            if isinstance(a, Tensor) and a.is_floating_point():
                return a.dtype
        return torch.get_default_dtype()

    def flatten(self, samples: Mapping[str, Tensor | np.ndarray]) -> np.ndarray:
        """Map ``{site: (S,) + site shape}`` constrained samples to an ``(S, K)`` float64 array.

        Columns follow ``reference.names`` (Stan flattening: ``beta[1]``, ..., ``sigma``).  Extra
        singleton batch dimensions (``(S, 1, K)`` from a vectorised ``Predictive``) are accepted;
        sites that are not parameters are ignored.
        """
        arrays = {}
        for site, shape in self._shapes.items():
            if site not in samples:
                raise KeyError(f"samples lack the site {site!r} (have {sorted(samples)})")
            value = samples[site]
            if isinstance(value, Tensor):
                value = value.detach().cpu().numpy()
            value = np.asarray(value, dtype=np.float64)
            arrays[site] = value.reshape((value.shape[0],) + shape)
        return np.column_stack([arrays[s][(slice(None),) + i] for s, i in self._columns])

    def unflatten(self, draws: np.ndarray) -> dict[str, np.ndarray]:
        """Inverse of :meth:`flatten`: ``(S, K)`` -> ``{site: (S,) + site shape}`` (numpy)."""
        draws = np.asarray(draws, dtype=np.float64)
        out = {s: np.empty((draws.shape[0],) + shape) for s, shape in self._shapes.items()}
        for k, (site, index) in enumerate(self._columns):
            out[site][(slice(None),) + index] = draws[:, k]
        return out

    def log_joint(
        self,
        values: Mapping[str, Tensor | np.ndarray],
        *,
        jacobian: bool = False,
        max_plate_nesting: int | None = None,
    ) -> Tensor:
        """Log joint ``log p(y, x)`` at S constrained points, vectorised; shape ``(S,)``.

        ``values`` maps each parameter site to ``(S,) + site shape``.  The model runs once inside
        ``pyro.plate("_particles", S, dim=-(m + 1))`` with ``m = max_plate_nesting`` (default: the
        model's own).  With ``jacobian=True`` the log-Jacobian of the constraining bijections
        (``torch.distributions.biject_to`` of each support) is added, giving the log density over
        the unconstrained space that SVI and NUTS see.  Gradients flow to ``values``.
        """
        m = self.max_plate_nesting if max_plate_nesting is None else max_plate_nesting
        vals = {}
        for site, shape in self._shapes.items():
            v = torch.as_tensor(values[site], dtype=self.dtype)
            vals[site] = v.reshape((v.shape[0],) + (1,) * m + shape)
        num = next(iter(vals.values())).shape[0]

        def batched() -> Any:
            with pyro.plate("_particles", num, dim=-(m + 1)):
                return self()

        trace = poutine.trace(poutine.condition(batched, data=vals)).get_trace()
        trace.compute_log_prob()
        total = torch.zeros(num, dtype=self.dtype)
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or name == "_particles" or "log_prob" not in site:
                continue
            total = total + _per_particle(site["log_prob"], m, num)
            if jacobian and name in vals:
                t = biject_to(site["fn"].support)
                x = site["value"]
                ladj = t.log_abs_det_jacobian(t.inv(x), x)
                total = total + _per_particle(ladj, m, num)
        return total


def _per_particle(x: Tensor, m: int, num: int) -> Tensor:
    """Sum a log-prob tensor over every dimension right of the particle dimension ``-(m + 1)``."""
    while x.dim() < m + 1:
        x = x.unsqueeze(0)
    x = x.sum(tuple(range(x.dim() - m, x.dim()))) if m else x
    x = x.reshape(x.shape[-1:])  # leading dims (if any) are singletons
    return x.expand(num)


def unconstrained_dim(posterior: Posterior, values: Mapping[str, Tensor | np.ndarray]) -> int:
    """Unconstrained dimension of the model, from one trace conditioned on ``values`` (unbatched)."""
    vals = {k: torch.as_tensor(v, dtype=posterior.dtype) for k, v in values.items()}
    trace = poutine.trace(poutine.condition(posterior.model, data=vals)).get_trace(
        *posterior.args, **posterior.kwargs
    )
    total = 0
    for name in vals:
        fn = trace.nodes[name]["fn"]
        shape = biject_to(fn.support).inv.forward_shape(trace.nodes[name]["value"].shape)
        total += int(np.prod(shape, dtype=np.int64))
    return total
