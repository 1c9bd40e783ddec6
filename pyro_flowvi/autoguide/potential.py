"""The model's log density on the packed unconstrained latent vector, vectorised over draws."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide import AutoContinuous
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor
from torch.distributions import biject_to

from pyro_flowvi.importance import _chunks, _model_terms, subsampled_plates

__all__ = ["UnconstrainedLogDensity", "max_plate_nesting"]

_DRAWS = "_flowvi_draws"


def max_plate_nesting(trace: poutine.Trace) -> int:
    """The deepest vectorised plate of any sample site of ``trace`` (0 without plates)."""
    dims = [-frame.dim for site in trace.nodes.values() if site["type"] == "sample"
            for frame in site["cond_indep_stack"] if frame.vectorized]
    return max(dims, default=0)


class UnconstrainedLogDensity:
    r""":math:`\log \tilde p(u) = \log p(x, T(u)) + \log|\det \partial T / \partial u|` for the
    packed unconstrained latent ``u`` of an ``AutoContinuous`` guide.

    ``T`` applies ``biject_to(site.support)`` per latent site, in the guide's packing order;
    this is the density the guide approximates (minus HMC's potential energy).  Called on ``u``
    of shape ``(D,)`` it returns a scalar; on ``(M, D)`` it returns ``(M,)``, the ``M`` draws
    evaluated in one vectorised model pass (a ``pyro.plate`` of size ``M`` left of the model's
    own plates; a model that does not broadcast over that plate is run under ``torch.vmap``,
    or draw by draw where an operation has no vmap rule).  A model that subsamples one plate
    is evaluated on all of its members (in chunks of the minibatch size, see
    :func:`~pyro_flowvi.importance.importance_log_weights`) unless ``full_data=False``, which
    keeps Pyro's scaled minibatch estimate.

    Args:
        guide: an ``AutoContinuous`` guide whose prototype has been set up (call it once).
        args, kwargs: the model's arguments.

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro_flowvi import AutoFlowGuide
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        >>> guide = AutoFlowGuide(model)
        >>> _ = guide()
        >>> log_p = UnconstrainedLogDensity(guide)
        >>> u = torch.tensor([[0.0], [1.0]])
        >>> torch.allclose(log_p(u), dist.Normal(0.0, 1.0).log_prob(u[:, 0]))  # log-normal
        True
    """

    def __init__(self, guide: AutoContinuous, args: tuple = (), kwargs: dict | None = None,
                 full_data: bool = True) -> None:
        if guide.prototype_trace is None:
            raise ValueError("UnconstrainedLogDensity: call the guide once first (its latent "
                             "layout is set up on the first call)")
        self.guide, self.args, self.kwargs = guide, tuple(args), dict(kwargs or {})
        # every latent is conditioned, so the user's model without the guide's InitMessenger
        # (whose init_to_median would draw prior samples on every call, for nothing)
        self.model: Callable = getattr(guide, "_user_model", (guide.model,))[0]
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(guide.model).get_trace(*self.args, **self.kwargs)
        self.max_plate_nesting = max_plate_nesting(trace)
        self._batching: str | None = None  # how (M, D) draws run: "plate", "vmap" or "loop"
        self.plates = subsampled_plates(guide.model, *self.args, **self.kwargs) \
            if full_data else []
        if len(self.plates) > 1:
            raise ValueError(
                f"UnconstrainedLogDensity: the model subsamples {len(self.plates)} plates; the "
                "full-data density supports one (pass full_data=False for a minibatch estimate)")

    def constrained(self, u: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The constrained site values of ``u`` (``(D,)`` or ``(M, D)``) and the summed
        log-Jacobian of ``T`` per draw."""
        batched = u.dim() == 2
        packed = u.reshape((u.shape[0],) + (1,) * self.max_plate_nesting + (u.shape[-1],)) \
            if batched else u
        values: dict[str, Tensor] = {}
        log_det: Tensor = u.new_zeros(u.shape[:1] if batched else ())
        for site, value in self.guide._unpack_latent(packed):
            transform = biject_to(site["fn"].support)
            x = transform(value)
            values[site["name"]] = x
            ladj = transform.log_abs_det_jacobian(value, x)
            log_det = log_det + (ladj.reshape(u.shape[0], -1).sum(-1) if batched else ladj.sum())
        return values, log_det

    def __call__(self, u: Tensor) -> Tensor:
        if u.dim() not in (1, 2) or u.shape[-1] != self.guide.latent_dim:
            raise ValueError(f"UnconstrainedLogDensity: expected u of shape (D,) or (M, D) with "
                             f"D = {self.guide.latent_dim}, got {tuple(u.shape)}")
        if u.dim() == 1 or self._batching == "plate":
            return self._evaluate(u)
        if self._batching is None:  # the first batch: find how the model takes one
            try:
                result = self._evaluate(u)
                self._batching = "plate"
                return result
            except (RuntimeError, ValueError, IndexError):
                self._batching = "vmap"  # a model that does not broadcast over draws
        if self._batching == "vmap":
            try:
                with pyro.validation_enabled(False):  # its NaN checks are host-side branches
                    return torch.vmap(self._evaluate)(u)
            except (RuntimeError, ValueError, IndexError):
                self._batching = "loop"  # an operation without a vmap rule
        return torch.stack([self._evaluate(row) for row in u])

    def _evaluate(self, u: Tensor) -> Tensor:
        values, log_det = self.constrained(u)
        batched = u.dim() == 2
        n, dim = (u.shape[0] if batched else 1), self.max_plate_nesting + 1
        plate = self.plates[0] if self.plates else None
        chunks = _chunks(plate) if plate is not None else [(None, None)]
        total: Tensor | float = 0.0
        for k, (index, keep) in enumerate(chunks):
            data = values if index is None else {**values, plate.name: index}
            model = poutine.condition(self.model, data=data)
            with poutine.block():  # hides every site, the draws plate's own included
                if batched:
                    model = pyro.plate(_DRAWS, n, dim=-dim)(model)
                trace = prune_subsample_sites(poutine.trace(model).get_trace(*self.args,
                                                                             **self.kwargs))
            trace.compute_log_prob()
            total = total + _model_terms(trace, None, dim, n, None, plate if index is not None
                                         else None, keep, plated_only=k > 0)
        total = log_det + total
        return total if batched else total[0]


def unconstrained_log_joint(guide: AutoContinuous, latent: Tensor, *args: Any,
                            **kwargs: Any) -> Tensor:
    """``UnconstrainedLogDensity(guide, args, kwargs)(latent)`` in one call."""
    return UnconstrainedLogDensity(guide, args, kwargs)(latent)
