"""Importance weights of a model against a guide, vectorised over particles, with the full data
when the model subsamples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.enum import get_importance_trace
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from pyro_flowvi.initialization import init_to_feasible_point

__all__ = [
    "SubsampledPlate",
    "importance_log_weights",
    "importance_traces",
    "particle_log_weights",
    "subsampled_plates",
]

_PARTICLES = "_num_particles"


def _guess_max_plate_nesting(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> int:
    """Deepest vectorized plate in one prototype (guide, replayed model) pair, as Pyro's ELBO."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    dims = [
        frame.dim
        for trace in (prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace))
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims) if dims else 0


def _to_particles(log_prob: Tensor, dim: int, n: int) -> Tensor:
    """Sum a (scaled, masked) site log-prob over every dim but the particle dim ``-dim``."""
    if log_prob.dim() < dim:  # does not vary over particles
        return log_prob.sum().expand(n)
    if log_prob.dim() > dim:
        raise ValueError(
            f"importance_log_weights: a site log-prob has shape {tuple(log_prob.shape)}, deeper "
            f"than max_plate_nesting + 1 = {dim}: enumerated or unplated batch dims are not "
            "supported (declare batch dims with plates, or pass a larger max_plate_nesting).")
    return log_prob.reshape(log_prob.shape[0], -1).sum(-1).expand(n)


def _particle_value(site: dict, dim: int, n: int) -> Tensor:
    """A site's value reshaped to ``(n,) + (its own plate dims) + event_shape``."""
    value = site["value"].detach()
    split = value.dim() - site["fn"].event_dim
    event, batch = value.shape[split:], tuple(value.shape[:split])
    batch = (1,) * (dim - len(batch)) + batch
    depth = max(
        (-f.dim for f in site["cond_indep_stack"] if f.vectorized and f.name != _PARTICLES),
        default=0,
    )
    rest = batch[1:]
    while len(rest) > depth and rest[0] == 1:
        rest = rest[1:]
    value = value.reshape(batch + tuple(event)).expand((n,) + batch[1:] + tuple(event))
    return value.reshape((n,) + rest + tuple(event))


def importance_traces(
    model: Callable, guide: Callable, n: int, dim: int, args: tuple, kwargs: dict,
) -> tuple[poutine.Trace, poutine.Trace]:
    """``(model_trace, guide_trace)`` of one vectorised pass: ``n`` particles in a
    ``pyro.plate`` at dim ``-dim`` (``dim = max_plate_nesting + 1``) around guide and replayed
    model, every site's log-prob computed (Pyro's ``get_importance_trace``)."""
    vec_model, vec_guide = (pyro.plate(_PARTICLES, n, dim=-dim)(f) for f in (model, guide))
    return get_importance_trace("flat", dim, vec_model, vec_guide, args, kwargs)


def particle_log_weights(
    model_trace: poutine.Trace, guide_trace: poutine.Trace, dim: int, n: int,
    values: dict[str, list[Tensor]] | None = None,
) -> Tensor:
    r"""Per-particle :math:`\log p(x, z_s) - \log q(z_s)` of a vectorised importance trace pair.

    ``dim = max_plate_nesting + 1`` is the depth of the particle plate, ``n`` its size.  Every
    sample site's (scaled, masked) log-prob is summed over all but the particle dim; model sites
    not in the guide are skipped (drawn from their prior, they cancel).  The result keeps its
    autograd graph.  When ``values`` is given, each latent model site's value (shape
    ``(n,) + site shape``, detached) is appended to ``values[name]``.
    """
    log_w = _model_terms(model_trace, guide_trace, dim, n, values) - _guide_terms(
        guide_trace, dim, n)
    if not isinstance(log_w, Tensor):
        raise ValueError("importance_log_weights: the model and guide have no sample sites")
    return log_w


