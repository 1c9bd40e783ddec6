"""The IAF-VAE on binarized MNIST: train a Bernoulli VAE with an amortized flow guide, report nats.

``pyro-flowvi vae --flow iaf`` trains the MLP (or ``--architecture conv``) VAE of
:mod:`pyro_flowvi.vae.models` with :class:`~pyro_flowvi.AmortizedFlowGuide` (``--flow gaussian``
for the plain encoder), evaluates the test ELBO and the importance-sampled test NLL (``K = 1000``
draws per image by default) and writes ``metrics.json``, ``samples.png``,
``reconstructions.png``, ``training_curve.png`` and ``checkpoint.pt`` to ``--out``.  Datasets:
``binarized-mnist`` (the static binarization of Larochelle and Murray 2011: 50k / 10k / 10k) and
``mnist`` (the IDX files, 50k train / 10k valid split of the 60k, binarized dynamically during
training; the test set is binarized once with a fixed seed).  Run it under ``torchrun`` for
data-parallel training (see :mod:`pyro_flowvi.vae.train`).  ``--prior-flow maf`` learns a flow
prior ``p(z)`` with the decoder (84.64 nats test NLL with the 4-layer IAF guide, ``--train-particles
5 --warmup-epochs 0 --ema 0.999 --prior-layers 4 --prior-hidden 128 128``, 54 minutes on one CPU
thread; see ``BENCHMARKS.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
import torch.distributed as tdist
from torch import Tensor, nn

import pyro_flowvi
from pyro_flowvi.autoguide.amortized import AmortizedFlowGuide
from pyro_flowvi.data.mnist import load_binarized_mnist, load_mnist_idx
from pyro_flowvi.experiments.common import (
    add_runtime_arguments,
    config_values,
    key_value_option,
    report_run,
    torch_threads,
)
from pyro_flowvi.flows import arch_spec
from pyro_flowvi.vae.averaging import ParameterEMA
from pyro_flowvi.vae.evaluate import evaluate_nll, reconstruct, sample_images, summarize
from pyro_flowvi.vae.models import ARCHITECTURES, build_vae
from pyro_flowvi.vae.plots import plot_image_grid, plot_reconstructions, plot_vae_curves
from pyro_flowvi.vae.train import ELBOModule, distributed_context, fit, load_checkpoint

__all__ = [
    "DATASETS",
    "HELP",
    "VAEConfig",
    "add_arguments",
    "build_run",
    "config_from_args",
    "format_report",
    "load_dataset",
    "run",
    "run_vae",
]

HELP = "train a VAE with an amortized flow guide on binarized MNIST; report test ELBO and IS-NLL"
DATASETS = ("binarized-mnist", "mnist")
TEST_BINARIZATION_SEED = 123


@dataclass
class VAEConfig:
    """Settings of a VAE run (the CLI flags have the same names, with dashes)."""

    flow: str = "iaf"
    num_flows: int = 4
    context_dim: int = 128
    flow_hidden: list[int] | None = field(default_factory=lambda: [128, 128])
    flow_options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "binarized-mnist"
    data_dir: str | None = None
    architecture: str = "mlp"
    latent_dim: int = 32
    hidden: list[int] = field(default_factory=lambda: [512, 256])
    prior_flow: str | None = None
    prior_layers: int = 2
    prior_hidden: list[int] | None = None
    epochs: int = 50
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_epochs: float = 5.0
    ema: float = 0.0
    train_particles: int = 1
    dropout: float = 0.0
    train_on_valid: bool = False
    seed: int = 0
    device: str = "auto"
    out: str = "outputs/vae"
    num_is_samples: int = 1000
    eval_batch_size: int = 100
    samples_per_pass: int = 250
    eval_every: int = 5
    keep_best: bool = True
    checkpoint_every: int = 1
    resume: bool = False
    max_minutes: float | None = None
    train_subset: int = 0
    test_subset: int = 0
    num_threads: int | None = 1
    progress: bool = True


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("vae: --device cuda was asked for but CUDA is not available")
    return device


def load_dataset(name: str, data_dir: str | None, device: torch.device
                 ) -> tuple[Tensor, Tensor, Tensor, bool]:
    """``(train, valid, test, binarize_train)`` as float ``(N, 784)`` tensors on ``device``.

    ``binarized-mnist``: 0/1 values.  ``mnist``: train/valid hold grey levels in ``[0, 1]``
    (binarized dynamically: ``binarize_train`` is ``True``), test is binarized once (seeded).
    """
    if name == "binarized-mnist":
        parts = [torch.as_tensor(load_binarized_mnist(s, data_dir)) for s in ("train", "valid",
                                                                              "test")]
        train, valid, test = (p.to(device=device, dtype=torch.float32) for p in parts)
        return train, valid, test, False
    if name == "mnist":
        images, _ = load_mnist_idx("train", data_dir, labels=False)
        test_images, _ = load_mnist_idx("test", data_dir, labels=False)
        grey = torch.as_tensor(images.reshape(len(images), -1)).float() / 255.0
        gen = torch.Generator().manual_seed(TEST_BINARIZATION_SEED)
        test = torch.bernoulli(torch.as_tensor(test_images.reshape(len(test_images), -1))
                               .float() / 255.0, generator=gen)
        valid = torch.bernoulli(grey[50_000:], generator=gen)
        return grey[:50_000].to(device), valid.to(device), test.to(device), True
    raise ValueError(f"vae: unknown dataset {name!r}; choose one of {DATASETS}")


def build_run(cfg: VAEConfig, device: torch.device, example: Tensor
              ) -> tuple[ELBOModule, AmortizedFlowGuide]:
    """The seeded VAE and guide for ``cfg`` (set up on ``example``), as an :class:`ELBOModule`."""
    gaussian = arch_spec(cfg.flow).num_layers == 0 or cfg.num_flows == 0  # checks the name
    torch.manual_seed(cfg.seed)
    vae, encoder = build_vae(cfg.architecture, cfg.latent_dim,
                             0 if gaussian else cfg.context_dim, cfg.hidden, dropout=cfg.dropout,
                             prior_flow=cfg.prior_flow, prior_layers=cfg.prior_layers,
                             prior_hidden=cfg.prior_hidden)
    vae, encoder = vae.to(device), encoder.to(device)
    guide = AmortizedFlowGuide(
        vae.model, encoder, arch=None if gaussian else cfg.flow,
        num_layers=None if gaussian else cfg.num_flows,
        context_dim=None if gaussian else cfg.context_dim, hidden_dims=cfg.flow_hidden,
        create_plates=vae.create_plates, **cfg.flow_options)
    with torch.no_grad():
        guide(example)
    return ELBOModule(vae, guide, num_particles=cfg.train_particles), guide


def _optimizer(cfg: VAEConfig, params: Any) -> tuple[torch.optim.Optimizer, Any]:
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    if cfg.lr_schedule == "cosine":
        # decays to lr / 10 at the last epoch
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(cfg.epochs, 1),
                                                           eta_min=cfg.lr / 10)
    elif cfg.lr_schedule == "constant":
        sched = None
    else:
        raise ValueError(f"vae: unknown lr_schedule {cfg.lr_schedule!r}: 'cosine' or 'constant'")
    return optimizer, sched


def _versions() -> dict[str, str]:
    return {"pyro_flowvi": pyro_flowvi.__version__, "torch": torch.__version__,
            "pyro": pyro.__version__, "python": sys.version.split()[0]}


def run_vae(config: VAEConfig | None = None) -> dict[str, Any]:
    """Train, evaluate, plot; write ``metrics.json`` (rank 0) and return the metrics."""
    cfg = config or VAEConfig()
    device = _resolve_device(cfg.device)
    if cfg.architecture not in ARCHITECTURES:
        raise ValueError(f"vae: architecture must be one of {ARCHITECTURES}")
    with torch_threads(cfg.num_threads if device.type == "cpu" else None):
        rank, world, device = distributed_context(device)
        try:
            return _run(cfg, device, rank, world)
        finally:
            if world > 1 and tdist.is_initialized():
                tdist.destroy_process_group()


def _run(cfg: VAEConfig, device: torch.device, rank: int, world: int) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    pyro.clear_param_store()
    train, valid, test, binarize = load_dataset(cfg.dataset, cfg.data_dir, device)
    # subsets are seeded random rows: the .amat files are not in random order (the test set's
    # rows 1000-2000, for instance, are far easier than average)
    pick = torch.Generator().manual_seed(cfg.seed + 1)
    if cfg.train_subset:
        train = train[torch.randperm(len(train), generator=pick)[: cfg.train_subset].to(device)]
        valid = valid[torch.randperm(len(valid), generator=pick)[: max(cfg.train_subset // 5, 1)]
                      .to(device)]
    if cfg.test_subset:
        test = test[torch.randperm(len(test), generator=pick)[: cfg.test_subset].to(device)]
    shown = test[torch.randperm(len(test), generator=pick)[:50].to(device)]
    module, guide = build_run(cfg, device, valid[:2])
    if cfg.train_on_valid:
        # the final-model protocol: fit on train + valid, evaluate the last (averaged) weights
        # (mnist: the valid rows are binarized once, and stay so under dynamic binarization)
        train, valid = torch.cat([train, valid]), None
    module.vae.init_output_bias(train.mean(0))
    num_params = sum(p.numel() for p in module.parameters())
    optimizer, sched = _optimizer(cfg, module.parameters())
    ema = ParameterEMA(module, cfg.ema) if cfg.ema > 0 else None
    checkpoint = out / "checkpoint.pt"
    state = None
    if cfg.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, module, optimizer, sched, ema)
    wrapped: nn.Module = module
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
    state = fit(
        wrapped, optimizer, train, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
        valid=valid, binarize=binarize, warmup_epochs=cfg.warmup_epochs, scheduler=sched,
        rank=rank, world_size=world, eval_every=cfg.eval_every, checkpoint=checkpoint,
        checkpoint_every=cfg.checkpoint_every, state=state,
        max_seconds=None if cfg.max_minutes is None else 60.0 * cfg.max_minutes,
        progress=cfg.progress, extra={"config": dataclasses.asdict(cfg)}, ema=ema)
    if rank != 0:
        return {}
    final_epoch = state.epoch
    if cfg.keep_best and state.best_state is not None:  # never set with --train-on-valid
        module.load_state_dict(state.best_state)  # averaged weights when --ema
    elif ema is not None:
        ema.copy_to_module()
    t_eval = time.perf_counter()
    result = evaluate_nll(module.vae, guide, test, cfg.num_is_samples,
                          batch_size=cfg.eval_batch_size, samples_per_pass=cfg.samples_per_pass,
                          progress=cfg.progress)
    eval_seconds = time.perf_counter() - t_eval
    epoch_seconds = [h["seconds"] for h in state.history]
    metrics: dict[str, Any] = {
        "flow": cfg.flow,
        "test_elbo": summarize(result["elbo"]),
        "test_nll": summarize(result["nll"]),
        "num_is_samples": cfg.num_is_samples,
        "num_test": len(test),
        "num_train": len(train),
        "epochs": final_epoch,
        "evaluated_epoch": state.best_epoch if cfg.keep_best and state.best_state else final_epoch,
        "best_valid_elbo": state.best_valid if state.best_state else None,
        "seconds_per_epoch": float(np.median(epoch_seconds)) if epoch_seconds else None,
        "epochs_per_second": (1.0 / float(np.median(epoch_seconds))) if epoch_seconds else None,
        "train_seconds": state.train_seconds,
        "eval_seconds": eval_seconds,
        "num_params": num_params,
        "device": str(device),
        "world_size": world,
        "num_threads": torch.get_num_threads(),
        "history": state.history,
        "versions": _versions(),
        "config": dataclasses.asdict(cfg),
    }
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    files = {
        "samples": plot_image_grid(
            sample_images(module.vae, 100, gen), out / "samples.png",
            title=f"samples ({cfg.flow} guide): p(x | z), z ~ "
            + (f"{cfg.prior_flow} flow prior" if cfg.prior_flow else "N(0, I)")),
        "reconstructions": plot_reconstructions(shown, reconstruct(module.vae, guide, shown),
                                                out / "reconstructions.png"),
        "training_curve": plot_vae_curves(
            {cfg.flow: state.history}, out / "training_curve.png",
            references={"test ELBO": metrics["test_elbo"]["mean"]},
            train_label="train ELBO" if cfg.train_particles == 1
            else f"train L_{cfg.train_particles} bound"),
        "checkpoint": checkpoint,
    }
    metrics["runtime_seconds"] = time.perf_counter() - t_start
    metrics["files"] = {k: str(v) for k, v in files.items()}
    path = out / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    metrics["files"]["metrics"] = str(path)
    return metrics


def format_report(metrics: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`run_vae`'s metrics."""
    if not metrics:
        return "(non-zero rank: rank 0 reports)"
    cfg = metrics["config"]

    def fmt(entry: dict[str, float]) -> str:
        return f"{entry['mean']:.2f} +- {entry['se']:.2f}"

    lines = [
        f"VAE on {cfg['dataset']}: {cfg['architecture']} {cfg['hidden']}, latent "
        f"{cfg['latent_dim']}, guide {cfg['flow']}"
        + ("" if cfg["flow"].lower() == "gaussian" else f" x{cfg['num_flows']}")
        + (f", prior {cfg['prior_flow']} x{cfg['prior_layers']}" if cfg.get("prior_flow") else "")
        + f" ({metrics['num_params']} params), {metrics['epochs']} epochs on "
        f"{metrics['device']} (x{metrics['world_size']}), {metrics['seconds_per_epoch']:.1f} "
        f"s/epoch, evaluated at epoch {metrics['evaluated_epoch']}",
        f"  test ELBO          {fmt(metrics['test_elbo'])} nats",
        f"  test NLL (IS, K={metrics['num_is_samples']})  {fmt(metrics['test_nll'])} nats "
        f"({metrics['eval_seconds']:.0f} s)",
        "  files:",
        *(f"    {path}" for path in metrics["files"].values()),
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``vae`` options (defaults from :class:`VAEConfig`) to ``parser``."""
    d = VAEConfig()
    a = parser.add_argument
    a("--flow", default=d.flow, help="guide: gaussian, or a registry arch with a conditional "
      "form: iaf, realnvp, maf, sylvester[-orthogonal|-triangular] (default %(default)s)")
    a("--num-flows", type=int, default=d.num_flows, help="flow layers (default %(default)s: at "
      "120 epochs the 4-layer IAF guide gained 1.66 nats IS-NLL over the Gaussian, 2 layers "
      "1.47)")
    a("--context-dim", type=int, default=d.context_dim,
      help="size of the encoder's context h (default %(default)s)")
    a("--flow-hidden", type=int, nargs="+", default=d.flow_hidden,
      help="conditioner hidden sizes (default %(default)s, the measured runs' widths)")
    a("--flow-option", dest="flow_options", action="append", type=key_value_option, default=[],
      metavar="KEY=VALUE", help="extra build_flow option (e.g. scale=sigmoid); repeatable")
    a("--dataset", choices=DATASETS, default=d.dataset, help="default %(default)s")
    a("--data-dir", default=d.data_dir, help="data directory (default $PYRO_FLOWVI_DATA, "
      "else ../shared/data)")
    a("--architecture", choices=ARCHITECTURES, default=d.architecture, help="default %(default)s")
    a("--latent-dim", type=int, default=d.latent_dim, help="default %(default)s")
    a("--hidden", type=int, nargs="+", default=d.hidden,
      help="encoder hidden sizes, mirrored by the decoder (default %(default)s)")
    a("--prior-flow", default=d.prior_flow, help="a learned flow prior p(z) = f#N(0, I): a "
      "registry arch with a one-pass inverse (maf, realnvp); default: the standard normal")
    a("--prior-layers", type=int, default=d.prior_layers,
      help="layers of the prior flow (default %(default)s)")
    a("--prior-hidden", type=int, nargs="+", default=d.prior_hidden,
      help="conditioner hidden sizes of the prior flow (default: the registry's)")
    a("--epochs", type=int, default=d.epochs, help="default %(default)s")
    a("--batch-size", type=int, default=d.batch_size, help="per process (default %(default)s)")
    a("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    a("--lr-schedule", choices=("cosine", "constant"), default=d.lr_schedule,
      help="cosine: decay to lr/10 over --epochs (default %(default)s)")
    a("--warmup-epochs", type=float, default=d.warmup_epochs,
      help="KL warm-up epochs, 0 = none (default %(default)s)")
    a("--train-particles", type=int, default=d.train_particles,
      help="K > 1 trains the importance-weighted bound L_K (an IWAE; needs --warmup-epochs 0) "
      "instead of the ELBO (default %(default)s)")
    a("--ema", type=float, default=d.ema, help="Polyak averaging: validate and evaluate an "
      "exponential moving average of the weights with this decay, e.g. 0.999 (0 = off; "
      "default %(default)s)")
    a("--dropout", type=float, default=d.dropout,
      help="dropout after each hidden layer of the MLP encoder and decoder (default %(default)s)")
    a("--train-on-valid", action="store_true", help="train on the training plus the "
      "validation images (50k + 10k for binarized-mnist) and evaluate the final (with --ema: "
      "averaged) weights: no validation curve, no best-epoch selection")
    a("--seed", type=int, default=d.seed, help="default %(default)s")
    a("--device", default=d.device, help="auto, cpu, cuda, cuda:1... (default %(default)s)")
    a("--out", default=d.out, help="output directory (default %(default)s)")
    a("--num-is-samples", type=int, default=d.num_is_samples,
      help="importance samples per test image, e.g. 1000 or 5000 (default %(default)s)")
    a("--eval-batch-size", type=int, default=d.eval_batch_size, help="default %(default)s")
    a("--samples-per-pass", type=int, default=d.samples_per_pass, help="default %(default)s")
    a("--eval-every", type=int, default=d.eval_every,
      help="epochs between validation ELBOs (default %(default)s)")
    a("--keep-best", action=argparse.BooleanOptionalAction, default=d.keep_best,
      help="evaluate the parameters with the best validation ELBO (default %(default)s)")
    a("--checkpoint-every", type=int, default=d.checkpoint_every, help="default %(default)s")
    a("--resume", action="store_true", help="resume from OUT/checkpoint.pt when it exists")
    a("--max-minutes", type=float, default=d.max_minutes,
      help="stop training after the epoch that crosses this budget")
    a("--train-subset", type=int, default=d.train_subset,
      help="use only the first N training images (0 = all)")
    a("--test-subset", type=int, default=d.test_subset,
      help="evaluate on the first N test images (0 = all)")
    add_runtime_arguments(parser, d.num_threads)


def config_from_args(args: argparse.Namespace) -> VAEConfig:
    """Build a :class:`VAEConfig` from parsed :func:`add_arguments` options."""
    return VAEConfig(**config_values(VAEConfig, args, ("flow_options",)))


def run(args: argparse.Namespace) -> int:
    """CLI entry: run, print the report, return the exit status."""
    return report_run(config_from_args(args), run_vae, format_report)
