"""The ``pyro-flowvi`` command line: one subcommand per experiment module.

A subcommand is a module exposing ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; :data:`SUBCOMMANDS` maps each name to its module path, imported when the
parser is built.  Adding ``banana`` later is one module plus one line here (or a call to
:func:`register_subcommand` from outside).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

import pyro_flowvi

__all__ = ["SUBCOMMANDS", "build_parser", "main", "register_subcommand"]

SUBCOMMANDS: dict[str, str] = {
    "banana": "pyro_flowvi.experiments.banana",
    "flowified-mnist": "pyro_flowvi.experiments.flowified_mnist",
    "moons": "pyro_flowvi.experiments.moons",
    "posterior": "pyro_flowvi.experiments.posterior",
    "posteriordb": "pyro_flowvi.lab.experiments.posteriordb",
    "vae": "pyro_flowvi.experiments.vae",
}
"""Subcommand name -> module implementing ``HELP``, ``add_arguments`` and ``run``."""


def register_subcommand(name: str, module: str, *, overwrite: bool = False) -> None:
    """Register ``module`` (a dotted path) as the ``pyro-flowvi <name>`` subcommand."""
    if name in SUBCOMMANDS and not overwrite:
        raise ValueError(f"register_subcommand: {name!r} is already registered")
    SUBCOMMANDS[name] = module


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered subcommand.

    Example:
        >>> build_parser().parse_args(["moons", "--steps", "10"]).steps
        10
    """
    parser = argparse.ArgumentParser(
        prog="pyro-flowvi", description="Normalizing-flow variational inference for Pyro."
    )
    parser.add_argument("--version", action="version", version=pyro_flowvi.__version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, path in SUBCOMMANDS.items():
        module = importlib.import_module(path)
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit status."""
    args = build_parser().parse_args(argv)
    return int(args._run(args))
