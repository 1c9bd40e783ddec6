"""``pyro-flowvi posteriordb``: its settings (:class:`PosteriordbConfig`) and options; the run
is lazy (describing the command imports neither torch nor Pyro)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from pyro_flowvi.lab.commands import lazy_run
from pyro_flowvi.lab.common import key_value_option

__all__ = ["DEFAULT_GUIDES", "HELP", "PosteriordbConfig", "add_arguments", "config_from_args",
           "run"]

HELP = "fit guides to the posteriordb posteriors and score them against the reference draws"
DEFAULT_GUIDES = ("normal", "mvn", "iafnormal", "iaf", "realnvp")


@dataclasses.dataclass
class PosteriordbConfig:
    """Settings of a posteriordb run (CLI flags have the same names, with dashes)."""

    posteriors: list[str] | None = None
    guides: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_GUIDES))
    seeds: int = 1
    recipe: str = "user"
    steps: int = 5000
    lr: float = 1e-2
    lr_final: float = 1e-3
    num_draws: int = 4000
    data_dir: str | None = None
    out: str = "outputs/posteriordb"
    progress: bool = True
    num_threads: int | None = 1
    recipe_options: dict[str, Any] = dataclasses.field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``posteriordb`` options (defaults from :class:`PosteriordbConfig`)."""
    d = PosteriordbConfig()
    a = parser.add_argument
    comma = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    a("--posteriors", type=comma, default=None, help="comma-separated posterior names "
      "(default: all of the data dir's plus our own)")
    a("--guides", type=comma, default=d.guides, help="comma-separated guide specs: normal, mvn, "
      "iafnormal, or ARCH[+full|+diagonal][+laplace|+map|+cold][+stl|+nostl][+natural][+fkl] "
      "(default: %(default)s)")
    a("--seeds", type=int, default=d.seeds, help="seeds 0..N-1 per guide (default %(default)s)")
    a("--recipe", choices=("user", "fit"), default=d.recipe,
      help="user: SVI with ClippedAdam 1e-2 -> 1e-3, one particle, --steps steps; fit: "
      "pyro_flowvi.fit for flow guides (default %(default)s)")
    a("--steps", type=int, default=d.steps, help="steps of the user recipe (default %(default)s)")
    a("--recipe-option", dest="recipe_options", action="append", type=key_value_option,
      default=[], metavar="KEY=VALUE", help="a pyro_flowvi.Recipe field for --recipe fit "
      "(e.g. min_steps=300); repeatable")
    a("--num-draws", type=int, default=d.num_draws,
      help="guide draws for the scores (default %(default)s)")
    a("--data-dir", default=None, help="posteriordb folder (default: $PYRO_FLOWVI_POSTERIORDB "
      "or ../shared/posteriordb)")
    a("--out", default=d.out, help="output folder (default %(default)s)")
    a("--threads", dest="num_threads", type=int, default=d.num_threads,
      help="torch CPU threads (default %(default)s)")
    a("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def config_from_args(args: argparse.Namespace) -> PosteriordbConfig:
    """The :class:`PosteriordbConfig` of parsed :func:`add_arguments` options."""
    names = {f.name for f in dataclasses.fields(PosteriordbConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["recipe_options"] = dict(values.get("recipe_options") or [])
    return PosteriordbConfig(**values)


run = lazy_run("pyro_flowvi.lab.experiments.posteriordb")
