"""The ``pyro-flowvi`` command line: one subcommand per lab experiment, each imported when it runs.

A subcommand is a module exposing ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; :data:`SUBCOMMANDS` maps each name to it.  Only the module of the command
being run is imported, and ours (:mod:`pyro_flowvi.lab.commands`) import the experiment itself
only in ``run``, so ``pyro-flowvi --help`` and ``pyro-flowvi banana --help`` import neither torch
nor Pyro.  Expected failures (:class:`~pyro_flowvi.lab.common.LabError`: settings that cannot
work, missing or corrupted data, a checkpoint written with other settings) print one line and
exit with status 1; ``--debug`` shows their traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Sequence

from pyro_flowvi import __version__
from pyro_flowvi.lab.common import LabError

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main", "register_subcommand"]


@dataclasses.dataclass(frozen=True)
class Subcommand:
    """A subcommand's module (``HELP``, ``add_arguments``, ``run``) and, where importing that
    module is slow, its one-line help (else read from ``module.HELP``)."""

    module: str
    help: str | None = None

    def help_line(self) -> str:
        return self.help if self.help is not None else importlib.import_module(self.module).HELP


SUBCOMMANDS: dict[str, Subcommand] = {
    "banana": Subcommand("pyro_flowvi.lab.commands.banana"),
    "flowified-mnist": Subcommand("pyro_flowvi.lab.commands.flowified_mnist"),
    "moons": Subcommand("pyro_flowvi.lab.commands.moons"),
    "posterior": Subcommand("pyro_flowvi.lab.commands.posterior"),
    "posteriordb": Subcommand("pyro_flowvi.lab.commands.posteriordb"),
    "vae": Subcommand("pyro_flowvi.lab.commands.vae"),
}
"""Subcommand name -> its :class:`Subcommand`."""

ALL = "*"
"""``build_parser(ALL)`` adds every subcommand's options (importing every subcommand module)."""


def register_subcommand(name: str, module: str, *, help: str | None = None,
                        overwrite: bool = False) -> None:
    """Register ``module`` (a dotted path) as the ``pyro-flowvi <name>`` subcommand."""
    if name in SUBCOMMANDS and not overwrite:
        raise ValueError(f"register_subcommand: {name!r} is already registered")
    SUBCOMMANDS[name] = Subcommand(module, help)


def build_parser(command: str | None = ALL) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered subcommand.

    Only ``command``'s options are added (its module imported); ``None`` adds none (enough for
    ``--help``), :data:`ALL` every subcommand's.

    Example:
        >>> build_parser("moons").parse_args(["moons", "--steps", "10"]).steps
        10
    """
    parser = argparse.ArgumentParser(
        prog="pyro-flowvi", description="Normalizing-flow variational inference for Pyro: the "
        "lab's experiments.  'pyro-flowvi COMMAND --help' lists a command's options.")
    parser.add_argument("--version", action="version", version=__version__)
    debug = "on an expected failure, show the traceback instead of a one-line message"
    parser.add_argument("--debug", action="store_true", help=debug)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, spec in SUBCOMMANDS.items():
        line = spec.help_line()
        sp = sub.add_parser(name, help=line, description=line)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
        if command in (ALL, name):
            module = importlib.import_module(spec.module)
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: its first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command(argv)).parse_args(argv)
    try:
        return int(args._run(args))
    except LabError as err:
        if getattr(args, "debug", False):
            raise
        print(f"pyro-flowvi {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
