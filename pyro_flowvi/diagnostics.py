"""Diagnostics for any Pyro guide: importance weights, ELBO, PSIS k-hat, ESS, entropy, ArviZ."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from pyro.distributions.util import sum_rightmost
from torch import Tensor
from torch.distributions import TransformedDistribution

from pyro_flowvi.importance import (
    importance_log_weights,
    importance_traces,
    particle_log_weights,
    subsampled_plates,
)

if TYPE_CHECKING:
    import arviz

__all__ = [
    "DiagnosticReport",
    "diagnose",
    "elbo_estimate",
    "entropy_decomposition",
    "importance_ess",
    "importance_log_weights",
    "importance_traces",
    "log_evidence_estimate",
    "particle_log_weights",
    "psis_khat",
    "to_inference_data",
]

_ENTROPY_FIELDS = {  # DiagnosticReport field -> entropy_decomposition key
    "entropy": "entropy_mc", "entropy_se": "entropy_mc_se", "entropy_base": "entropy_base",
    "logdet_mean": "logdet_mean", "entropy_residual": "residual",
    "entropy_residual_se": "residual_se",
}


def _flat(log_w: Tensor) -> Tensor:
    log_w = torch.as_tensor(log_w).detach().reshape(-1)
    if log_w.numel() == 0:
        raise ValueError("expected at least one log weight")
    return log_w


def _mean_se(x: Tensor) -> tuple[float, float]:
    se = x.std() / math.sqrt(x.numel()) if x.numel() > 1 else x.new_tensor(math.nan)
    return float(x.mean()), float(se)


def elbo_estimate(log_w: Tensor) -> tuple[float, float]:
    r"""ELBO estimate :math:`\frac1N\sum_s \log w_s` and its Monte Carlo standard error.

    Example:
        >>> elbo_estimate(torch.tensor([-1.0, -3.0]))
        (-2.0, 1.0)
    """
    return _mean_se(_flat(log_w))


def log_evidence_estimate(log_w: Tensor) -> tuple[float, float]:
    r"""Importance-sampling estimate of :math:`\log Z` and its delta-method standard error.

    .. math::

        \widehat{\log Z} = \log \frac1N \sum_s w_s, \qquad
        \mathrm{se} \approx \frac{\mathrm{sd}(w)}{\sqrt N\, \bar w}.

    Biased low for finite ``N`` (Jensen); the s.e. is unreliable when :func:`psis_khat` > 0.7.

    Example:
        >>> log_evidence_estimate(torch.tensor([0.0, 0.0, 0.0]))
        (0.0, 0.0)
    """
    log_w = _flat(log_w)
    log_z = torch.logsumexp(log_w, 0) - math.log(log_w.numel())
    return float(log_z), _mean_se(torch.exp(log_w - log_z))[1]


def importance_ess(log_w: Tensor) -> tuple[float, float]:
    r"""Effective sample size :math:`1 / \sum_s \bar w_s^2` of the normalised weights, and ESS / N.

    Example:
        >>> importance_ess(torch.tensor([0.0, 0.0, -1e9, -1e9]))
        (2.0, 0.5)
    """
    log_w = _flat(log_w)
    log_wn = log_w - torch.logsumexp(log_w, 0)
    ess = float(torch.exp(-torch.logsumexp(2 * log_wn, 0)))
    return ess, ess / log_w.numel()


def psis_khat(log_w: Tensor) -> float:
    r"""Pareto-smoothed importance sampling tail index :math:`\hat k` (``arviz.psislw``).

    :math:`\hat k < 0.5`: good; :math:`0.5 \le \hat k < 0.7`: usable; :math:`\ge 0.7`: the guide's
    tails are too light for importance sampling (Yao et al., 2018, arXiv:1802.02538).  Weights
    constant to rounding error (an exact guide) have no tail to fit; they are bounded, and
    reported as ``-inf``.  ``inf`` means arviz could not fit a tail (too few samples).

    Example:
        >>> eps = torch.randn(1000, generator=torch.Generator().manual_seed(0))
        >>> psis_khat(-0.5 * eps**2) < 0.5  # bounded weights: a guide wider than the target
        True
    """
    import arviz

    log_w = _flat(log_w)
    x = log_w.to("cpu", torch.float64).numpy().copy()
    scale = max(1.0, float(log_w.abs().max()))
    if float(log_w.max() - log_w.min()) <= 64 * torch.finfo(log_w.dtype).eps * scale:
        return -math.inf
    return float(arviz.psislw(x, reff=1.0)[1])


def _event_dims(posterior: TransformedDistribution) -> tuple[list[int], int]:
    """Dims to sum from each transform's log-det, and from the base log-prob, as in log_prob."""
    event_dim = len(posterior.event_shape)
    dims = []
    for t in reversed(posterior.transforms):
        event_dim += t.domain.event_dim - t.codomain.event_dim
        dims.append(event_dim - t.domain.event_dim)
    return dims[::-1], event_dim - len(posterior.base_dist.event_shape)


