"""Initial points for guides that also work where the prior cannot be sampled."""

from __future__ import annotations

from typing import Any

import torch
from pyro.infer.autoguide.initialization import init_to_median
from torch import Tensor
from torch.distributions import biject_to

__all__ = ["init_to_feasible_point", "init_to_median_or_feasible"]


def init_to_feasible_point(site: dict[str, Any] | None = None) -> Any:
    """The point whose unconstrained coordinates are all zero, found without sampling.

    Pyro's ``init_to_feasible`` draws a sample to learn the site's shape, which a flat prior
    (``dist.ImproperUniform``, Stan's default) cannot do; this reads the shape from the
    distribution instead.  The value has torch's default dtype (set it to ``float64`` for a
    float64 model).

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.distributions import constraints
        >>> flat = dist.ImproperUniform(constraints.positive, (), (3,))
        >>> init_to_feasible_point({"fn": flat, "name": "sigma"})
        tensor([1., 1., 1.])
    """
    if site is None:
        return init_to_feasible_point
    fn = site["fn"]
    transform = biject_to(fn.support)
    shape = transform.inverse_shape(fn.batch_shape + fn.event_shape)
    dtype = next((v.dtype for v in vars(fn).values()
                  if isinstance(v, Tensor) and v.is_floating_point()), torch.get_default_dtype())
    device = next((v.device for v in vars(fn).values() if isinstance(v, Tensor)), None)
    value = transform(torch.zeros(shape, dtype=dtype, device=device))
    value._pyro_custom_init = False
    return value


def init_to_median_or_feasible(site: dict[str, Any] | None = None) -> Any:
    """Pyro's ``init_to_median`` (the prior median from 15 draws), or
    :func:`init_to_feasible_point` where the prior cannot be sampled (a flat prior) or has no
    finite median.

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.distributions import constraints
        >>> init_to_median_or_feasible({"fn": dist.ImproperUniform(constraints.real, (), (2,)),
        ...                             "name": "beta"})
        tensor([0., 0.])
    """
    if site is None:
        return init_to_median_or_feasible
    try:
        return init_to_median(site, fallback=init_to_feasible_point)
    except NotImplementedError:  # the prior cannot be sampled
        return init_to_feasible_point(site)
