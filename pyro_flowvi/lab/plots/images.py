"""Image figures: MNIST grids (samples, reconstructions, sample panels) and training curves.

Like :mod:`pyro_flowvi.lab.plots`, every function draws on a standalone Agg ``Figure`` (no
``pyplot`` state), saves a PNG to ``path`` (creating its directory) and returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from pyro_flowvi.lab.plots.flows2d import save_figure

__all__ = ["image_grid", "plot_bits_per_dim_curve", "plot_image_grid", "plot_reconstructions",
           "plot_sample_panels", "plot_vae_curves"]


def image_grid(images: Tensor | np.ndarray, nrow: int, pad: int = 2) -> np.ndarray:
    """Tile ``(N, 784)`` (or ``(N, 28, 28)``) images into one array, ``nrow`` images per row.

    Example:
        >>> image_grid(np.zeros((6, 784)), nrow=3).shape
        (62, 92)
    """
    arr = images.detach().float().cpu().numpy() if isinstance(images, Tensor) else images
    arr = np.asarray(arr, dtype=np.float64).reshape(-1, 28, 28)
    rows = int(np.ceil(len(arr) / nrow))
    out = np.zeros((rows * (28 + pad) + pad, nrow * (28 + pad) + pad))  # white under gray_r
    for i, img in enumerate(arr):
        r, c = divmod(i, nrow)
        out[pad + r * (28 + pad):pad + r * (28 + pad) + 28,
            pad + c * (28 + pad):pad + c * (28 + pad) + 28] = img
    return out


def plot_image_grid(images: Tensor | np.ndarray, path: str | Path, *, nrow: int = 10,
                    title: str | None = None) -> Path:
    """Grey-scale grid of images (pixel probabilities or binary images)."""
    grid = image_grid(images, nrow)
    fig = Figure(figsize=(grid.shape[1] / 45, grid.shape[0] / 45 + (0.4 if title else 0)),
                 layout="constrained")
    ax = fig.subplots()
    ax.imshow(grid, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_reconstructions(x: Tensor, recon: Tensor, path: str | Path, *, nrow: int = 10,
                         title: str | None = None) -> Path:
    """Test images (odd rows) above their reconstructions (even rows)."""
    x, recon = x[: (len(x) // nrow) * nrow], recon[: (len(x) // nrow) * nrow]
    pairs = torch.stack([x.reshape(-1, nrow, 784), recon.reshape(-1, nrow, 784)], 1)
    return plot_image_grid(pairs.reshape(-1, 784), path, nrow=nrow,
                           title=title or "data (odd rows) and reconstructions (even rows)")


def plot_vae_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path,
                    *, references: Mapping[str, float] | None = None,
                    train_label: str = "train ELBO") -> Path:
    """Training (lines) and validation (markers) ELBO per epoch for one or more runs.

    ``train_label`` names the training curve (``"train L_5 bound"`` for an IWAE run, whose
    history's ``train_elbo`` holds the importance-weighted bound).

    Example:
        >>> import tempfile, os
        >>> hist = [{"epoch": 1, "train_elbo": -120.0, "valid_elbo": -110.0},
        ...         {"epoch": 2, "train_elbo": -105.0}]
        >>> plot_vae_curves({"iaf": hist}, os.path.join(tempfile.mkdtemp(), "c.png")).name
        'c.png'
    """
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    lows = []
    for k, (label, hist) in enumerate(histories.items()):
        color = f"C{k}"
        ep = [h["epoch"] for h in hist]
        tr = [h["train_elbo"] for h in hist]
        ax.plot(ep, tr, color=color, lw=1.2, label=f"{label} {train_label}")
        val = [(h["epoch"], h["valid_elbo"]) for h in hist if "valid_elbo" in h]
        if val:
            ax.plot(*zip(*val, strict=True), "o--", color=color, ms=3, lw=0.8,
                    label=f"{label} valid ELBO")
        lows += tr[len(tr) // 10:]
    for k, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color=f"C{k}", ls=":", lw=1, label=label)
    if lows:
        lo, hi = float(np.nanmin(lows)), float(np.nanmax(lows))
        ax.set_ylim(lo - 2.0, hi + 0.1 * (hi - lo) + 2.0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO per image (nats)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_sample_panels(panels: Mapping[str, Tensor], path: str | Path) -> Path:
    """Titled panels side by side, each an 8 x 8 grid of 64 images ``(64, 784)`` in ``[0, 1]``."""
    fig = Figure(figsize=(4 * len(panels), 4.3))
    for k, (title, x) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), k + 1)
        img = x.clamp(0, 1).reshape(8, 8, 28, 28).permute(0, 2, 1, 3).reshape(224, 224)
        ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return Path(path)


def plot_bits_per_dim_curve(losses: Sequence[float], path: str | Path) -> Path:
    """Minibatch training bits/dim per step (the view cut 3 bits above the 5th percentile)."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("train bits/dim (minibatch)")
    ax.set_ylim(top=min(max(losses), np.percentile(losses, 5) + 3))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return Path(path)
