"""The tutorials in examples/ run end to end (a few steps each: smoke tests, not accuracy)."""

import importlib.util
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_smoke_tested():
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(
        ["amortized_vae", "custom_arch", "fit_and_diagnose"])


@pytest.fixture(autouse=True)
def _float32_one_thread():
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def test_fit_and_diagnose(tmp_path, capsys):
    result = load("fit_and_diagnose").main(steps=30, num_samples=200,
                                           out=str(tmp_path / "posterior.png"), progress=False)
    assert len(result.losses) == 30 and (tmp_path / "posterior.png").stat().st_size > 0
    assert "PSIS k-hat" in capsys.readouterr().out


def test_amortized_vae():
    nelbo = load("amortized_vae").main(steps=30, progress=False)
    assert 0 < nelbo < 30  # nats per 16-pixel point: finite and not absurd


def test_custom_arch(capsys, monkeypatch):
    from pyro_flowvi import available_archs, flows

    monkeypatch.setattr(flows, "_REGISTRY", dict(flows._REGISTRY))  # unregistered afterwards
    result = load("custom_arch").main(steps=30, num_samples=200, progress=False)
    assert "coupling-lu" in available_archs() and result.guide.arch == "coupling-lu"
    assert "entropy" in capsys.readouterr().out
