"""The lab's shared machinery: strict-JSON metrics and options generated from config dataclasses."""

import argparse
import dataclasses
import importlib
import json
import math

import numpy as np
import pytest

from pyro_flowvi.lab import common
from pyro_flowvi.lab.cli import SUBCOMMANDS
from pyro_flowvi.lab.common import option


def strict_load(path):
    """``json.load`` that refuses the bare NaN / Infinity tokens strict parsers reject."""
    def refuse(token):
        raise ValueError(f"{path}: non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_write_metrics_is_strict_json_and_atomic(tmp_path):
    payload = {"nan": math.nan, "inf": [1.0, -math.inf], "np": np.float64("nan"),
               "arr": np.arange(3), "nested": {"t": (1, 2)}, "cls": dict}
    path = common.write_metrics(tmp_path / "sub" / "metrics.json", payload)
    assert strict_load(path) == {"nan": None, "inf": [1.0, None], "np": None, "arr": [0, 1, 2],
                                 "nested": {"t": [1, 2]}, "cls": "dict"}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left


def test_versions_and_devices():
    assert {"pyro_flowvi", "torch", "pyro", "numpy", "python"} <= set(common.versions())
    assert common.resolve_device("cpu").type == "cpu"


@dataclasses.dataclass
class Demo:
    name: str = option("a", help="positional", choices=("a", "b"), positional=True)
    steps: int = option(3, help="steps")
    rate: float | None = option(None, help="a rate (default: none)")
    flag: bool = option(True, help="a switch")
    sizes: list[int] = option(factory=lambda: [4, 4], help="sizes")
    widths: tuple[int, ...] = option((2, 1), help="widths")
    extra: dict = option(factory=dict, flag="--extra-option", help="KEY=VALUE")
    threads: int | None = option(1, flag="--threads", help="threads")
    hidden: int = 7  # no help: not an option


def test_options_are_generated_from_the_dataclass():
    parser = argparse.ArgumentParser()
    common.add_config_arguments(parser, Demo)
    args = parser.parse_args(["b", "--steps", "5", "--no-flag", "--sizes", "8", "16",
                              "--widths", "3,2,1", "--extra-option", "k=[1]", "--threads", "2"])
    cfg = common.config_from_args(Demo, args)
    assert cfg == Demo("b", 5, None, False, [8, 16], (3, 2, 1), {"k": [1]}, 2, 7)
    assert common.config_from_args(Demo, parser.parse_args(["a"])) == Demo()
    text = parser.format_help()
    assert "steps (default: 3)" in text and "a rate (default: none)" in text
    assert "--hidden" not in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--sizes", "x"])


@pytest.mark.parametrize("command", [c for c in SUBCOMMANDS if c != "posteriordb"])
def test_every_config_field_is_an_option_and_none_is_restated(command):
    """The options come from the config dataclass: each field is one, with its help text."""
    module = importlib.import_module(SUBCOMMANDS[command].module)
    config_cls = next(v for k, v in vars(module).items()
                      if k.endswith("Config") and dataclasses.is_dataclass(v))
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    dests = {a.dest for a in parser._actions}
    fields = dataclasses.fields(config_cls)
    assert {f.name for f in fields} <= dests
    assert all(f.metadata.get("help") for f in fields)
