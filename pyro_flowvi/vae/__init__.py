"""The IAF-VAE on binarized MNIST: models, objectives, trainer, evaluation and plots."""

from pyro_flowvi.vae.models import BernoulliVAE, build_vae
from pyro_flowvi.vae.objectives import ELBOTerms, elbo_terms, log_importance_weights, log_mean_exp

__all__ = [
    "BernoulliVAE",
    "ELBOTerms",
    "build_vae",
    "elbo_terms",
    "log_importance_weights",
    "log_mean_exp",
]
