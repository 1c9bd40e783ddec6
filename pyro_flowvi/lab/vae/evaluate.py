"""Test-set evaluation of a VAE: the ELBO and the importance-sampled NLL, batched; samples.

For every test image the guide draws ``K`` latents (``K = 1000`` by default) in chunks of
``samples_per_pass`` (all in one vectorised pass per chunk, the encoder run once per image), and

.. math::

    \\widehat{\\mathrm{ELBO}}(x) = \\frac1K \\sum_k \\log w_k, \\qquad
    \\widehat{\\mathrm{NLL}}(x) = -\\log \\frac1K \\sum_k w_k, \\qquad
    w_k = \\frac{p(x, z_k)}{q(z_k \\mid x)},

both in nats per image; the ELBO estimate from ``K`` draws has negligible Monte Carlo error and
the NLL is an upper bound on ``-log p(x)`` that tightens as ``K`` grows (Burda et al. 2016).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pyro_flowvi.lab.models.vae import BernoulliVAE
from pyro_flowvi.lab.vae.objectives import log_importance_weights, log_mean_exp

__all__ = ["evaluate_nll", "reconstruct", "sample_images", "summarize"]


@torch.no_grad()
def evaluate_nll(
    vae: BernoulliVAE,
    guide: Any,
    data: Tensor,
    num_samples: int = 1000,
    *,
    batch_size: int = 100,
    samples_per_pass: int = 250,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Per-image ELBO and importance-sampled NLL over ``data`` (binary float ``(N, 784)``).

    Returns CPU float64 tensors ``{"elbo": (N,), "nll": (N,)}``.  Cost: ``N K`` decoder passes
    (``K / samples_per_pass`` vectorised passes per batch of ``batch_size`` images).

    Example:
        >>> from pyro_flowvi import AmortizedFlowGuide
        >>> from pyro_flowvi.lab.vae import build_vae
        >>> vae, enc = build_vae(latent_dim=2, hidden_dims=[8])
        >>> guide = AmortizedFlowGuide(vae.model, enc, arch=None, create_plates=vae.create_plates)
        >>> x = torch.bernoulli(torch.full((4, 784), 0.3))
        >>> out = evaluate_nll(vae, guide, x, num_samples=20, samples_per_pass=10, progress=False)
        >>> bool((out["nll"] <= -out["elbo"]).all())
        True
    """
    if getattr(guide, "prototype_trace", 0) is None:
        guide(data[:1])
    was_training = vae.training, getattr(guide, "training", False)
    vae.eval()
    if hasattr(guide, "eval"):
        guide.eval()
    elbo, nll = [], []
    passes = math.ceil(num_samples / samples_per_pass)
    bar = tqdm(total=math.ceil(len(data) / batch_size) * passes, desc="IS-NLL",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for start in range(0, len(data), batch_size):
        x = data[start:start + batch_size]
        chunks = []
        for k in range(0, num_samples, samples_per_pass):
            chunks.append(log_importance_weights(vae.model, guide, x,
                                                 min(samples_per_pass, num_samples - k)))
            bar.update(1)
        lw = torch.cat(chunks).double()
        elbo.append(lw.mean(0).cpu())
        nll.append(-log_mean_exp(lw, 0).cpu())
    bar.close()
    vae.train(was_training[0])
    if hasattr(guide, "train"):
        guide.train(was_training[1])
    return {"elbo": torch.cat(elbo), "nll": torch.cat(nll)}


def summarize(values: Tensor) -> dict[str, float]:
    """Mean and standard error of per-image values."""
    values = values.double()
    se = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return {"mean": float(values.mean()), "se": se}


@torch.no_grad()
def reconstruct(vae: BernoulliVAE, guide: Any, x: Tensor) -> Tensor:
    """Pixel probabilities of ``p(x | z)`` at one draw ``z ~ q(z | x)``: ``(B, 784)``."""
    z = guide.posterior(x).sample()
    return vae.decode_probs(z)


@torch.no_grad()
def sample_images(vae: BernoulliVAE, num: int, generator: torch.Generator | None = None) -> Tensor:
    """Pixel probabilities of ``p(x | z)`` for ``z ~ p(z)`` (``N(0, I)`` or the flow prior):
    ``(num, 784)``."""
    return vae.decode_probs(vae.sample_prior(num, generator))
