"""Tiny runs of the flowified examples: 2-moons (``--arch flowified``) and MNIST bits/dim."""

import json

import pytest
import torch

from pyro_flowvi.lab.cli import build_parser
from pyro_flowvi.lab.data.mnist import MNISTNotFoundError, find_data_dir


@pytest.fixture(autouse=True)
def _float32():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


def test_moons_with_flowified_arch(tmp_path):
    args = build_parser().parse_args([
        "moons", "--arch", "flowified", "--steps", "20", "--num-test", "500", "--num-entropy",
        "2000", "--num-plot", "200", "--eval-every", "10", "--out", str(tmp_path),
        "--no-progress"])
    assert args._run(args) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["arch"] == "flowified" and (tmp_path / "density.png").exists()


def test_flowified_mnist_tiny_run(tmp_path):
    try:
        find_data_dir()
    except MNISTNotFoundError:
        pytest.skip("MNIST files not available")
    args = build_parser().parse_args([
        "flowified-mnist", "--epochs", "0.05", "--num-train", "1280", "--widths", "64,8",
        "--out", str(tmp_path), "--no-progress"])
    assert args._run(args) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["exact_likelihood"] and 0 < metrics["test_bits_per_dim"]["mean"] < 12
    assert (tmp_path / "samples.png").exists()
