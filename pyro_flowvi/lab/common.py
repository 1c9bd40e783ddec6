"""What every lab experiment shares: strict-JSON metrics, versions, devices, threads, CLI options.

Light on purpose: nothing here imports torch or Pyro at module level, so the ``pyro-flowvi``
command can describe every subcommand (``--help``) without importing them.  Command-line options
are generated from the experiments' config dataclasses (:func:`add_config_arguments`): a field
declared with :func:`option` carries its help text, and its type and default make the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

__all__ = [
    "ConfigMismatchError",
    "LabError",
    "UsageError",
    "add_config_arguments",
    "config_from_args",
    "key_value_option",
    "option",
    "resolve_device",
    "strict_json",
    "torch_threads",
    "versions",
    "write_metrics",
]

C = TypeVar("C")


class LabError(Exception):
    """An expected failure of a lab command (bad settings, missing or corrupted data, a checkpoint
    from another configuration): the ``pyro-flowvi`` command prints its message and exits with
    status 1, without a traceback unless ``--debug``."""


class UsageError(LabError, ValueError):
    """Settings that cannot work (e.g. a misspelt guide), found before any training."""


class ConfigMismatchError(LabError, ValueError):
    """``--resume`` found a checkpoint written with other settings; the message names them."""


# -- metrics ------------------------------------------------------------------------------------


def strict_json(value: Any) -> Any:
    """``value`` as plain JSON data: non-finite floats become ``None`` (strict parsers reject a
    bare ``NaN``), NumPy scalars and arrays Python numbers and lists, tuples lists, paths strings,
    classes and functions their names.

    Example:
        >>> strict_json({"kl": float("nan"), "seeds": (0, 1), "ok": [1.5, float("inf")]})
        {'kl': None, 'seeds': [0, 1], 'ok': [1.5, None]}
    """
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [strict_json(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # NumPy scalars and arrays, torch tensors
        return strict_json(value.tolist())
    if isinstance(value, type) or callable(value):
        return getattr(value, "__name__", repr(value))
    return repr(value)


def write_metrics(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as strict JSON (:func:`strict_json`, ``allow_nan=False``) to ``path``:
    to a temporary file first, then renamed, so a reader never sees half a file.

    Example:
        >>> import tempfile
        >>> p = write_metrics(Path(tempfile.mkdtemp()) / "m.json", {"x": float("nan")})
        >>> p.read_text()
        '{\\n  "x": null\\n}\\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(strict_json(payload), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def versions() -> dict[str, str]:
    """The versions a result depends on: pyro_flowvi, torch, pyro, numpy and Python."""
    import numpy
    import pyro
    import torch

    import pyro_flowvi

    return {"pyro_flowvi": pyro_flowvi.__version__, "torch": torch.__version__,
            "pyro": pyro.__version__, "numpy": numpy.__version__,
            "python": sys.version.split()[0]}


# -- devices and threads ------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``"auto"`` means CUDA when available, else CPU; anything else is passed to torch.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was asked for but CUDA is not available")
    return device


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)`` (``None``: leave it), restoring
    the previous count afterwards.  Small flows run faster on one thread than on two contended
    ones."""
    import torch

    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# -- command-line options from config dataclasses -----------------------------------------------


def option(default: Any = dataclasses.MISSING, *, help: str,
           factory: Callable[[], Any] | None = None, **cli: Any) -> Any:
    """A config field with its command-line help (``dataclasses.field(metadata={"help": ...})``).

    ``cli`` refines the generated option: ``flag`` (default ``--field-name``), ``choices``,
    ``metavar``, ``positional=True``.  Mutable defaults go in ``factory``.

    Example:
        >>> @dataclasses.dataclass
        ... class Config:
        ...     steps: int = option(100, help="SVI steps")
        >>> dataclasses.fields(Config)[0].metadata["help"]
        'SVI steps'
    """
    metadata = {"help": help, **cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def key_value_option(text: str) -> tuple[str, Any]:
    """Parse a repeatable ``KEY=VALUE`` option; ``VALUE`` is JSON when it parses, else a string.

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


class _Flatten(argparse.Action):
    """``nargs="+"`` of comma-separated items: ``--hidden 64 64`` and ``--hidden 64,64`` agree."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [item for chunk in values for item in chunk])


def _items(convert: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def split(text: str) -> list[Any]:
        return [convert(item) for item in text.split(",") if item]

    split.__name__ = getattr(convert, "__name__", "value")  # argparse names it in errors
    return split


def _field_kind(hint: Any) -> tuple[str, Any]:
    """``(kind, element type)``: kind is ``bool``, ``scalar``, ``list``, ``tuple`` or ``dict``;
    ``X | None`` is treated as ``X`` (the default may be ``None``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if len(args) != 1:
            raise TypeError(f"add_config_arguments: unsupported type {hint}")
        return _field_kind(args[0])
    origin = typing.get_origin(hint)
    if hint is bool:
        return "bool", bool
    if origin in (list, tuple):
        return origin.__name__, args[0]
    if origin is dict or hint is dict:
        return "dict", None
    if hint in (int, float, str):
        return "scalar", hint
    raise TypeError(f"add_config_arguments: unsupported type {hint}")


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One option per field of the dataclass ``config_cls`` that has a ``help`` (:func:`option`).

    The flag is ``--field-name`` (or ``flag``); the type, default and help come from the field
    (``(default: ...)`` is appended unless the help already has a ``(default ...)``).  ``bool``
    fields get ``--x/--no-x``; lists and tuples take several values, space- or comma-separated; a
    ``dict`` field is a repeatable ``KEY=VALUE`` option (:func:`key_value_option`).
    """
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        meta = field.metadata
        if "help" not in meta:
            continue
        kind, elem = _field_kind(hints[field.name])
        default = (field.default_factory() if field.default is dataclasses.MISSING
                   and field.default_factory is not dataclasses.MISSING else field.default)
        text = meta["help"]
        if "(default" not in text and kind != "dict" and not meta.get("positional"):
            text += " (default: %(default)s)"
        kwargs: dict[str, Any] = {"help": text}
        for key in ("choices", "metavar"):
            if key in meta:
                kwargs[key] = meta[key]
        if kind == "bool":
            kwargs.update(action=argparse.BooleanOptionalAction, default=default)
        elif kind == "scalar":
            kwargs.update(type=elem, default=default)
        elif kind in ("list", "tuple"):
            kwargs.update(nargs="+", type=_items(elem), action=_Flatten, default=default)
        else:
            kwargs.update(action="append", type=key_value_option, default=[],
                          metavar=meta.get("metavar", "KEY=VALUE"))
        if meta.get("positional"):
            kwargs.pop("default")
            parser.add_argument(field.name, **kwargs)
        else:
            flag = meta.get("flag", "--" + field.name.replace("_", "-"))
            parser.add_argument(flag, dest=field.name, **kwargs)


def config_from_args(config_cls: type[C], args: argparse.Namespace) -> C:
    """The ``config_cls`` instance the parsed options of :func:`add_config_arguments` describe
    (fields without an option keep their defaults)."""
    hints = typing.get_type_hints(config_cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(config_cls):  # type: ignore[arg-type]
        if not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        kind, _ = _field_kind(hints[field.name])
        if kind == "dict":
            value = dict(value or [])
        elif kind == "tuple" and value is not None:
            value = tuple(value)
        elif kind == "list" and value is not None:
            value = list(value)
        values[field.name] = value
    return config_cls(**values)
