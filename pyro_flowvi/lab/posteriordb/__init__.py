"""posteriordb development set ported to Pyro, plus two posteriors of our own, with references.

Load a posterior, fit it, and score the fit on the constrained scale against the reference::

    from pyro_flowvi.lab.posteriordb import available_posteriors, load_posterior
    post = load_posterior("kidiq-kidscore_interaction")     # data from ../shared/posteriordb
    post()                                                  # runs the Pyro model
    x = post.flatten(samples)                               # (S, K) in post.reference.names order
    z = abs(x.mean(0) - post.reference.mean) / post.reference.sd

The data folder is found by :func:`resolve_data_dir` (argument, ``$PYRO_FLOWVI_POSTERIORDB``, or
``../shared/posteriordb``).  Our own ``funnel-centered_hierarchical`` (exact reference) and
``glm-hierarchical_poisson`` (NUTS reference) ship with the package.
"""

from .data import Reference, resolve_data_dir
from .posterior import Posterior
from .registry import available_posteriors, load_posterior

__all__ = ["Posterior", "Reference", "available_posteriors", "load_posterior", "resolve_data_dir"]
