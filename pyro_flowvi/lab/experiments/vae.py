"""The IAF-VAE on binarized MNIST: train a Bernoulli VAE with an amortized flow guide, report nats.

``pyro-flowvi vae --flow iaf`` trains the MLP (or ``--architecture conv``) VAE of
:mod:`pyro_flowvi.lab.models.vae` with :class:`~pyro_flowvi.AmortizedFlowGuide` (``--flow
gaussian`` for the plain encoder), evaluates the test ELBO and the importance-sampled test NLL
(``K = 1000`` draws per image by default) and writes ``metrics.json``, ``samples.png``,
``reconstructions.png``, ``training_curve.png`` and ``checkpoint.pt`` to ``--out``.  Datasets:
``binarized-mnist`` (the static binarization of Larochelle and Murray 2011: 50k / 10k / 10k) and
``mnist`` (the IDX files, 50k train / 10k valid split of the 60k, binarized dynamically during
training; the test set is binarized once with a fixed seed).  Run it under ``torchrun`` for
data-parallel training (see :mod:`pyro_flowvi.lab.vae.train`).  ``--prior-flow maf`` learns a
flow prior ``p(z)`` with the decoder.  Measured results (test NLL by guide, training time):
``docs/vae.rst`` and ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
import torch.distributed as tdist
from torch import Tensor, nn

from pyro_flowvi import AmortizedFlowGuide
from pyro_flowvi.flows import arch_spec
from pyro_flowvi.lab.commands.vae import (
    ARCHITECTURES,
    DATASETS,
    HELP,
    RESUMABLE,
    VAEConfig,
    add_arguments,
    config_from_args,
)
from pyro_flowvi.lab.common import (
    ConfigMismatchError,
    UsageError,
    resolve_device,
    torch_threads,
    versions,
    write_metrics,
)
from pyro_flowvi.lab.data.mnist import load_binarized_mnist, load_mnist_idx
from pyro_flowvi.lab.models.vae import build_vae
from pyro_flowvi.lab.plots import plot_image_grid, plot_reconstructions, plot_vae_curves
from pyro_flowvi.lab.vae.averaging import ParameterEMA
from pyro_flowvi.lab.vae.evaluate import evaluate_nll, reconstruct, sample_images, summarize
from pyro_flowvi.lab.vae.train import (
    ELBOModule,
    distributed_context,
    fit,
    load_checkpoint,
    read_checkpoint,
)

__all__ = [
    "DATASETS",
    "HELP",
    "VAEConfig",
    "add_arguments",
    "build_run",
    "check_resume_config",
    "config_from_args",
    "format_report",
    "load_dataset",
    "run",
    "run_vae",
]

TEST_BINARIZATION_SEED = 123


def check_resume_config(saved: dict[str, Any], cfg: VAEConfig) -> None:
    """Raise :class:`~pyro_flowvi.lab.common.ConfigMismatchError` naming every setting of
    ``cfg`` (outside :data:`~pyro_flowvi.lab.commands.vae.RESUMABLE`) that differs from the
    checkpoint's ``saved`` config.

    Example:
        >>> check_resume_config(dataclasses.asdict(VAEConfig(lr=1e-3)), VAEConfig(lr=2e-3))
        Traceback (most recent call last):
        ...
        pyro_flowvi.lab.common.ConfigMismatchError: --resume: ... lr 0.001 (checkpoint) vs 0.002 ...
    """
    now = dataclasses.asdict(cfg)
    differ = [f"{key.replace('_', '-')} {saved.get(key)!r} (checkpoint) vs {value!r} (now)"
              for key, value in now.items()
              if key not in RESUMABLE and key in saved and saved[key] != value]
    if differ:
        raise ConfigMismatchError(
            "--resume: the checkpoint was written with other settings: " + "; ".join(differ)
            + "; rerun with the checkpoint's settings, or without --resume (or with another "
            "--out) to start afresh")


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
    raise UsageError(f"vae: unknown dataset {name!r}; choose one of {DATASETS}")


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
        raise UsageError(f"vae: unknown lr_schedule {cfg.lr_schedule!r}: 'cosine' or 'constant'")
    return optimizer, sched


def run_vae(config: VAEConfig | None = None) -> dict[str, Any]:
    """Train, evaluate, plot; write ``metrics.json`` (rank 0) and return the metrics."""
    cfg = config or VAEConfig()
    device = resolve_device(cfg.device)
    if cfg.architecture not in ARCHITECTURES:
        raise UsageError(f"vae: architecture must be one of {ARCHITECTURES}")
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
    checkpoint = out / "checkpoint.pt"
    saved = read_checkpoint(checkpoint) if cfg.resume and checkpoint.exists() else None
    if saved is not None:
        check_resume_config(saved.get("extra", {}).get("config", {}), cfg)
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
    state = None if saved is None else load_checkpoint(saved, module, optimizer, sched, ema)
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
        "versions": versions(),
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
    metrics["files"]["metrics"] = str(write_metrics(out / "metrics.json", metrics))
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


def run(args: argparse.Namespace) -> int:
    """CLI entry: run, print the report, return the exit status."""
    print(format_report(run_vae(config_from_args(args))))
    return 0
