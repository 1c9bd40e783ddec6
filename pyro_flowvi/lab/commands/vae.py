"""``pyro-flowvi vae``: its settings (:class:`VAEConfig`) and options; the run is imported lazily."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from pyro_flowvi.lab import common
from pyro_flowvi.lab.commands import lazy_run
from pyro_flowvi.lab.common import option

__all__ = ["ARCHITECTURES", "DATASETS", "HELP", "LR_SCHEDULES", "RESUMABLE", "VAEConfig",
           "add_arguments", "config_from_args", "run"]

HELP = "train a VAE with an amortized flow guide on binarized MNIST; report test ELBO and IS-NLL"
DATASETS = ("binarized-mnist", "mnist")
ARCHITECTURES = ("mlp", "conv")
"""Encoder/decoder pairs of :func:`pyro_flowvi.lab.models.vae.build_vae`."""
LR_SCHEDULES = ("cosine", "constant")
RESUMABLE = frozenset({
    "epochs", "resume", "max_minutes", "out", "device", "progress", "num_threads", "eval_every",
    "checkpoint_every", "keep_best", "num_is_samples", "eval_batch_size", "samples_per_pass",
    "test_subset",
})
"""Settings that may differ between a run and its ``--resume``; every other one must match the
checkpoint's (else the run stops and names the ones that differ)."""


@dataclasses.dataclass
class VAEConfig:
    """Settings of a VAE run (the command-line flags have the same names, with dashes)."""

    flow: str = option("iaf", help="guide: gaussian, or a registry arch with a conditional form: "
                       "iaf, realnvp, maf, sylvester[-orthogonal|-triangular]")
    num_flows: int = option(4, help="flow layers (docs/vae.rst: 4 IAF layers beat 2)")
    context_dim: int = option(128, help="size of the encoder's context h")
    flow_hidden: list[int] | None = option(factory=lambda: [128, 128],
                                           help="conditioner hidden sizes")
    flow_options: dict[str, Any] = option(
        factory=dict, flag="--flow-option",
        help="extra build_flow option (e.g. scale=sigmoid); repeatable")
    dataset: str = option("binarized-mnist", choices=DATASETS, help="the data")
    data_dir: str | None = option(
        None, help="data directory (default: $PYRO_FLOWVI_DATA, else ../shared/data)")
    architecture: str = option("mlp", choices=ARCHITECTURES, help="encoder and decoder")
    latent_dim: int = option(32, help="latent size")
    hidden: list[int] = option(factory=lambda: [512, 256],
                               help="encoder hidden sizes, mirrored by the decoder")
    prior_flow: str | None = option(
        None, help="a learned flow prior p(z) = f#N(0, I): a registry arch with a one-pass "
        "inverse (maf, realnvp) (default: the standard normal)")
    prior_layers: int = option(2, help="layers of the prior flow")
    prior_hidden: list[int] | None = option(
        None, help="conditioner hidden sizes of the prior flow (default: the registry's)")
    epochs: int = option(50, help="training epochs")
    batch_size: int = option(100, help="minibatch size per process")
    lr: float = option(1e-3, help="Adam learning rate")
    lr_schedule: str = option("cosine", choices=LR_SCHEDULES,
                              help="cosine: decay to lr/10 over --epochs; or constant")
    warmup_epochs: float = option(5.0, help="KL warm-up epochs, 0 = none")
    ema: float = option(0.0, help="Polyak averaging: validate and evaluate an exponential moving "
                        "average of the weights with this decay, e.g. 0.999 (0 = off)")
    train_particles: int = option(
        1, help="K > 1 trains the importance-weighted bound L_K (an IWAE; needs "
        "--warmup-epochs 0) instead of the ELBO")
    dropout: float = option(
        0.0, help="dropout after each hidden layer of the MLP encoder and decoder")
    train_on_valid: bool = option(
        False, help="train on the training plus the validation images (50k + 10k for "
        "binarized-mnist) and evaluate the final (with --ema: averaged) weights: no validation "
        "curve, no best-epoch selection")
    seed: int = option(0, help="random seed")
    device: str = option("auto", help="auto, cpu, cuda, cuda:1...")
    out: str = option("outputs/vae", help="output directory")
    num_is_samples: int = option(
        1000, help="importance samples per test image for the IS-NLL, e.g. 1000 or 5000")
    eval_batch_size: int = option(100, help="test images per evaluation batch")
    samples_per_pass: int = option(250, help="importance samples per evaluation pass")
    eval_every: int = option(5, help="epochs between validation ELBOs")
    keep_best: bool = option(True, help="evaluate the parameters with the best validation ELBO")
    checkpoint_every: int = option(1, help="epochs between checkpoints")
    resume: bool = option(
        False, help="resume from OUT/checkpoint.pt when it exists; the checkpoint's settings "
        "must match (only --epochs, --max-minutes and the evaluation and output settings may "
        "change)")
    max_minutes: float | None = option(
        None, help="stop training after the epoch that crosses this budget (default: none)")
    train_subset: int = option(0, help="train on N random training images (0 = all)")
    test_subset: int = option(0, help="evaluate on N random test images (0 = all)")
    num_threads: int | None = option(1, flag="--threads", help="torch CPU threads during the run")
    progress: bool = option(True, help="show progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``vae`` options, one per :class:`VAEConfig` field."""
    common.add_config_arguments(parser, VAEConfig)


def config_from_args(args: argparse.Namespace) -> VAEConfig:
    """The :class:`VAEConfig` of parsed :func:`add_arguments` options."""
    return common.config_from_args(VAEConfig, args)


run = lazy_run("pyro_flowvi.lab.experiments.vae")
