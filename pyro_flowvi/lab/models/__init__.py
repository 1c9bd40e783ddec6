"""The lab's Pyro models: Bayesian models with their data (:mod:`.bayesian`) and the MNIST VAEs
(:mod:`.vae`)."""

from pyro_flowvi.lab.models.bayesian import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    LOGISTIC_DATASETS,
    BayesianModel,
    eight_schools_centered,
    load_logistic_data,
    logistic_regression,
)
from pyro_flowvi.lab.models.vae import (
    ARCHITECTURES,
    BernoulliVAE,
    ConvDecoder,
    ConvEncoder,
    MLPDecoder,
    MLPEncoder,
    build_vae,
)

__all__ = [
    "ARCHITECTURES",
    "EIGHT_SCHOOLS_SIGMA",
    "EIGHT_SCHOOLS_Y",
    "LOGISTIC_DATASETS",
    "BayesianModel",
    "BernoulliVAE",
    "ConvDecoder",
    "ConvEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "build_vae",
    "eight_schools_centered",
    "load_logistic_data",
    "logistic_regression",
]
