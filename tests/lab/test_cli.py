"""The ``pyro-flowvi`` command: light ``--help``, guides checked before training, results written
as they complete, expected failures as one line and a non-zero status, resume mismatches named,
strict JSON, help texts and table legends."""

import dataclasses
import importlib
import json
import subprocess
import sys

import pytest
import torch

from pyro_flowvi.lab.cli import SUBCOMMANDS, main
from pyro_flowvi.lab.commands.vae import VAEConfig
from pyro_flowvi.lab.common import UsageError
from pyro_flowvi.lab.experiments import banana
from tests.lab.test_common import strict_load

HEAVY = ("torch", "pyro", "matplotlib")
TINY_BANANA = ["--steps", "4", "--num-eval", "200", "--num-khat", "0", "--num-entropy", "200",
               "--no-plots", "--no-progress", "--guide-option", "num_layers=1",
               "--guide-option", "hidden_dims=[4]"]


def _run_python(code, *args):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("argv", [["--help"], ["banana", "--help"], ["vae", "--help"],
                                  ["posteriordb", "--help"], ["moons", "--help"]])
def test_help_imports_neither_torch_nor_pyro(argv):
    code = ("import sys\nfrom pyro_flowvi.lab.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    result = _run_python(code, *argv)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout[-500:]
    assert "usage: pyro-flowvi" in result.stdout


def test_help_lists_every_subcommand_and_their_help_lines_agree():
    result = subprocess.run([sys.executable, "-m", "pyro_flowvi.lab.cli", "--help"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    for name, spec in SUBCOMMANDS.items():
        assert name in result.stdout
        assert spec.help_line() == importlib.import_module(spec.module).HELP


def test_lr_decay_help_says_what_it_does(capsys):
    with pytest.raises(SystemExit):
        main(["banana", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--lr-decay LR_DECAY learning-rate decay" in text and "geometrically" in text


def test_misspelt_guide_is_rejected_before_any_training(tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the guides")

    monkeypatch.setattr(banana, "fit_guide", no_training)
    status = main(["banana", "--guides", "AutoNormal", "iaf+fkl", "iaff", "realnvp+ful",
                   "--out", str(tmp_path), *TINY_BANANA])
    err = capsys.readouterr().err
    assert status == 1 and "unknown guide 'iaff'" in err and "unknown modifier 'ful'" in err
    assert "Traceback" not in err and not (tmp_path / "metrics.json").exists()
    with pytest.raises(UsageError):
        main(["--debug", "banana", "--guides", "iaff", "--out", str(tmp_path)])


def test_each_finished_guide_is_written_before_a_later_failure(tmp_path, monkeypatch):
    real = banana._run_guide

    def fail_on_the_second(name, cfg):
        if name == "realnvp":
            raise RuntimeError("boom")
        return real(name, cfg)

    monkeypatch.setattr(banana, "_run_guide", fail_on_the_second)
    with pytest.raises(RuntimeError, match="boom"):
        main(["banana", "--guides", "AutoNormal", "iaf", "realnvp", "--out", str(tmp_path),
              *TINY_BANANA])
    metrics = strict_load(tmp_path / "metrics.json")
    assert list(metrics["guides"]) == ["AutoNormal", "iaf"] and metrics["complete"] is False


def test_banana_metrics_are_strict_json_and_the_table_has_a_legend(tmp_path, capsys):
    # one seed, no large-sample k-hat: several values are NaN in Python (s.e. of one seed)
    assert main(["banana", "--guides", "AutoNormal", "iaf", "--seeds", "0", "--out",
                 str(tmp_path), *TINY_BANANA]) == 0
    metrics = strict_load(tmp_path / "metrics.json")
    assert metrics["complete"] is True and set(metrics["guides"]) == {"AutoNormal", "iaf"}
    out = capsys.readouterr().out
    assert "KL: KL(q || p) = -ELBO in nats" in out and "k-hat: the largest PSIS k-hat" in out


@pytest.mark.parametrize("debug", [False, True])
def test_corrupted_data_is_one_line_and_a_non_zero_status(tmp_path, debug):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    argv = [*(["--debug"] if debug else []), "flowified-mnist", "--data-dir", str(tmp_path),
            "--out", str(tmp_path / "out"), "--no-progress"]
    result = subprocess.run([sys.executable, "-m", "pyro_flowvi.lab.cli", *argv],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    if debug:
        assert "Traceback" in result.stderr and "MNISTFormatError" in result.stderr
    else:
        assert result.stderr.strip().splitlines() == [
            f"pyro-flowvi flowified-mnist: error: {tmp_path / 'mnist' / 'train-images-idx3-ubyte'}"
            ": truncated IDX header"]


def test_resume_with_other_settings_names_them(tmp_path, capsys):
    saved = dataclasses.asdict(VAEConfig(out=str(tmp_path), lr=1e-3, latent_dim=32))
    torch.save({"module": {}, "optimizer": {}, "state": {}, "extra": {"config": saved}},
               tmp_path / "checkpoint.pt")
    status = main(["vae", "--resume", "--out", str(tmp_path), "--lr", "0.002", "--latent-dim",
                   "8", "--epochs", "3", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert "lr 0.001 (checkpoint) vs 0.002 (now)" in err and "latent-dim 32" in err
    assert "epochs" not in err  # a longer run is what --resume is for


def test_unreadable_checkpoint_is_an_expected_failure(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["vae", "--resume", "--out", str(tmp_path), "--no-progress"]) == 1
    assert "cannot be read" in capsys.readouterr().err


def test_posterior_metrics_are_written_per_guide_as_strict_json(tmp_path, monkeypatch, capsys):
    from pyro_flowvi.lab.experiments import posterior

    written = []
    real = posterior.write_metrics
    monkeypatch.setattr(posterior, "write_metrics",
                        lambda path, m: written.append(json.dumps(list(m["guides"])))
                        or real(path, m))
    assert main(["posterior", "eight_schools", "--guides", "normal,mvn", "--steps", "3",
                 "--warmup", "5", "--num-samples", "10", "--num-chains", "1", "--num-draws",
                 "32", "--out", str(tmp_path), "--no-progress"]) == 0
    assert written[:2] == ['["normal"]', '["normal", "mvn"]']
    assert strict_load(tmp_path / "metrics.json")["complete"] is True
    assert "mean err / sd err: |guide - NUTS|" in capsys.readouterr().out  # the table's legend
