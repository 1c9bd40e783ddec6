"""Runnable experiments behind the ``pyro-flowvi`` subcommands (each module: ``HELP``,
``add_arguments(parser)``, ``run(args) -> int``, plus a config dataclass and a Python entry point).
"""

__all__ = ["moons", "posterior"]
