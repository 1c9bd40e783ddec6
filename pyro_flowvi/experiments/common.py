"""Machinery shared by the experiment modules: thread limits and configs from CLI options."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

__all__ = ["config_values", "key_value_option", "torch_threads"]

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