@torch.no_grad()
def entropy_decomposition(
    posterior: TransformedDistribution, num_samples: int = 4000
) -> dict[str, Any]:
    r"""Check the entropy identity of a flow on ``num_samples`` draws (the "sign flip" check).

    For :math:`z = f_K \circ \cdots \circ f_1(\varepsilon)`, :math:`\varepsilon \sim` base,

    .. math::

        \log q(z) = \log p_0(\varepsilon) - \sum_k \log|\det J_{f_k}|, \qquad
        H[q] = H[p_0] + \mathbb E\Big[\sum_k \log|\det J_{f_k}|\Big].

    Each transform's log-det is read right after its forward call (free for cached flows) and
    summed to the event as :class:`~torch.distributions.TransformedDistribution` does;
    ``posterior.log_prob`` then scores the same draws (inverting through the caches).  A batched
    posterior is treated as the product of its independent members (entropies summed).

    Returns:
        A dict of floats (``_se``: Monte Carlo standard errors): ``entropy_base`` (closed form
        when ``base.entropy()`` exists, else MC), ``entropy_base_mc(_se)`` (:math:`-\log p_0`),
        ``logdet_mean``/``logdet_se``, ``logdet_per_transform`` (list), ``entropy_mc(_se)``
        (:math:`-\log q`), ``entropy_identity`` (base + logdet), ``residual(_se)`` (MC entropy
        minus identity), ``identity_max_abs_error`` (max over draws of :math:`|\log p_0 -
        \sum \log|\det J| - \log q|`), ``base_entropy_closed_form``, ``num_samples``.

    Example:
        >>> import pyro.distributions as dist
        >>> from torch.distributions.transforms import AffineTransform
        >>> base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
        >>> q = dist.TransformedDistribution(base, [AffineTransform(0.0, 2.0, event_dim=1)])
        >>> out = entropy_decomposition(q, num_samples=100)
        >>> round(out["logdet_mean"], 4), round(out["entropy_identity"], 4)  # 3 log 2, H[q]
        (2.0794, 6.3363)
        >>> out["identity_max_abs_error"] < 1e-5
        True
    """
    if not isinstance(posterior, TransformedDistribution):
        raise TypeError(
            f"entropy_decomposition: expected a TransformedDistribution, got {type(posterior)}"
        )
    ladj_dims, base_dims = _event_dims(posterior)
    base, n = posterior.base_dist, int(num_samples)
    shape = (n,) + tuple(posterior.batch_shape)

    def per_draw(t: Tensor, sum_dims: int) -> Tensor:
        return sum_rightmost(t, sum_dims).expand(shape).reshape(n, -1).sum(-1)

    x = base.sample((n,))
    log_base = per_draw(base.log_prob(x), base_dims)
    ladjs = []
    for t, k in zip(posterior.transforms, ladj_dims, strict=True):
        y = t(x)
        ladjs.append(per_draw(t.log_abs_det_jacobian(x, y), k))
        x = y
    log_q = per_draw(posterior.log_prob(x), 0)
    ladj = torch.stack(ladjs).sum(0) if ladjs else torch.zeros_like(log_q)

    try:
        h_base = sum_rightmost(base.entropy(), base_dims).expand(shape[1:]).sum()
        closed, offset = True, h_base
    except NotImplementedError:  # torch's only signal that a distribution lacks entropy()
        closed, offset = False, -log_base
        h_base = offset.mean()
    out: dict[str, Any] = {"entropy_base": float(h_base), "base_entropy_closed_form": closed}
    for key, se_key, draws in [
        ("entropy_base_mc", "entropy_base_mc_se", -log_base),
        ("logdet_mean", "logdet_se", ladj),
        ("entropy_mc", "entropy_mc_se", -log_q),
        ("residual", "residual_se", -log_q - ladj - offset),
    ]:
        out[key], out[se_key] = _mean_se(draws)
    out["entropy_identity"] = out["entropy_base"] + out["logdet_mean"]
    out["logdet_per_transform"] = [float(t.mean()) for t in ladjs]
    out["identity_max_abs_error"] = float((log_base - ladj - log_q).abs().max())
    out["num_samples"] = n
    return out


