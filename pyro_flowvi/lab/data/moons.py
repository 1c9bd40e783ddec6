"""The 2-moons distribution: a sampler, its exact density (by quadrature) and its entropy.

Generative process (the continuous version of ``sklearn.datasets.make_moons``, with the arc
parameter drawn at random instead of on a grid):

.. math::

    k \\sim \\mathrm{Bernoulli}(1/2), \\qquad t \\sim \\mathcal U(0, \\pi), \\qquad
    X = c_k(t) + \\sigma \\varepsilon, \\quad \\varepsilon \\sim \\mathcal N(0, I_2),

    c_0(t) = (\\cos t, \\sin t) \\ \\text{(upper arc)}, \\qquad
    c_1(t) = (1 - \\cos t, \\tfrac12 - \\sin t) \\ \\text{(lower arc)}.

Its density is a continuous mixture of isotropic Gaussians along the two arcs,

.. math::

    p(x) = \\frac12 \\sum_{k=0}^{1} \\frac1\\pi \\int_0^\\pi
    \\mathcal N\\big(x;\\, c_k(t),\\, \\sigma^2 I_2\\big)\\, dt,

which has no closed form; :func:`moons_log_density` evaluates it with Gauss-Legendre quadrature
over ``t`` in log space (``logsumexp`` over the nodes of both arcs), in float64.  The integrand
is analytic in ``t``, a bump of angular width about ``sigma / sqrt(r)`` (``r``: the distance
from ``x`` to the arc's circle centre), so the rule converges exponentially once the node
spacing resolves that width.  The default node count
``max(64, ceil(16 / sigma))`` (160 nodes per arc at ``sigma = 0.1``) is converged to about
``1e-11`` nats on the data and ``1e-10`` on a grid reaching 2 units beyond it.

:func:`moons_entropy` turns the density into the differential entropy
:math:`H = -\\mathbb E_p[\\log p(X)]`, the lower bound of any model's expected negative
log-likelihood: ``test NLL - H = KL(p || model)``.  At ``sigma = 0.1``, ``H = 1.00758`` nats
(fine-grid integration of ``-p log p``).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DEFAULT_NOISE",
    "default_num_nodes",
    "make_moons",
    "moons_entropy",
    "moons_log_density",
]

DEFAULT_NOISE = 0.1
"""Default noise standard deviation (the customary ``make_moons(noise=0.1)``)."""


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _arcs(t: NDArray[np.float64]) -> NDArray[np.float64]:
    """Arc centres ``c_k(t)`` with shape ``(2, len(t), 2)`` (arc, node, coordinate)."""
    cos, sin = np.cos(t), np.sin(t)
    upper = np.stack([cos, sin], axis=-1)
    lower = np.stack([1.0 - cos, 0.5 - sin], axis=-1)
    return np.stack([upper, lower])


def make_moons(
    n: int,
    noise: float = DEFAULT_NOISE,
    rng: np.random.Generator | int | None = None,
    *,
    return_labels: bool = False,
) -> NDArray[np.float64] | tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Draw ``n`` points from the 2-moons process (numpy only, float64).

    Each point picks an arc ``k`` with probability 1/2 (independently, so the arc sizes are
    binomial), an arc parameter ``t ~ Uniform(0, pi)``, and adds isotropic Gaussian noise of
    standard deviation ``noise`` to the arc point ``c_k(t)``: upper arc ``(cos t, sin t)``, lower
    arc ``(1 - cos t, 0.5 - sin t)`` (see the module docstring).

    Args:
        n: number of points.
        noise: noise standard deviation ``sigma >= 0`` (default 0.1).
        rng: a numpy ``Generator`` or a seed.
        return_labels: also return the arc index ``k`` of each point (0 = upper, 1 = lower).

    Returns:
        ``(n, 2)`` array, or ``(x, labels)`` when ``return_labels``.

    Example:
        >>> x = make_moons(500, rng=0)
        >>> x.shape, x.dtype
        ((500, 2), dtype('float64'))
    """
    if int(n) < 0:
        raise ValueError(f"make_moons: n must be non-negative, got {n}")
    if noise < 0:
        raise ValueError(f"make_moons: noise must be non-negative, got {noise}")
    gen = _as_rng(rng)
    labels = gen.integers(0, 2, size=int(n))
    t = gen.uniform(0.0, math.pi, size=int(n))
    centres = _arcs(t)[labels, np.arange(int(n))]
    x = centres + noise * gen.standard_normal((int(n), 2))
    return (x, labels.astype(np.int64)) if return_labels else x