def _model_terms(
    model_trace: poutine.Trace, guide_trace: poutine.Trace | None, dim: int, n: int,
    values: dict[str, list[Tensor]] | None, plate: SubsampledPlate | None = None,
    keep: Tensor | None = None, plated_only: bool = False,
) -> Tensor | float:
    """Sum of the model's site log-probs per particle.  With ``plate``, sites inside that
    subsampled plate count only the members at positions ``keep``, unscaled (``M / N``);
    ``plated_only`` skips every other site.  Latent sites missing from ``guide_trace`` are
    skipped (``guide_trace=None``: every site counts)."""
    total: Tensor | float = 0.0
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        frame = None if plate is None else next(
            (f for f in site["cond_indep_stack"] if f.name == plate.name), None)
        if frame is None and plated_only:
            continue
        if not site["is_observed"] and guide_trace is not None:
            if name not in guide_trace.nodes:
                continue  # drawn from its prior: p / q cancels
            if frame is not None:
                raise ValueError(
                    f"importance weights on the full data: the latent site {name!r} lies inside "
                    f"the subsampled plate {plate.name!r}, so its guide only covers a minibatch; "
                    "full-data weights need a guide over all members. Call with "
                    "full_data=False for minibatch weights (their k-hat is not meaningful).")
            if values is not None and not site["infer"].get("is_auxiliary"):
                values.setdefault(name, []).append(_particle_value(site, dim, n))
        log_prob = site["log_prob"]
        if frame is not None:
            if log_prob.dim() < -frame.dim or log_prob.shape[frame.dim] != plate.subsample_size:
                raise ValueError(
                    f"importance weights on the full data: site {name!r} inside plate "
                    f"{plate.name!r} has log_prob shape {tuple(log_prob.shape)}, without the "
                    f"plate's dim {frame.dim} of size {plate.subsample_size}.")
            log_prob = log_prob.index_select(frame.dim, keep) * plate.subsample_size / plate.size
        total = total + _to_particles(log_prob, dim, n)
    return total


def _guide_terms(guide_trace: poutine.Trace, dim: int, n: int,
                 plate: SubsampledPlate | None = None) -> Tensor | float:
    total: Tensor | float = 0.0
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if plate is not None and any(f.name == plate.name for f in site["cond_indep_stack"]):
            raise ValueError(
                f"importance weights on the full data: the guide's site {name!r} lies inside "
                f"the subsampled plate {plate.name!r}; full-data weights need a guide over all "
                "members. Call with full_data=False for minibatch weights.")
        total = total + _to_particles(site["log_prob"], dim, n)
    return total


class SubsampledPlate(NamedTuple):
    """A plate that draws ``subsample_size`` of its ``size`` members per call."""

    name: str
    size: int
    subsample_size: int
    device: torch.device


def subsampled_plates(model: Callable, *args: Any, **kwargs: Any) -> list[SubsampledPlate]:
    """The plates of one prototype model trace that subsample (``subsample_size < size``).

    Example:
        >>> import pyro.distributions as dist
        >>> def model(y):
        ...     with pyro.plate("data", len(y), subsample_size=3) as idx:
        ...         pyro.sample("y", dist.Normal(0.0, 1.0), obs=y[idx])
        >>> subsampled_plates(model, torch.zeros(10))
        [SubsampledPlate(name='data', size=10, subsample_size=3, device=device(type='cpu'))]
    """
    with poutine.block(), torch.no_grad():  # latents at a feasible point: no prior sampling
        trace = poutine.trace(InitMessenger(init_to_feasible_point)(model)).get_trace(
            *args, **kwargs)
    found: dict[str, SubsampledPlate] = {}
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        for frame in site["cond_indep_stack"]:
            if frame.full_size is not None and frame.size < frame.full_size \
                    and frame.name in trace.nodes:
                index = trace.nodes[frame.name]["value"]
                found[frame.name] = SubsampledPlate(frame.name, int(frame.full_size),
                                                    int(frame.size), index.device)
    return list(found.values())


def _chunks(plate: SubsampledPlate) -> list[tuple[Tensor, Tensor]]:
    """Index sets of exactly ``subsample_size`` members covering ``0..size-1``, each with the
    positions of the members it adds (the last set overlaps the one before it)."""
    m, size, device = plate.subsample_size, plate.size, plate.device
    out = []
    for start in range(0, size, m):
        first = min(start, size - m)
        index = torch.arange(first, first + m, device=device)
        out.append((index, torch.arange(start - first, m, device=device)))
    return out


def _batch_log_weights(
    model: Callable, guide: Callable, plates: list[SubsampledPlate], n: int, dim: int,
    args: tuple, kwargs: dict, values: dict[str, list[Tensor]],
) -> Tensor:
    if plates:
        return _full_data_log_weights(model, guide, plates[0], n, dim, args, kwargs, values)
    model_trace, guide_trace = importance_traces(model, guide, n, dim, args, kwargs)
    return particle_log_weights(model_trace, guide_trace, dim, n, values=values)


