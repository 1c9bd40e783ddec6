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
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyro_flowvi import build_flow
from pyro_flowvi.lab.commands.flowified_mnist import (
    HELP,
    MNISTFlowConfig,
    add_arguments,
    config_from_args,
)
from pyro_flowvi.lab.common import UsageError, torch_threads, versions, write_metrics
from pyro_flowvi.lab.data.mnist import load_mnist_idx
from pyro_flowvi.lab.plots import plot_bits_per_dim_curve, plot_sample_panels
from pyro_flowvi.transforms.flowify import (
    FlowifiedDistribution,
    FlowifiedLayer,
    FlowifiedLinear,
    FlowifiedSequential,
    FlowifiedSpline,
)

__all__ = ["HELP", "MNISTFlowConfig", "add_arguments", "build_model", "config_from_args",
           "format_report", "run", "run_flowified_mnist"]

D = 784
LOG_256 = math.log(256.0)


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
        raise UsageError(f"flowified-mnist: --arch must be 'flowified' or 'realnvp', got {cfg.arch!r}")
    sizes = [D, *cfg.widths]
    if any(b > a for a, b in zip(sizes, sizes[1:], strict=False)):
        raise UsageError(f"flowified-mnist: widths must not increase (exact model), got {sizes}")
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
    files = {"samples": str(plot_sample_panels(grids, out / "samples.png")),
             "training_curve": str(plot_bits_per_dim_curve(losses, out / "training_curve.png"))}
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
        "versions": versions(),
        "config": dataclasses.asdict(cfg),
        "files": files,
    }
    metrics["files"]["metrics"] = str(write_metrics(out / "metrics.json", metrics))
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


def run(args: argparse.Namespace) -> int:
    """CLI entry: run, print the report, return the exit status."""
    print(format_report(run_flowified_mnist(config_from_args(args))))
    return 0
