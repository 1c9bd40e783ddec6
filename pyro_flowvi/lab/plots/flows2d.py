"""Diagnostic figures for 2-D flows: samples, density heatmaps, grid deformation, latent QQ, curves.

Every function draws on a standalone :class:`matplotlib.figure.Figure` rendered by the Agg
canvas, so nothing here touches ``pyplot``'s global state or needs a display, and no figure is
left open after saving.  Each takes the output ``path`` (parent directories are created), saves a
PNG there and returns the path.  Callables passed in (log densities, forward maps) receive a
CPU tensor of the default dtype with shape ``(N, 2)`` and may return a tensor or an array; move
the points to the model's device inside the callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

__all__ = [
    "PointFn",
    "chi2_quantile",
    "plot_density",
    "plot_grid_deformation",
    "plot_latent_qq",
    "plot_samples",
    "plot_training_curve",
    "save_figure",
]

PointFn = Callable[[Tensor], "Tensor | NDArray[np.floating]"]
"""A map from points ``(N, 2)`` to values ``(N,)`` (log densities) or ``(N, 2)`` (forward maps)."""


def _numpy(x: Tensor | ArrayLike) -> NDArray[np.float64]:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (parents created, 110 dpi), release it, return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    fig.clear()
    return out


def _scatter(ax: Axes, x: NDArray[np.float64], color: str, title: str | None = None) -> None:
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color=color, linewidths=0)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)


@torch.no_grad()
def _evaluate(fn: PointFn, points: NDArray[np.float64], chunk: int = 16384) -> NDArray[np.float64]:
    pts = torch.as_tensor(points, dtype=torch.get_default_dtype())
    return np.concatenate([_numpy(fn(pts[i : i + chunk])) for i in range(0, len(pts), chunk)])


def chi2_quantile(p: ArrayLike, df: int) -> NDArray[np.float64]:
    """Quantiles of the chi-square distribution with ``df`` degrees of freedom (no scipy).

    For ``df = 2`` the closed form :math:`F^{-1}(p) = -2\\log(1 - p)`; otherwise the root of
    :math:`P(df/2, x/2) = p` (regularized lower incomplete gamma, ``torch.special.gammainc``)
    found by bisection in float64 to machine precision.

    Example:
        >>> chi2_quantile([0.5], 2)
        array([1.38629436])
        >>> chi2_quantile([0.5], 1).round(6)
        array([0.454936])
    """
    q = np.asarray(p, dtype=np.float64)
    if np.any((q < 0) | (q >= 1)):
        raise ValueError("chi2_quantile: probabilities must lie in [0, 1)")
    if int(df) < 1:
        raise ValueError(f"chi2_quantile: df must be a positive integer, got {df}")
    if df == 2:
        return -2.0 * np.log1p(-q)
    target = torch.as_tensor(q, dtype=torch.float64)
    a = torch.tensor(0.5 * df, dtype=torch.float64)
    lo = torch.zeros_like(target)
    hi = torch.full_like(target, float(df) + 10.0 * math.sqrt(2.0 * df) + 50.0)
    while bool((torch.special.gammainc(a, hi / 2) < target).any()):
        hi = hi * 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = torch.special.gammainc(a, mid / 2) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        if bool(((hi - lo) <= 1e-14 * hi.clamp_min(1e-300)).all()):
            break
    return (0.5 * (lo + hi)).numpy()


def plot_samples(
    data: Tensor | ArrayLike,
    samples: Tensor | ArrayLike,
    path: str | Path,
    *,
    titles: tuple[str, str] = ("data", "flow samples"),
    lims: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> Path:
    """Side-by-side scatter of data points and model samples, on shared axes.

    Example:
        >>> import tempfile, os
        >>> path = plot_samples(torch.randn(50, 2), torch.randn(50, 2),
        ...                     os.path.join(tempfile.mkdtemp(), "s.png"))
        >>> path.stat().st_size > 0
        True
    """
    x, y = _numpy(data), _numpy(samples)
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    _scatter(axes[0], x, "tab:blue", f"{titles[0]} (n={len(x)})")
    _scatter(axes[1], y, "tab:orange", f"{titles[1]} (n={len(y)})")
    if lims is not None:
        axes[0].set_xlim(*lims[0])
        axes[0].set_ylim(*lims[1])
    return save_figure(fig, path)


def plot_density(
    log_prob: PointFn | Mapping[str, PointFn],
    path: str | Path,
    *,
    xlim: tuple[float, float] = (-2.0, 3.0),
    ylim: tuple[float, float] = (-1.5, 2.0),
    resolution: int = 200,
    data: Tensor | ArrayLike | None = None,
) -> Path:
    """Heatmap of ``exp(log_prob)`` on a regular grid; several titled panels from a mapping.

    Panels share one colour scale (the largest density over all panels), so a learned density can
    be compared with a reference one by eye.  ``data`` (optional) is overlaid as small dots.

    Example:
        >>> import tempfile, os
        >>> d = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
        >>> path = plot_density(d.log_prob, os.path.join(tempfile.mkdtemp(), "d.png"),
        ...                     resolution=20)
        >>> path.suffix
        '.png'
    """
    panels = dict(log_prob) if isinstance(log_prob, Mapping) else {"learned density": log_prob}
    xs = np.linspace(*xlim, resolution)
    ys = np.linspace(*ylim, resolution)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    shape = (resolution, resolution)
    dens = {k: np.exp(_evaluate(fn, grid)).reshape(shape) for k, fn in panels.items()}
    vmax = max(float(np.nanmax(d)) for d in dens.values())
    pts = None if data is None else _numpy(data)
    fig = Figure(figsize=(5.2 * len(dens) + 0.6, 4.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(dens), sharex=True, sharey=True))
    mesh = None
    for ax, (title, d) in zip(axes, dens.items(), strict=True):
        mesh = ax.pcolormesh(xs, ys, d, shading="auto", cmap="viridis", vmin=0.0, vmax=vmax)
        if pts is not None:
            ax.scatter(pts[:, 0], pts[:, 1], s=0.5, color="white", alpha=0.25, linewidths=0)
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
    fig.colorbar(mesh, ax=list(axes), label="density", shrink=0.9)
    return save_figure(fig, path)


def plot_grid_deformation(
    forward: PointFn,
    path: str | Path,
    *,
    base_lim: float = 3.0,
    num_lines: int = 17,
    points_per_line: int = 300,
    data: Tensor | ArrayLike | None = None,
) -> Path:
    """A regular grid in base space (left) and its image under the forward map (right).

    Horizontal lines ``u_2 = const`` are drawn in blue and vertical lines ``u_1 = const`` in
    orange, each densely sampled so that the bending of the image curves is visible; ``data``
    (optional) is overlaid on the right panel.  Circles of radius 1 and 2 (the base's 1- and
    2-sigma contours) are pushed through as dashed black curves.

    Example:
        >>> import tempfile, os
        >>> path = plot_grid_deformation(lambda u: 2 * u, os.path.join(tempfile.mkdtemp(), "g.png"))
        >>> path.exists()
        True
    """
    levels = np.linspace(-base_lim, base_lim, num_lines)
    s = np.linspace(-base_lim, base_lim, points_per_line)
    horizontal = [np.stack([s, np.full_like(s, c)], -1) for c in levels]
    vertical = [np.stack([np.full_like(s, c), s], -1) for c in levels]
    angle = np.linspace(0.0, 2.0 * math.pi, 4 * points_per_line)
    rings = [r * np.stack([np.cos(angle), np.sin(angle)], -1) for r in (1.0, 2.0)]
    curves = horizontal + vertical + rings
    pushed = _evaluate(forward, np.concatenate(curves)).reshape(-1, 2)
    splits = np.cumsum([len(c) for c in curves])[:-1]
    images = np.split(pushed, splits)
    styles = (
        [dict(color="tab:blue", lw=0.8)] * num_lines
        + [dict(color="tab:orange", lw=0.8)] * num_lines
        + [dict(color="black", lw=1.2, ls="--")] * 2
    )
    fig = Figure(figsize=(10, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for before, after, style in zip(curves, images, styles, strict=True):
        left.plot(before[:, 0], before[:, 1], **style)
        right.plot(after[:, 0], after[:, 1], **style)
    if data is not None:
        pts = _numpy(data)
        right.scatter(pts[:, 0], pts[:, 1], s=3, color="0.35", alpha=0.35, linewidths=0,
                      zorder=0)
    left.set_title("base space: regular grid")
    right.set_title("data space: grid pushed through the flow")
    for ax in (left, right):
        ax.set_aspect("equal")
    return save_figure(fig, path)


def plot_latent_qq(latents: Tensor | ArrayLike, path: str | Path) -> Path:
    """Latent-Gaussianity check: pulled-back data ``u = f^{-1}(x)`` against ``N(0, I_D)``.

    If the model is right, ``||u||^2 ~ chi^2(D)``.  The right panel plots the sorted squared
    norms against the chi-square quantiles at plotting positions ``(i - 1/2) / n``, with the
    diagonal for reference (the view stops at 1.5 times the largest quantile; points beyond are
    counted in a note); the left panel scatters the first two latent coordinates with the
    1- and 2-sigma circles.

    Example:
        >>> import tempfile, os
        >>> path = plot_latent_qq(torch.randn(300, 2), os.path.join(tempfile.mkdtemp(), "q.png"))
        >>> path.stat().st_size > 0
        True
    """
    u = _numpy(latents)
    if u.ndim != 2:
        raise ValueError(f"plot_latent_qq: expected latents of shape (N, D), got {u.shape}")
    n, dim = u.shape
    sq = np.sort((u**2).sum(-1))
    theory = chi2_quantile((np.arange(1, n + 1) - 0.5) / n, dim)
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    _scatter(left, u[:, :2], "tab:blue", f"latents u = f^-1(x) (n={n})")
    angle = np.linspace(0.0, 2.0 * math.pi, 400)
    for r in (1.0, 2.0):
        left.plot(r * np.cos(angle), r * np.sin(angle), color="black", lw=1, ls="--")
    left.set_xlabel("u_1")
    left.set_ylabel("u_2")
    top = 1.5 * float(theory[-1])
    right.plot([0.0, top], [0.0, top], color="black", lw=1, ls="--", label="y = x")
    right.plot(theory, sq, ".", ms=2, color="tab:red", label="sorted ||u||^2")
    right.set_xlim(0.0, 1.05 * float(theory[-1]))
    right.set_ylim(0.0, top)
    beyond = int((sq > top).sum())
    if beyond:
        right.text(0.98, 0.02, f"{beyond} point(s) above {top:.1f} not shown (max {sq[-1]:.1f})",
                   transform=right.transAxes, ha="right", va="bottom", fontsize=8)
    right.set_xlabel(f"chi-square({dim}) quantile")
    right.set_ylabel("||u||^2")
    right.set_title("chi-square QQ plot")
    right.legend(loc="upper left")
    return save_figure(fig, path)


def plot_training_curve(
    losses: Sequence[float] | Tensor | ArrayLike,
    path: str | Path,
    *,
    steps: Sequence[int] | ArrayLike | None = None,
    smooth: int = 50,
    label: str = "minibatch loss",
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
    reference: float | None = None,
    reference_label: str = "reference",
    ylabel: str = "loss",
) -> Path:
    """Loss against step: raw values (faint), a running mean over ``smooth`` steps, extra curves.

    Args:
        losses: one value per step.
        steps: their step numbers (default ``0..len-1``).
        smooth: window of the running mean (``<= 1`` for none).
        curves: further ``label -> (steps, values)`` series, e.g. periodic held-out evaluations.
        reference: a horizontal line (e.g. the true entropy, the best achievable NLL).

    Example:
        >>> import tempfile, os
        >>> path = plot_training_curve(np.linspace(3, 1, 100),
        ...                            os.path.join(tempfile.mkdtemp(), "c.png"), reference=0.9)
        >>> path.name
        'c.png'
    """
    y = _numpy(losses).reshape(-1)
    x = np.arange(len(y)) if steps is None else np.asarray(steps)
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(x, y, color="tab:blue", alpha=0.25 if smooth > 1 else 1.0, lw=0.7, label=label)
    if smooth > 1 and len(y) >= smooth:
        kernel = np.ones(smooth) / smooth
        ax.plot(x[smooth - 1 :], np.convolve(y, kernel, mode="valid"), color="tab:blue",
                label=f"{label} ({smooth}-step mean)")
    for name, (cx, cy) in (curves or {}).items():
        ax.plot(np.asarray(cx), _numpy(cy), "o-", ms=3, label=name)
    if reference is not None:
        ax.axhline(reference, color="black", ls="--", lw=1, label=reference_label)
    finite = y[np.isfinite(y)]
    if finite.size:
        low = min(float(finite.min()), reference if reference is not None else np.inf)
        ax.set_ylim(low - 0.1 * abs(low) - 0.05, float(np.quantile(finite, 0.99)) + 0.1)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend()
    return save_figure(fig, path)
