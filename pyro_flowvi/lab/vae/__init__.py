"""The VAE trainer for binarized MNIST: objectives, training loop with DDP, evaluation."""

from pyro_flowvi.lab.models.vae import BernoulliVAE, build_vae
from pyro_flowvi.lab.vae.objectives import ELBOTerms, elbo_terms, log_importance_weights, log_mean_exp

__all__ = [
    "BernoulliVAE",
    "ELBOTerms",
    "build_vae",
    "elbo_terms",
    "log_importance_weights",
    "log_mean_exp",
]
