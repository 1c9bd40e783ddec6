"""``pyro-flowvi moons``: its settings (:class:`MoonsConfig`) and options; the run is lazy."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from pyro_flowvi.lab import common
from pyro_flowvi.lab.commands import lazy_run
from pyro_flowvi.lab.common import option
from pyro_flowvi.lab.data.moons import DEFAULT_NOISE

__all__ = ["HELP", "LR_SCHEDULES", "MoonsConfig", "add_arguments", "config_from_args", "run"]

HELP = "fit a flow to 2-moons by maximum likelihood; report NLL vs the true entropy"
LR_SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass
class MoonsConfig:
    """Settings of a 2-moons run (the command-line flags have the same names, with dashes).

    ``hidden`` is the width of each of the ``hidden_layers`` hidden layers of every coupling
    conditioner (default two layers of 64).  ``num_train = 0`` draws a fresh minibatch from the
    process at every step instead of resampling a fixed training set.  ``max_log_scale = None``
    keeps the architecture's default clamp of the log-scales.
    """

    arch: str = option("realnvp", help="registry architecture with an inverse")
    num_layers: int = option(6, help="flow layers")
    hidden: int = option(64, help="width of each conditioner hidden layer")
    hidden_layers: int = option(2, help="conditioner hidden layers")
    steps: int = option(3000, help="Adam steps")
    batch_size: int = option(256, help="minibatch size")
    lr: float = option(1e-3, help="Adam learning rate")
    lr_schedule: str = option("cosine", choices=LR_SCHEDULES,
                              help="learning-rate schedule: cosine decay to 0 over the steps, or "
                              "constant")
    max_log_scale: float | None = option(
        None, help="soft clamp of the coupling log-scales (default: the architecture's)")
    actnorm: bool = option(True, help="ActNorm before every flow layer")
    flow_options: dict[str, Any] = option(
        factory=dict, flag="--flow-option",
        help="extra build_flow option, VALUE parsed as JSON if it can be (e.g. linear=lu, "
        "scale=softplus); repeatable")
    num_train: int = option(10_000, help="fixed training-set size; 0 = fresh samples every step")
    num_test: int = option(20_000, help="held-out points")
    num_entropy: int = option(100_000, help="Monte Carlo samples for the true entropy")
    noise: float = option(DEFAULT_NOISE, help="2-moons noise sd")
    seed: int = option(0, help="random seed")
    out: str = option("outputs/moons", help="output directory")
    device: str = option("auto", help="auto, cpu, cuda, cuda:1...")
    progress: bool = option(True, help="show progress bars")
    eval_every: int = option(
        250, help="steps between held-out evaluations for the curve; 0 = none")
    num_plot: int = option(3000, help="points per scatter")
    num_threads: int | None = option(1, flag="--threads", help="torch CPU threads during the run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``moons`` options, one per :class:`MoonsConfig` field."""
    common.add_config_arguments(parser, MoonsConfig)


def config_from_args(args: argparse.Namespace) -> MoonsConfig:
    """The :class:`MoonsConfig` of parsed :func:`add_arguments` options."""
    return common.config_from_args(MoonsConfig, args)


run = lazy_run("pyro_flowvi.lab.experiments.moons")