@dataclasses.dataclass(frozen=True)
class DiagnosticReport:
    """Summary of :func:`diagnose`: importance-sampling and (for flow guides) entropy checks.

    Fields: ELBO and IS log-evidence estimates with standard errors, PSIS k-hat, ESS and ESS/N
    over ``num_samples`` importance samples; for flow guides, the MC entropy (``entropy``) and
    its identity terms (``entropy_base``, ``logdet_mean``, ``entropy_residual``), else ``None``;
    ``data`` says what the weights were computed on (a subsampling model: every member, in
    chunks of the minibatch size, see :func:`~pyro_flowvi.importance.importance_log_weights`).
    """

    elbo: float
    elbo_se: float
    log_evidence: float
    log_evidence_se: float
    psis_khat: float
    ess: float
    ess_fraction: float
    num_samples: int
    entropy: float | None = None
    entropy_se: float | None = None
    entropy_base: float | None = None
    logdet_mean: float | None = None
    entropy_residual: float | None = None
    entropy_residual_se: float | None = None
    data: str = "full data"

    @property
    def kl_estimate(self) -> float:
        """``log_evidence - elbo``: an estimate of KL(q || p) (biased low with the IS log Z)."""
        return self.log_evidence - self.elbo

    def to_dict(self) -> dict[str, float | int | None]:
        """All fields as a plain (JSON-friendly) dict."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        k = self.psis_khat
        verdict = "good" if k < 0.5 else "usable" if k < 0.7 else "unreliable"
        lines = [
            f"DiagnosticReport ({self.num_samples} importance samples; {self.data})",
            f"  ELBO              {self.elbo:.4f} +- {self.elbo_se:.4f}",
            f"  log Z (IS)        {self.log_evidence:.4f} +- {self.log_evidence_se:.4f}",
            f"  KL estimate       {self.kl_estimate:.4f}",
            f"  PSIS k-hat        {k:.3f} ({verdict})",
            f"  ESS               {self.ess:.1f} ({100 * self.ess_fraction:.1f}%)",
        ]
        if self.entropy is not None:
            lines += [
                f"  entropy H[q]      {self.entropy:.4f} +- {self.entropy_se:.4f}",
                f"  = H[base] {self.entropy_base:.4f} + E[log|det J|] {self.logdet_mean:.4f}"
                f"  (residual {self.entropy_residual:.2e} +- {self.entropy_residual_se:.1e})",
            ]
        return "\n".join(lines)


def diagnose(
    model: Callable, guide: Callable, *args: Any, num_samples: int = 4000,
    max_plate_nesting: int | None = None, batch_size: int | None = None, **kwargs: Any,
) -> DiagnosticReport:
    """Run the importance-sampling diagnostics, and the entropy check for flow guides.

    The entropy fields are filled when ``guide.get_posterior(*args, **kwargs)`` exists and
    returns a :class:`~torch.distributions.TransformedDistribution` (``AutoIAFNormal``,
    ``AutoFlowGuide``); otherwise they are ``None``.  A model that subsamples its data is scored
    on all of it (the weights of the full posterior, reproducible; ``report.data`` says so).
    """
    opts = {"max_plate_nesting": max_plate_nesting, "batch_size": batch_size}
    plates = subsampled_plates(model, *args, **kwargs)
    data = "full data" if not plates else "; ".join(
        f"full data: plate {p.name!r} scored on all {p.size} members in "
        f"{-(-p.size // p.subsample_size)} minibatches of {p.subsample_size}" for p in plates)
    log_w, _ = importance_log_weights(model, guide, *args, num_samples=num_samples, **opts,
                                      **kwargs)
    elbo, elbo_se = elbo_estimate(log_w)
    log_z, log_z_se = log_evidence_estimate(log_w)
    ess, ess_fraction = importance_ess(log_w)
    entropy: dict[str, float | None] = {}
    get_posterior = getattr(guide, "get_posterior", None)
    if callable(get_posterior):
        with torch.no_grad():
            posterior = get_posterior(*args, **kwargs)
        if isinstance(posterior, TransformedDistribution):
            out = entropy_decomposition(posterior, num_samples)
            entropy = {field: out[key] for field, key in _ENTROPY_FIELDS.items()}
    return DiagnosticReport(elbo, elbo_se, log_z, log_z_se, psis_khat(log_w), ess, ess_fraction,
                            int(log_w.numel()), **entropy, data=data)


def to_inference_data(
    model: Callable, guide: Callable, *args: Any, num_samples: int = 4000,
    max_plate_nesting: int | None = None, batch_size: int | None = None, **kwargs: Any,
) -> arviz.InferenceData:
    """Guide draws as ``arviz.InferenceData``: one chain of ``num_samples`` draws.

    The ``posterior`` group holds every latent model site (dims ``chain, draw, *site shape``,
    constrained values) and ``sample_stats`` holds ``log_weight``, the importance log weights
    :math:`\\log p(x, z) - \\log q(z)` (use them for PSIS-reweighted summaries).
    """
    import arviz

    opts = {"max_plate_nesting": max_plate_nesting, "batch_size": batch_size}
    log_w, samples = importance_log_weights(
        model, guide, *args, num_samples=num_samples, **opts, **kwargs
    )
    posterior = {name: v.unsqueeze(0).cpu().numpy() for name, v in samples.items()}
    return arviz.from_dict(
        posterior=posterior,
        sample_stats={"log_weight": log_w.unsqueeze(0).cpu().numpy()},
        attrs={"inference_library": "pyro_flowvi (importance-weighted guide draws)"},
    )