def _full_data_log_weights(
    model: Callable, guide: Callable, plate: SubsampledPlate, n: int, dim: int, args: tuple,
    kwargs: dict, values: dict[str, list[Tensor]],
) -> Tensor:
    """One batch of ``n`` particles: the guide once, the model on every chunk of the data."""
    vec_model, vec_guide = (pyro.plate(_PARTICLES, n, dim=-dim)(f) for f in (model, guide))
    guide_trace = poutine.trace(vec_guide).get_trace(*args, **kwargs)
    guide_trace = prune_subsample_sites(guide_trace)
    guide_trace.compute_log_prob()
    log_w = -_guide_terms(guide_trace, dim, n, plate)
    for k, (index, keep) in enumerate(_chunks(plate)):
        chunk_model = poutine.condition(vec_model, data={plate.name: index})
        model_trace = poutine.trace(poutine.replay(chunk_model, trace=guide_trace)).get_trace(
            *args, **kwargs)
        model_trace = prune_subsample_sites(model_trace)
        model_trace.compute_log_prob()
        log_w = log_w + _model_terms(model_trace, guide_trace, dim, n,
                                     values if k == 0 else None, plate, keep,
                                     plated_only=k > 0)
    return log_w


@torch.no_grad()
def importance_log_weights(
    model: Callable, guide: Callable, *args: Any, num_samples: int = 1000,
    max_plate_nesting: int | None = None, batch_size: int | None = None, full_data: bool = True,
    **kwargs: Any,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Importance log weights of the model against the guide, vectorised over particles.

    .. math::

        \log w_s = \log p(x, z_s) - \log q(z_s), \qquad z_s \sim q,

    where both terms are the sums of every sample site's (scaled, masked) log-prob, exactly as in
    :class:`~pyro.infer.Trace_ELBO`: subsample scales (``N / M``) are applied, and guide sites
    marked ``is_auxiliary`` (an ``AutoContinuous``' packed latent, which carries the flow
    density, with the ``Delta`` sites carrying the constraining log-det) count in :math:`\log q`.
    Unobserved model sites absent from the guide are drawn from their prior, which cancels.

    The particles live in a ``pyro.plate("_num_particles", B, dim=-(max_plate_nesting + 1))``
    around guide and model, ``B = batch_size`` at a time; a model that fails with ``B > 1``
    draws (it does not broadcast over a leading batch dim) is run one draw at a time.

    A model that subsamples (``pyro.plate(name, N, subsample_size=M)``) is scored on the full
    data by default: the guide is drawn once per batch and the model is run on ``ceil(N / M)``
    index sets of size ``M`` that cover every member once (each member unscaled), so the weights
    are those of the full posterior and reproducible.  This costs ``N / M`` model passes and needs
    a guide without sites inside the subsampled plate (refused otherwise, with the site named).
    ``full_data=False`` keeps Pyro's estimate instead: one random minibatch per batch, scaled by
    ``N / M``, shared by the particles of the batch (weights that are neither independent nor
    the posterior's, so their k-hat says little).

    Args:
        model, guide: the Pyro programs; ``*args, **kwargs`` go to both.
        num_samples: number of particles ``N``.
        max_plate_nesting: inferred from one prototype trace when ``None``.
        batch_size: particles per vectorised pass (all ``N`` at once when ``None``).
        full_data: score a subsampling model on all of its data (see above).

    Returns:
        ``(log_w, samples)``: detached log weights of shape ``(N,)`` and a dict of the latent
        model sites' constrained values, each of shape ``(N,) + site shape``.

    Example:
        >>> import pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> guide = lambda: pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> log_w, samples = importance_log_weights(model, guide, num_samples=5)
        >>> log_w.abs().max() < 1e-6, samples["z"].shape
        (tensor(True), torch.Size([5]))
    """
    if num_samples < 1:
        raise ValueError(f"importance_log_weights: num_samples must be >= 1, got {num_samples}")
    if max_plate_nesting is None:
        max_plate_nesting = _guess_max_plate_nesting(model, guide, args, kwargs)
    dim = max_plate_nesting + 1
    batch_size = num_samples if batch_size is None else max(1, min(batch_size, num_samples))
    plates = subsampled_plates(model, *args, **kwargs) if full_data else []
    if len(plates) > 1:
        raise ValueError(
            f"importance weights on the full data: the model subsamples {len(plates)} plates "
            f"({', '.join(p.name for p in plates)}); only one is supported. Call with "
            "full_data=False for minibatch weights.")
    log_ws: list[Tensor] = []
    values: dict[str, list[Tensor]] = {}
    start = 0
    while start < num_samples:
        n = min(batch_size, num_samples - start)
        try:
            log_w = _batch_log_weights(model, guide, plates, n, dim, args, kwargs, values)
        except (RuntimeError, ValueError, IndexError) as err:
            if n == 1 or start > 0:
                raise
            try:  # a model that only runs one draw at a time
                log_w = _batch_log_weights(model, guide, plates, 1, dim, args, kwargs, values)
            except (RuntimeError, ValueError, IndexError):
                raise err from None
            batch_size = n = 1
        log_ws.append(log_w)
        start += n
    samples = {name: torch.cat(parts) for name, parts in values.items()}
    return torch.cat(log_ws).detach(), samples


