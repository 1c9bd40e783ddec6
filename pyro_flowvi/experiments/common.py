"""Machinery shared by the experiment modules: thread limits and configs from CLI options."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

__all__ = [
    "add_runtime_arguments",
    "config_values",
    "key_value_option",
    "report_run",
    "torch_threads",
]

C = TypeVar("C")


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)`` (``None``: leave it), restoring
    the previous count afterwards.  Small flows run faster on one thread than on two contended
    ones."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def config_values(config_cls: type[C], args: argparse.Namespace,
                  mapping_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """The parsed options that are fields of the dataclass ``config_cls``; each field named in
    ``mapping_fields`` (repeatable ``KEY=VALUE`` options) becomes a dict."""
    names = {f.name for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in vars(args).items() if k in names}
    for name in mapping_fields:
        values[name] = dict(values.get(name) or [])
    return values


def key_value_option(text: str) -> tuple[str, Any]:
    """Parse a repeatable ``KEY=VALUE`` CLI option; ``VALUE`` is JSON when it parses, else a string.

    Example:
        >>> key_value_option("max-log-scale=2.0")
        ('max_log_scale', 2.0)
    """
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


def add_runtime_arguments(parser: argparse.ArgumentParser, num_threads: int | None) -> None:
    """The options every experiment shares: ``--threads`` (torch CPU threads, into
    ``num_threads``) and ``--no-progress`` (into ``progress``)."""
    parser.add_argument("--threads", dest="num_threads", type=int, default=num_threads,
                        help="torch CPU threads during the run (default %(default)s)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="hide the progress bars")


def report_run(config: C, run_fn: Callable[[C], dict[str, Any]],
               format_fn: Callable[[dict[str, Any]], str]) -> int:
    """CLI entry body: run the experiment, print its report, return exit status ``0``."""
    print(format_fn(run_fn(config)))
    return 0
