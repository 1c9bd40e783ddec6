"""Experiments: one module per ``pyro-flowvi`` subcommand, built on the library's public API."""

__all__: list[str] = []
