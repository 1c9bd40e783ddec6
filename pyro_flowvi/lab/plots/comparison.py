"""Guide-comparison figures: banana draws over the target, ELBO traces, marginals against a
reference, the eight-schools funnel, loss curves.

Every function draws on a standalone Agg ``Figure`` (no ``pyplot`` state), saves a PNG to
``path`` (creating its directory) and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from pyro_flowvi.lab.targets import Banana

__all__ = ["plot_banana_samples", "plot_elbo_traces", "plot_funnel", "plot_loss_curves",
           "plot_marginals"]

COLORS = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8"]


def _save(fig: Figure, path: Path, dpi: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def plot_banana_samples(target: Banana, draws: Mapping[str, Tensor], path: Path, *,
                        title: str) -> Path:
    """One panel per guide: its draws ``(N, 2)`` over the contours of the banana ``target``."""
    a, b, sigma = float(target.a), float(target.b), float(target.sigma)
    half = 3.2 * a
    lo = b * (-a**2) - 3.5 * sigma - 0.5 * abs(b)
    hi = b * (half**2 - a**2) + 3.0 * sigma
    if b < 0:
        lo, hi = b * (half**2 - a**2) - 3.0 * sigma, -b * a**2 + 3.5 * sigma
    xs, ys = np.linspace(-half, half, 240), np.linspace(lo, hi, 240)
    grid = torch.as_tensor(np.stack(np.meshgrid(xs, ys), -1), dtype=torch.float64)
    dens = target.log_prob(grid).exp().numpy()
    n = len(draws)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols, 3.4 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax, (name, z) in zip(axes, draws.items(), strict=False):
        ax.contour(xs, ys, dens, levels=6, colors="0.3", linewidths=0.8)
        zz = z.detach().double().numpy()
        ax.scatter(zz[:, 0], zz[:, 1], s=2, alpha=0.35, color="tab:orange", linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-half, half)
        ax.set_ylim(lo, hi)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return _save(fig, path)


def plot_elbo_traces(traces: Mapping[str, Sequence[np.ndarray]], path: Path,
                     smooth: int = 50) -> Path:
    """Each guide's ELBO per step (mean over seeds, ``smooth``-step running mean), with the
    ``log Z = 0`` line of a normalised target."""
    fig = Figure(figsize=(8, 4.6), layout="constrained")
    ax = fig.subplots()
    lows = []
    for name, runs in traces.items():
        y = np.mean(runs, axis=0)
        if len(y) >= smooth > 1:
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
            x = np.arange(smooth, len(runs[0]) + 1)
        else:
            x = np.arange(1, len(y) + 1)
        ax.plot(x, y, lw=1.1, label=f"{name} (mean of {len(runs)} seed(s))")
        lows.append(float(np.quantile(y[len(y) // 10 :], 0.02)) if len(y) > 10 else float(y.min()))
    ax.axhline(0.0, color="black", ls="--", lw=1, label="log Z = 0")
    if lows:
        ax.set_ylim(max(min(lows) - 0.2, -5.0), 0.15)
    ax.set_xlabel("step")
    ax.set_ylabel(f"ELBO ({smooth}-step running mean)")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_marginals(ref: np.ndarray, draws: Mapping[str, np.ndarray], names: Sequence[str],
                   coords: Sequence[int], path: Path) -> Path:
    """Histograms of the coordinates ``coords``: the reference draws ``(N, D)`` filled, each
    guide's draws as an outline."""
    ncol = min(3, len(coords))
    nrow = math.ceil(len(coords) / ncol)
    fig = Figure(figsize=(4.2 * ncol, 3.2 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, i in zip(axes, coords, strict=False):
        lo, hi = np.quantile(ref[:, i], [0.002, 0.998])
        pad = 0.15 * (hi - lo)
        bins = np.linspace(lo - pad, hi + pad, 50)
        ax.hist(ref[:, i], bins=bins, density=True, color="0.75", label="NUTS")
        for color, (spec, d) in zip(COLORS, draws.items(), strict=False):
            with np.errstate(invalid="ignore", divide="ignore"):  # no draw inside the bins
                ax.hist(d[:, i], bins=bins, density=True, histtype="step", lw=1.4, color=color,
                        label=spec)
        ax.set_title(names[i])
    for ax in axes[len(coords):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def plot_funnel(ref: np.ndarray, draws: Mapping[str, np.ndarray], names: Sequence[str],
                path: Path) -> Path:
    """Eight schools: ``theta[0]`` against ``log tau``, the reference under each guide's draws."""
    it, ith = names.index("tau"), names.index("theta[0]")
    n = len(draws)
    fig = Figure(figsize=(3.6 * n, 3.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, color, (spec, d) in zip(axes, COLORS, draws.items(), strict=False):
        ax.scatter(np.log(ref[:, it]), ref[:, ith], s=2, alpha=0.3, color="0.5", label="NUTS")
        ax.scatter(np.log(d[:2000, it]), d[:2000, ith], s=2, alpha=0.3, color=color, label=spec)
        ax.set_title(spec)
        ax.set_xlabel("log tau")
        ax.legend(fontsize=7, markerscale=4)
    axes[0].set_ylabel("theta[0]")
    axes[0].set_xlim(np.quantile(np.log(ref[:, it]), [0.001, 1.0]) + np.array([-1.0, 0.5]))
    return _save(fig, path)


def plot_loss_curves(losses: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Each guide's ``-ELBO`` per SVI step (running mean over a hundredth of the run)."""
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for color, (spec, loss) in zip(COLORS, losses.items(), strict=False):
        k = max(1, len(loss) // 100)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k, smooth, color=color, label=spec)
    values = np.concatenate([np.asarray(v[len(v) // 5:]) for v in losses.values()])
    if values.size:
        lo, hi = np.quantile(values, [0.0, 0.95])
        ax.set_ylim(lo - 0.05 * (hi - lo + 1), hi + 0.2 * (hi - lo + 1))
    ax.set_xlabel("SVI step")
    ax.set_ylabel("-ELBO (running mean)")
    ax.legend(fontsize=8)
    return _save(fig, path)
