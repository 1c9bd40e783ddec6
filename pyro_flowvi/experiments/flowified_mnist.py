"""Flowified MLP density model on MNIST: dequantised test bits/dim from a short CPU run, and samples.

The model is a flowified MLP ``784 -> 256 -> 64 -> 16 -> 8`` (shared-spline activations; the first
two rotations Householder, the rest ``matrix_exp``) on a standard-normal base: every layer
decreases dimension, so the log-likelihood is exact (the dropped coordinates of each layer get a
learned Gaussian conditional).  Pixels are dequantised, :math:`x = (k + v)/256`,
:math:`v \\sim \\mathcal U(0, 1)^D`, and

.. math::

    \\text{bits/dim} = -\\frac{\\log p(x) - D \\log 256}{D \\ln 2}

(the discrete log-likelihood bound of the dequantised density; the same single-draw estimate for
training and test, as in the paper's code).  ``--arch realnvp`` fits a RealNVP of about the same
parameter count (4 affine couplings, one hidden layer of 224) for the benchmark.  Writes
``metrics.json``, ``samples.png`` and ``training_curve.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyro_flowvi import build_flow
from pyro_flowvi.data.mnist import load_mnist_idx
from pyro_flowvi.experiments.common import (
    add_runtime_arguments,
    config_values,
    report_run,
    torch_threads,
)
from pyro_flowvi.transforms.flowify import (
    FlowifiedDistribution,
    FlowifiedLayer,
    FlowifiedLinear,
    FlowifiedSequential,
    FlowifiedSpline,
)

__all__ = ["HELP", "MNISTFlowConfig", "add_arguments", "build_model", "run", "run_flowified_mnist"]

HELP = "fit a flowified MLP (or RealNVP) to dequantised MNIST; report test bits/dim, samples"
D = 784
LOG_256 = math.log(256.0)


@dataclass
class MNISTFlowConfig:
    """Settings (CLI flags have the same names with dashes).  ``widths`` are the flowified layer
    output sizes; ``num_train = 0`` uses all 60,000 training images."""

    arch: str = "flowified"
    widths: tuple[int, ...] = (256, 64, 16, 8)
    realnvp_layers: int = 4
    realnvp_hidden: int = 224
    epochs: float = 2.0
    batch_size: int = 128
    lr: float = 1e-3
    num_train: int = 0
    seed: int = 0
    out: str = "outputs/flowified_mnist"
    data_dir: str | None = None
    progress: bool = True
    num_threads: int | None = 1


class _RealNVPDensity(nn.Module):
    """``log p(x)`` of a registry RealNVP through its inverse (the comparison model)."""

    def __init__(self, layers: int, hidden: int) -> None:
        super().__init__()
        self.flow = build_flow("realnvp", D, num_layers=layers, hidden_dims=[hidden])

    def log_prob(self, x: Tensor) -> Tensor:
        u, ladj = self.flow.inverse_and_ladj(x)
        return -0.5 * (u.square().sum(-1) + D * math.log(2 * math.pi)) - ladj

    def sample(self, n: int) -> Tensor:
        return self.flow(torch.randn(n, D))


def build_model(cfg: MNISTFlowConfig) -> nn.Module | FlowifiedDistribution:
    """The flowified MLP as a :class:`FlowifiedDistribution`, or the RealNVP comparison model."""
    if cfg.arch == "realnvp":
        return _RealNVPDensity(cfg.realnvp_layers, cfg.realnvp_hidden)
    if cfg.arch != "flowified":
        raise ValueError(f"flowified-mnist: --arch must be 'flowified' or 'realnvp', got {cfg.arch!r}")
    sizes = [D, *cfg.widths]
    if any(b > a for a, b in zip(sizes, sizes[1:], strict=False)):
        raise ValueError(f"flowified-mnist: widths must not increase (exact model), got {sizes}")
    layers: list[FlowifiedLayer] = []
    for k, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        if k:
            layers.append(FlowifiedSpline())
        layers.append(FlowifiedLinear(a, b, rotation="householder" if a > 100 else "exp"))
    base = dist.Normal(torch.zeros(sizes[-1]), 1.0).to_event(1)
    return FlowifiedDistribution(base, FlowifiedSequential(*layers))


def _parameters(model: Any) -> list[nn.Parameter]:
    module = model.net if isinstance(model, FlowifiedDistribution) else model
    return list(module.parameters())


def _dequantise(pixels: Tensor, gen: torch.Generator | None = None) -> Tensor:
    return (pixels + torch.rand(pixels.shape, generator=gen)) / 256.0


def _bits_per_dim(log_p: Tensor) -> Tensor:
    return -(log_p - D * LOG_256) / (D * math.log(2.0))


@torch.no_grad()
def _test_bpd(model: Any, pixels: Tensor, chunk: int = 1000) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(1234)
    bpd = torch.cat([_bits_per_dim(model.log_prob(_dequantise(pixels[i: i + chunk], gen)))
                     for i in range(0, len(pixels), chunk)])
    return float(bpd.mean()), float(bpd.std() / math.sqrt(len(bpd)))


@torch.no_grad()
def _samples(model: Any, n: int = 64) -> tuple[Tensor, Tensor | None]:
    if isinstance(model, FlowifiedDistribution):
        return model.sample((n,)), model.sample_mean((n,))
    return model.sample(n), None


def _plot_samples(grids: dict[str, Tensor], path: Path) -> Path:
    fig = Figure(figsize=(4 * len(grids), 4.3))
    for k, (title, x) in enumerate(grids.items()):
        ax = fig.add_subplot(1, len(grids), k + 1)
        img = x.clamp(0, 1).reshape(8, 8, 28, 28).permute(0, 2, 1, 3).reshape(224, 224)
        ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _plot_curve(losses: list[float], path: Path) -> Path:
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("train bits/dim (minibatch)")
    ax.set_ylim(top=min(max(losses), np.percentile(losses, 5) + 3))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def run_flowified_mnist(config: MNISTFlowConfig | None = None) -> dict[str, Any]:
    """Train, evaluate test bits/dim, write ``metrics.json`` and the figures; return the metrics."""
    cfg = config or MNISTFlowConfig()
    with torch_threads(cfg.num_threads):
        return _run(cfg)


def _run(cfg: MNISTFlowConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    train_np, _ = load_mnist_idx("train", cfg.data_dir, labels=False)
    test_np, _ = load_mnist_idx("test", cfg.data_dir, labels=False)
    train = torch.tensor(train_np.reshape(-1, D), dtype=torch.float32)
    test = torch.tensor(test_np.reshape(-1, D), dtype=torch.float32)
    if cfg.num_train:
        train = train[: cfg.num_train]
    model = build_model(cfg)
    params = _parameters(model)
    steps = max(1, int(cfg.epochs * len(train) / cfg.batch_size))
    optim = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=steps)
    losses: list[float] = []
    bar = tqdm(range(steps), desc=f"mnist {cfg.arch}", disable=not cfg.progress, file=sys.stderr)
    for _ in bar:
        batch = _dequantise(train[torch.randint(len(train), (cfg.batch_size,))])
        loss = _bits_per_dim(model.log_prob(batch)).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise RuntimeError(f"flowified-mnist: loss became {losses[-1]}; lower --lr")
        bar.set_postfix(bpd=f"{np.mean(losses[-50:]):.3f}", refresh=False)
    bar.close()
    train_seconds = time.perf_counter() - t0
    bpd, se = _test_bpd(model, test)
    samples, means = _samples(model)
    grids = {"samples": samples}
    if means is not None:
        grids["samples, dropped coordinates at their means"] = means
    files = {"samples": str(_plot_samples(grids, out / "samples.png")),
             "training_curve": str(_plot_curve(losses, out / "training_curve.png"))}
    metrics: dict[str, Any] = {
        "arch": cfg.arch,
        "test_bits_per_dim": {"mean": bpd, "se": se},
        "final_train_bits_per_dim": float(np.mean(losses[-50:])),
        "exact_likelihood": cfg.arch == "realnvp" or model.net.is_exact,  # type: ignore[union-attr]
        "num_params": sum(p.numel() for p in params),
        "steps": steps,
        "epochs": cfg.epochs,
        "train_seconds": train_seconds,
        "runtime_seconds": time.perf_counter() - t0,
        "num_threads": torch.get_num_threads(),
        "config": dataclasses.asdict(cfg),
        "files": files,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    metrics["files"]["metrics"] = str(out / "metrics.json")
    return metrics


def format_report(metrics: dict[str, Any]) -> str:
    """A short summary of :func:`run_flowified_mnist`'s metrics."""
    t = metrics["test_bits_per_dim"]
    return "\n".join([
        f"MNIST ({metrics['arch']}, {metrics['num_params']} params, {metrics['epochs']} epochs = "
        f"{metrics['steps']} steps, {metrics['train_seconds']:.0f} s)",
        f"  test bits/dim (dequantised)  {t['mean']:.4f} +- {t['se']:.4f}",
        f"  final train bits/dim         {metrics['final_train_bits_per_dim']:.4f}",
        *(f"  {path}" for path in metrics["files"].values()),
    ])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``flowified-mnist`` options (defaults from :class:`MNISTFlowConfig`)."""
    d = MNISTFlowConfig()
    a = parser.add_argument
    a("--arch", choices=("flowified", "realnvp"), default=d.arch, help="model (default %(default)s)")
    a("--widths", type=lambda s: tuple(int(v) for v in s.split(",")), default=d.widths,
      help="flowified layer widths, comma separated, non-increasing (default 256,64,16,8)")
    a("--realnvp-layers", type=int, default=d.realnvp_layers, help="RealNVP couplings")
    a("--realnvp-hidden", type=int, default=d.realnvp_hidden, help="RealNVP hidden width")
    a("--epochs", type=float, default=d.epochs, help="training epochs (default %(default)s)")
    a("--batch-size", type=int, default=d.batch_size, help="minibatch (default %(default)s)")
    a("--lr", type=float, default=d.lr, help="Adam learning rate, cosine decay (default %(default)s)")
    a("--num-train", type=int, default=d.num_train, help="training images, 0 = all 60,000")
    a("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    a("--out", default=d.out, help="output directory (default %(default)s)")
    a("--data-dir", default=d.data_dir, help="data directory holding mnist/ (default: auto)")
    add_runtime_arguments(parser, d.num_threads)


def run(args: argparse.Namespace) -> int:
    """CLI entry: run, print the report, return the exit status."""
    config = MNISTFlowConfig(**config_values(MNISTFlowConfig, args))
    return report_run(config, run_flowified_mnist, format_report)
