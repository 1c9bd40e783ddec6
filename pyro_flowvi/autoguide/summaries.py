"""Posterior summaries of a packed-latent flow guide: diagnostics, quantiles, median."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.distributions import biject_to

from pyro_flowvi.diagnostics import DiagnosticReport, diagnose, to_inference_data

__all__ = ["FlowGuideSummaries"]


class FlowGuideSummaries:
    """Mixin of :class:`~pyro_flowvi.AutoFlowGuide`: Monte Carlo summaries of its posterior
    (it needs the ``AutoContinuous`` layout: ``get_posterior``, ``_unpack_latent``)."""

    # -- diagnostics ------------------------------------------------------------------------------
    def diagnose(self, *args: Any, num_samples: int = 4000, **kwargs: Any) -> DiagnosticReport:
        r"""ELBO ± s.e., IS log-evidence, PSIS k-hat, IS ESS and the entropy decomposition
        :math:`H[q] = H[\text{base}] + \mathbb E[\sum \log|\det J|]`
        (see :func:`pyro_flowvi.diagnostics.diagnose`)."""
        return diagnose(self.model, self, *args, num_samples=num_samples, **kwargs)

    def to_inference_data(self, *args: Any, num_samples: int = 4000, **kwargs: Any) -> Any:
        """Posterior draws and importance log-weights as ``arviz.InferenceData``."""
        return to_inference_data(self.model, self, *args, num_samples=num_samples, **kwargs)

    # -- summaries -------------------------------------------------------------------------------
    @torch.no_grad()
    def _latent_samples(self, num_samples: int, *args: Any, **kwargs: Any) -> Tensor:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return self.get_posterior(*args, **kwargs).sample((num_samples,))

    def quantiles(
        self, quantiles: list[float] | Tensor, *args: Any, num_samples: int = 4000, **kwargs: Any
    ) -> dict[str, Tensor]:
        """Per-coordinate Monte Carlo quantiles of each latent, in the constrained space.

        Quantiles are taken coordinate-wise in the unconstrained space and mapped through
        ``biject_to(support)`` (exact for coordinate-wise monotone bijections).
        """
        z = self._latent_samples(num_samples, *args, **kwargs)
        q = torch.as_tensor(quantiles, dtype=z.dtype, device=z.device)
        latent = torch.quantile(z, q, dim=0)  # (num_quantiles, D)
        # Unpack one quantile at a time: a leading dim on the packed latent would be read as a
        # batch dim and broadcast against the sites' own plate dims.
        parts: dict[str, list[Tensor]] = {}
        for row in latent:
            for site, value in self._unpack_latent(row):
                parts.setdefault(site["name"], []).append(biject_to(site["fn"].support)(value))
        return {name: torch.stack(values) for name, values in parts.items()}

    def median(self, *args: Any, num_samples: int = 4000, **kwargs: Any) -> dict[str, Tensor]:
        """Monte Carlo posterior median of each latent (see :meth:`quantiles`)."""
        return {
            name: value[0]
            for name, value in self.quantiles([0.5], *args, num_samples=num_samples,
                                              **kwargs).items()
        }
