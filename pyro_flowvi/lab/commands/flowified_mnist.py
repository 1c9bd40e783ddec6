"""``pyro-flowvi flowified-mnist``: its settings (:class:`MNISTFlowConfig`) and options; lazy run."""

from __future__ import annotations

import argparse
import dataclasses

from pyro_flowvi.lab import common
from pyro_flowvi.lab.commands import lazy_run
from pyro_flowvi.lab.common import option

__all__ = ["HELP", "MNISTFlowConfig", "add_arguments", "config_from_args", "run"]

HELP = "fit a flowified MLP (or RealNVP) to dequantised MNIST; report test bits/dim, samples"


@dataclasses.dataclass
class MNISTFlowConfig:
    """Settings (the command-line flags have the same names, with dashes).  ``widths`` are the
    flowified layer output sizes; ``num_train = 0`` uses all 60,000 training images."""

    arch: str = option("flowified", choices=("flowified", "realnvp"), help="model")
    widths: tuple[int, ...] = option(
        (256, 64, 16, 8), help="flowified layer widths, non-increasing, space- or "
        "comma-separated")
    realnvp_layers: int = option(4, help="RealNVP couplings")
    realnvp_hidden: int = option(224, help="RealNVP hidden width")
    epochs: float = option(2.0, help="training epochs")
    batch_size: int = option(128, help="minibatch size")
    lr: float = option(1e-3, help="Adam learning rate, cosine decay")
    num_train: int = option(0, help="training images, 0 = all 60,000")
    seed: int = option(0, help="random seed")
    out: str = option("outputs/flowified_mnist", help="output directory")
    data_dir: str | None = option(
        None, help="data directory holding mnist/ (default: $PYRO_FLOWVI_DATA, else "
        "../shared/data)")
    progress: bool = option(True, help="show progress bars")
    num_threads: int | None = option(1, flag="--threads", help="torch CPU threads during the run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``flowified-mnist`` options, one per :class:`MNISTFlowConfig` field."""
    common.add_config_arguments(parser, MNISTFlowConfig)


def config_from_args(args: argparse.Namespace) -> MNISTFlowConfig:
    """The :class:`MNISTFlowConfig` of parsed :func:`add_arguments` options."""
    return common.config_from_args(MNISTFlowConfig, args)


run = lazy_run("pyro_flowvi.lab.experiments.flowified_mnist")
