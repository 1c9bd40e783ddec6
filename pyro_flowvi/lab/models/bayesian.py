"""Reusable Bayesian models with their data: centred eight schools and logistic regression.

Each constructor returns a :class:`BayesianModel`: a Pyro ``model`` together with the
``args``/``kwargs`` it is called with, so that NUTS, a guide and the diagnostics all see the same
call: ``model(*bm.args, **bm.kwargs)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

__all__ = [
    "EIGHT_SCHOOLS_SIGMA",
    "EIGHT_SCHOOLS_Y",
    "LOGISTIC_DATASETS",
    "BayesianModel",
    "eight_schools_centered",
    "load_logistic_data",
    "logistic_regression",
]

EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
"""Estimated coaching effects of the eight schools (Rubin 1981)."""
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)
"""Their standard errors."""

LOGISTIC_DATASETS = ("breast_cancer",)
"""Datasets :func:`logistic_regression` can load (all bundled with scikit-learn, no network)."""


@dataclass
class BayesianModel:
    """A Pyro model with the data it conditions on.

    Attributes:
        name: short identifier (used in file names and reports).
        model: the Pyro model; call it as ``model(*args, **kwargs)``.
        args, kwargs: the model's arguments (the data).
        data: the raw data as NumPy arrays, for plotting and reporting.
        description: one line saying what the model is.
    """

    name: str
    model: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    data: dict[str, np.ndarray] = field(default_factory=dict)
    description: str = ""

    def __call__(self) -> Any:
        """Run the model once on its data (e.g. under a tracer)."""
        return self.model(*self.args, **self.kwargs)


# -- eight schools ------------------------------------------------------------------------------


def _eight_schools_model(y: Tensor, sigma: Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools_centered(dtype: torch.dtype | None = None) -> BayesianModel:
    """The eight-schools hierarchical model in its centred parametrisation (a funnel).

    .. math::

        \\mu \\sim \\mathcal N(0, 5^2),\\quad \\tau \\sim \\mathrm{HalfCauchy}(5),\\quad
        \\theta_j \\sim \\mathcal N(\\mu, \\tau^2),\\quad
        y_j \\sim \\mathcal N(\\theta_j, \\sigma_j^2),\\qquad j = 1..8.

    The posterior of :math:`(\\log\\tau, \\theta)` is a funnel: as :math:`\\tau \\to 0` the
    :math:`\\theta_j` are squeezed together, which gives NUTS divergences and any
    Gaussian-based guide a hard time.  Latent sites: ``mu`` (scalar), ``tau`` (scalar,
    positive), ``theta`` (8,).  References: Rubin (1981), J. Educ. Stat. 6(4); Gelman et al.,
    *Bayesian Data Analysis*, 3rd ed., section 5.5.

    Example:
        >>> bm = eight_schools_centered()
        >>> trace = pyro.poutine.trace(bm.model).get_trace(*bm.args, **bm.kwargs)
        >>> tuple(trace.nodes["theta"]["value"].shape)
        (8,)
    """
    dtype = dtype or torch.get_default_dtype()
    y = torch.tensor(EIGHT_SCHOOLS_Y, dtype=dtype)
    sigma = torch.tensor(EIGHT_SCHOOLS_SIGMA, dtype=dtype)
    return BayesianModel(
        name="eight_schools",
        model=_eight_schools_model,
        args=(y, sigma),
        data={"y": np.array(EIGHT_SCHOOLS_Y), "sigma": np.array(EIGHT_SCHOOLS_SIGMA)},
        description="eight schools, centred parametrisation (mu, tau, theta[8]): a funnel",
    )


# -- logistic regression ------------------------------------------------------------------------


def _require_sklearn() -> Any:
    try:
        import sklearn.datasets
    except ImportError as err:  # optional extra
        raise ImportError(
            "logistic_regression needs scikit-learn for its bundled datasets: "
            "pip install scikit-learn  (or pip install 'pyro-flowvi[posterior]')"
        ) from err
    return sklearn.datasets


def load_logistic_data(dataset: str = "breast_cancer") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load a bundled binary-classification dataset with standardised features.

    Returns ``(x, y, feature_names)``: ``x`` of shape ``(N, P)``, each column centred and scaled
    to unit (population) standard deviation; ``y`` of shape ``(N,)`` in ``{0., 1.}``.  The data
    ship with scikit-learn (no download); scikit-learn is an optional dependency.
    """
    if dataset not in LOGISTIC_DATASETS:
        raise ValueError(f"logistic_regression: unknown dataset {dataset!r}; one of "
                         f"{LOGISTIC_DATASETS}")
    datasets = _require_sklearn()
    bunch = datasets.load_breast_cancer()
    x = np.asarray(bunch.data, dtype=np.float64)
    x = (x - x.mean(0)) / x.std(0)
    y = np.asarray(bunch.target, dtype=np.float64)
    return x, y, [str(name) for name in bunch.feature_names]


def _logistic_model(x: Tensor, y: Tensor | None = None, prior_scale: float = 1.0,
                    intercept_scale: float = 5.0) -> None:
    intercept = pyro.sample("intercept", dist.Normal(0.0, intercept_scale))
    weights = pyro.sample(
        "weights", dist.Normal(x.new_zeros(x.shape[-1]), prior_scale).to_event(1)
    )
    # (x * weights).sum(-1) rather than x @ weights: vectorised particles put a batch of shape
    # (..., 1) in front of weights (the 1 lines up with the data plate), which this broadcasts.
    logits = intercept + (x * weights).sum(-1)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Bernoulli(logits=logits), obs=y)


def logistic_regression(
    dataset: str = "breast_cancer", *, prior_scale: float = 1.0, intercept_scale: float = 5.0,
    dtype: torch.dtype | None = None,
) -> BayesianModel:
    """Bayesian logistic regression on a real dataset bundled with scikit-learn.

    .. math::

        \\alpha \\sim \\mathcal N(0, s_0^2),\\quad \\beta_k \\sim \\mathcal N(0, s^2),\\quad
        y_i \\sim \\mathrm{Bernoulli}(\\mathrm{sigmoid}(\\alpha + x_i^\\top\\beta)),

    with standardised features :math:`x_i` (see :func:`load_logistic_data`), ``s =
    prior_scale`` (default 1: on standardised features a unit change of one sd moves the
    log-odds by about one, a weakly informative scale) and a wider intercept prior ``s_0 =
    intercept_scale`` (default 5).  ``"breast_cancer"`` (Wisconsin diagnostic, 569 rows, 30
    features) is nearly linearly separable, so the likelihood alone has no finite maximum: the
    prior is what keeps the posterior proper, and its correlated, skewed shape is a realistic
    test of a guide.  Latent sites: ``intercept`` (scalar), ``weights`` (P,), 31 dimensions in
    all for breast cancer.  Needs scikit-learn (``pip install scikit-learn``).
    """
    x_np, y_np, names = load_logistic_data(dataset)
    dtype = dtype or torch.get_default_dtype()
    x = torch.as_tensor(x_np, dtype=dtype)
    y = torch.as_tensor(y_np, dtype=dtype)
    return BayesianModel(
        name="logistic",
        model=_logistic_model,
        args=(x, y),
        kwargs={"prior_scale": prior_scale, "intercept_scale": intercept_scale},
        data={"x": x_np, "y": y_np, "feature_names": np.array(names)},
        description=f"Bayesian logistic regression on {dataset} ({x_np.shape[0]} rows, "
        f"{x_np.shape[1]} standardised features), N(0, {prior_scale}^2) weights, "
        f"N(0, {intercept_scale}^2) intercept",
    )