def default_num_nodes(noise: float) -> int:
    """Gauss-Legendre nodes per arc used by default: ``max(64, ceil(16 / noise))``."""
    return max(64, math.ceil(16.0 / noise))


def moons_log_density(
    x: ArrayLike,
    noise: float = DEFAULT_NOISE,
    *,
    num_nodes: int | None = None,
    chunk_size: int = 8192,
) -> NDArray[np.float64]:
    """Exact ``log p(x)`` of the 2-moons process, by Gauss-Legendre quadrature over ``t``.

    .. math::

        \\log p(x) \\approx -\\log 2 + \\operatorname{logsumexp}_{k, j}
        \\Big[\\log\\tfrac{w_j}{2} - \\log(2\\pi\\sigma^2)
        - \\frac{\\lVert x - c_k(t_j)\\rVert^2}{2\\sigma^2}\\Big],

    with ``(t_j, w_j)`` the Legendre nodes and weights mapped from ``[-1, 1]`` to ``[0, pi]``
    (so ``(1/pi) sum_j (pi/2) w_j = 1``).

    Args:
        x: points, shape ``(..., 2)``.
        noise: noise standard deviation ``sigma > 0``.
        num_nodes: nodes per arc (default :func:`default_num_nodes`).
        chunk_size: points evaluated at once (bounds memory at ``chunk * 2 * nodes`` floats).

    Returns:
        float64 array of shape ``x.shape[:-1]``.

    Example:
        >>> lp = moons_log_density(make_moons(4, rng=0))
        >>> lp.shape
        (4,)
    """
    if noise <= 0:
        raise ValueError(f"moons_log_density: noise must be positive, got {noise}")
    pts = np.asarray(x, dtype=np.float64)
    if pts.ndim < 1 or pts.shape[-1] != 2:
        raise ValueError(f"moons_log_density: expected shape (..., 2), got {pts.shape}")
    nodes = default_num_nodes(noise) if num_nodes is None else int(num_nodes)
    u, w = np.polynomial.legendre.leggauss(nodes)
    centres = _arcs(0.5 * math.pi * (u + 1.0)).reshape(-1, 2)  # (2 * nodes, 2)
    log_w = np.tile(np.log(0.5 * w), 2) - math.log(2.0 * math.pi * noise**2) - math.log(2.0)
    flat = pts.reshape(-1, 2)
    out = np.empty(flat.shape[0])
    for start in range(0, flat.shape[0], chunk_size):
        block = flat[start : start + chunk_size]
        sq = ((block[:, None, :] - centres[None]) ** 2).sum(-1)  # (chunk, 2 * nodes)
        logits = log_w - sq / (2.0 * noise**2)
        top = logits.max(axis=1, keepdims=True)
        out[start : start + chunk_size] = (
            top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        )
    return out.reshape(pts.shape[:-1])


def moons_entropy(
    noise: float = DEFAULT_NOISE,
    num_samples: int = 100_000,
    rng: np.random.Generator | int | None = None,
    *,
    num_nodes: int | None = None,
) -> tuple[float, float]:
    """Differential entropy ``H = -E[log p(X)]`` (nats) by Monte Carlo, with its standard error.

    .. math::

        \\hat H = -\\frac1n \\sum_{i=1}^n \\log p(X_i), \\quad X_i \\sim p, \\qquad
        \\mathrm{se}(\\hat H) = \\frac{\\mathrm{sd}(\\log p(X_i))}{\\sqrt n}.

    ``log p`` is the quadrature of :func:`moons_log_density`, so the only error is Monte Carlo
    error (about 0.0024 nats at the default ``n`` and ``sigma = 0.1``).

    Returns:
        ``(estimate, standard_error)``.

    Example:
        >>> h, se = moons_entropy(0.1, num_samples=2000, rng=0)
        >>> 0.5 < h < 1.2 and 0 < se < 0.05
        True
    """
    if int(num_samples) < 2:
        raise ValueError(f"moons_entropy: need at least 2 samples, got {num_samples}")
    x = make_moons(int(num_samples), noise, rng)
    log_p = moons_log_density(x, noise, num_nodes=num_nodes)
    return float(-log_p.mean()), float(log_p.std(ddof=1) / math.sqrt(len(log_p)))
