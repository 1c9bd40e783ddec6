"""The ``pyro-flowvi`` subcommands' light halves: help line, config dataclass, options, lazy run.

Each module here exposes ``HELP`` (one line), the experiment's config dataclass (its fields carry
the help texts the command-line options are generated from), ``add_arguments(parser)``,
``config_from_args(args)`` and ``run(args) -> int``, which imports the experiment itself
(:mod:`pyro_flowvi.lab.experiments`) only when called: describing a command imports neither
torch nor Pyro.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

__all__ = ["lazy_run"]


def lazy_run(module: str) -> Callable[[argparse.Namespace], int]:
    """A ``run(args)`` that imports ``module`` on first call and returns its ``run(args)``.

    Example:
        >>> run = lazy_run("pyro_flowvi.lab.experiments.moons")
        >>> run.__doc__
        'Run pyro_flowvi.lab.experiments.moons.run(args) (imported now) and return its status.'
    """

    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).run(args))

    run.__doc__ = f"Run {module}.run(args) (imported now) and return its status."
    return run
