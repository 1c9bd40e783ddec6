"""``pyro-flowvi posterior``: its settings (:class:`PosteriorConfig`) and options; the run is lazy."""

from __future__ import annotations

import argparse
import dataclasses

from pyro_flowvi.lab import common
from pyro_flowvi.lab.commands import lazy_run
from pyro_flowvi.lab.common import option

__all__ = ["DEFAULT_GUIDES", "HELP", "MODEL_NAMES", "PosteriorConfig", "add_arguments",
           "config_from_args", "run"]

HELP = "fit flow and stock guides to a Bayesian posterior; compare with NUTS (k-hat, moments)"
MODEL_NAMES = ("eight_schools", "logistic")
"""The models :mod:`pyro_flowvi.lab.experiments.posterior` can fit (its ``MODELS``)."""
DEFAULT_GUIDES: dict[str, tuple[str, ...]] = {
    "eight_schools": ("normal", "mvn", "iaf", "realnvp"),
    "logistic": ("normal", "mvn", "iaf", "realnvp", "iaf+full+laplace", "realnvp+full+laplace"),
}
OUT = "outputs/posterior"


@dataclasses.dataclass
class PosteriorConfig:
    """Settings of a posterior run (the command-line flags have the same names, with dashes).

    ``guides = None`` takes the model's :data:`DEFAULT_GUIDES`.  ``num_layers``/``hidden`` are
    passed to every flow guide (``None``: AutoFlowGuide's defaults).
    """

    name: str = option("eight_schools", help="the model", choices=MODEL_NAMES, positional=True)
    guides: list[str] | None = option(
        None, metavar="GUIDE",
        help="guide specs (pyro_flowvi.lab.guides.parse_spec): normal, mvn, or "
        "ARCH[+full][+map|+laplace][+stl][+natural][+fkl], space- or comma-separated "
        "(default: per model)")
    steps: int = option(3000, help="SVI steps per guide")
    lr: float = option(5e-3, help="initial ClippedAdam learning rate, decayed tenfold over the run")
    num_particles: int = option(8, help="ELBO particles per step")
    num_layers: int | None = option(None, help="flow layers (default: AutoFlowGuide's)")
    hidden: int | None = option(
        None, help="conditioner width, two hidden layers (default: AutoFlowGuide's)")
    init_scale: float | None = option(
        None, help="initial base scale of flow guides (default: AutoFlowGuide's)")
    num_draws: int = option(4000, help="guide draws for moments and k-hat")
    num_chains: int = option(2, help="NUTS chains, run one after another")
    warmup: int = option(1000, help="NUTS warmup per chain")
    num_samples: int = option(2000, help="NUTS draws per chain")
    target_accept: float = option(0.9, help="NUTS target acceptance probability")
    seed: int = option(0, help="random seed")
    out: str = option(OUT, help=f"output directory (default {OUT}/NAME)")
    progress: bool = option(True, help="show progress bars")
    num_threads: int | None = option(1, flag="--threads", help="torch CPU threads during the run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``posterior`` options: one per :class:`PosteriorConfig` field, and ``--arch``."""
    common.add_config_arguments(parser, PosteriorConfig)
    parser.set_defaults(out=None)  # outputs/posterior/NAME
    parser.add_argument("--arch", action="append", default=None, metavar="ARCH",
                        help="shorthand: add the flow guide ARCH (repeatable; replaces the "
                        "default flow guides)")


def config_from_args(args: argparse.Namespace) -> PosteriorConfig:
    """The :class:`PosteriorConfig` of parsed :func:`add_arguments` options."""
    cfg = common.config_from_args(PosteriorConfig, args)
    if cfg.out is None:
        cfg.out = f"{OUT}/{cfg.name}"
    arch = getattr(args, "arch", None)
    if arch:
        base = cfg.guides or [g for g in DEFAULT_GUIDES[cfg.name] if g in ("normal", "mvn")]
        cfg.guides = list(base) + [g for g in arch if g not in base]
    return cfg


run = lazy_run("pyro_flowvi.lab.experiments.posterior")
