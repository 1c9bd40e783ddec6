"""``pyro-flowvi banana``: its settings (:class:`BananaConfig`) and options; the run is lazy."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from pyro_flowvi.lab import common
from pyro_flowvi.lab.commands import lazy_run
from pyro_flowvi.lab.common import option

__all__ = ["COVERING_SUFFIX", "DEFAULT_GUIDES", "FLOW_GUIDES", "HELP", "MEASURED_GUIDE_OPTIONS",
           "BananaConfig", "add_arguments", "config_from_args", "run"]

HELP = "fit stock and flow guides to a banana (log Z = 0); report KL, k-hat and entropy checks"

FLOW_GUIDES = ("iaf", "realnvp", "sylvester", "flowified")
"""Our guides: :class:`~pyro_flowvi.AutoFlowGuide` with this ``arch``."""
COVERING_SUFFIX = "+fkl"
"""A flow guide spec ending in this (e.g. ``"iaf+fkl"``) is trained with
:class:`~pyro_flowvi.MassCoveringELBO` instead of ``Trace_ELBO``: the same guide, the
mass-covering objective, side by side (the ``+fkl`` of :func:`pyro_flowvi.lab.guides.parse_spec`)."""
DEFAULT_GUIDES = ("AutoNormal", "AutoMultivariateNormal", "AutoIAFNormal", *FLOW_GUIDES,
                  "iaf" + COVERING_SUFFIX)


MEASURED_GUIDE_OPTIONS: dict[str, object] = {"base": "diagonal", "warm_start": None,
                                              "init_scale": 1.0}
"""The AutoFlowGuide start every banana figure in BENCHMARKS.md was measured with (the guide's
defaults before the real-posterior round: no warm start, a diagonal base of scale 1; realnvp
also without STL).  The flow
guides get it under ``guide_options``; pass ``--guide-option base=auto --guide-option
warm_start=auto --guide-option init_scale=null`` for today's defaults."""


@dataclasses.dataclass
class BananaConfig:
    """Settings of a banana run (the command-line flags have the same names, with dashes).

    ``guides`` are guide specs (:func:`pyro_flowvi.lab.guides.parse_spec`): stock Pyro guides
    (``AutoNormal``, ``AutoMultivariateNormal``, ``AutoIAFNormal`` sized like our ``iaf``, and
    the variants of :data:`pyro_flowvi.lab.guides.STOCK_GUIDES`) or registered flow archs with
    modifiers; ``guide_options`` are extra ``AutoFlowGuide`` keyword arguments for the flow
    guides.  The optimiser settings are those of the AutoFlowGuide issue (8 vectorised
    particles, Adam lr ``5e-3``, 3000 steps) plus a decay over the second half to
    ``lr * lr_decay``: with a constant rate, Adam's parameter jitter sets the KL floor
    (``docs/autoguide.rst``, "Banana").
    """

    b: float = option(1.0, help="banana curvature b")
    a: float = option(1.0, help="scale of z_1")
    sigma: float = option(0.5, help="conditional sd of z_2")
    guides: list[str] = option(
        factory=lambda: list(DEFAULT_GUIDES), metavar="GUIDE",
        help="guide specs: stock guides (AutoNormal, AutoMultivariateNormal, AutoIAFNormal, "
        "AutoIAFNormal-default, AutoIAFNormal-2x32, AutoNormalizingFlow-coupling) and flow archs "
        "with modifiers (iaf, iaf+fkl, realnvp+full, ...); a misspelt one stops the run before "
        "any training")
    seeds: list[int] = option(factory=lambda: [0], help="random seeds")
    steps: int = option(3000, help="Adam steps per guide and seed")
    num_particles: int = option(8, help="vectorised ELBO particles")
    forward_particles: int = option(
        256, help="forward-KL draws of the mass-covering objective, used by the ARCH+fkl guides")
    forward_weight: float = option(2.0, help="weight of its forward-KL term")
    lr: float = option(5e-3, help="Adam learning rate at the start")
    lr_decay: float = option(
        0.05, help="learning-rate decay, the same for every guide: the rate stays at --lr for "
        "the first --lr-decay-start of the steps, then falls geometrically to lr x LR_DECAY at "
        "the last step; 1 keeps it constant")
    lr_decay_start: float = option(
        0.5, help="fraction of the steps run at the full rate before the decay starts")
    guide_options: dict[str, Any] = option(
        factory=dict, flag="--guide-option",
        help="extra AutoFlowGuide keyword for the flow guides, VALUE parsed as JSON if it can be "
        "(e.g. num_layers=2, scale=softplus); repeatable")
    num_eval: int = option(20_000, help="fresh draws for KL and k-hat")
    num_khat: int = option(200_000, help="draws for a second, larger-sample PSIS k-hat (0 = off)")
    num_entropy: int = option(20_000, help="draws for the entropy identity check")
    entropy_tolerance_se: float = option(
        4.0, help="standard errors the entropy identity's residual may reach")
    num_plot: int = option(2000, help="draws per panel of samples.png")
    out: str = option("outputs/banana", help="output directory")
    progress: bool = option(True, help="show progress bars")
    plots: bool = option(True, help="draw samples.png and elbo_traces.png")
    num_threads: int | None = option(1, flag="--threads",
                                     help="torch CPU threads during the run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``banana`` options, one per :class:`BananaConfig` field."""
    common.add_config_arguments(parser, BananaConfig)


def config_from_args(args: argparse.Namespace) -> BananaConfig:
    """The :class:`BananaConfig` of parsed :func:`add_arguments` options."""
    return common.config_from_args(BananaConfig, args)


run = lazy_run("pyro_flowvi.lab.experiments.banana")
