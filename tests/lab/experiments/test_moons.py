"""The 2-moons job: sampler, exact density and entropy, NLL sign, plots and the CLI."""

import json
import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch

from pyro_flowvi import build_flow
from pyro_flowvi.lab.cli import build_parser, main
from pyro_flowvi.lab.data import default_num_nodes, make_moons, moons_entropy, moons_log_density
from pyro_flowvi.lab.experiments.moons import MoonsConfig, config_from_args, flow_log_prob, run_moons
from pyro_flowvi.lab.plots import (
    chi2_quantile,
    plot_density,
    plot_grid_deformation,
    plot_latent_qq,
    plot_samples,
    plot_training_curve,
)

PNGS = ["samples.png", "density.png", "grid_deformation.png", "latent_qq.png",
        "training_curve.png"]


def _grid(h, xlim=(-2.5, 3.5), ylim=(-2.0, 2.5)):
    xs = np.arange(xlim[0], xlim[1] + h / 2, h)
    ys = np.arange(ylim[0], ylim[1] + h / 2, h)
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)


# -- data ---------------------------------------------------------------------------------------


def test_make_moons_shape_seed_and_moments():
    x, labels = make_moons(20_000, 0.1, rng=1, return_labels=True)
    assert x.shape == (20_000, 2) and x.dtype == np.float64 and labels.shape == (20_000,)
    np.testing.assert_array_equal(x, make_moons(20_000, 0.1, rng=1))
    assert not np.array_equal(x, make_moons(20_000, 0.1, rng=2))
    # arc choice ~ Bernoulli(1/2)
    assert abs(labels.mean() - 0.5) < 4 * 0.5 / math.sqrt(len(labels))
    # E[x] = 1/2 (0, 2/pi) + 1/2 (1, 1/2 - 2/pi) = (1/2, 1/4)
    se = x.std(0) / math.sqrt(len(x))
    assert np.all(np.abs(x.mean(0) - [0.5, 0.25]) < 4 * se)
    # the noise: radial residual about each arc's circle has sd ~ noise
    upper = np.linalg.norm(x[labels == 0], axis=1) - 1
    lower = np.linalg.norm(x[labels == 1] - [1.0, 0.5], axis=1) - 1
    for r in (upper, lower):
        assert abs(r.std() - 0.1) < 0.005 and abs(r.mean()) < 0.01


def test_make_moons_noiseless_points_lie_on_the_arcs():
    x, labels = make_moons(1000, 0.0, rng=0, return_labels=True)
    centres = np.where(labels[:, None] == 0, 0.0, [1.0, 0.5])
    np.testing.assert_allclose(np.linalg.norm(x - centres, axis=1), 1.0, atol=1e-12)
    assert np.all(x[labels == 0, 1] >= 0) and np.all(x[labels == 1, 1] <= 0.5)


def test_true_density_integrates_to_one():
    h = 0.02
    p = np.exp(moons_log_density(_grid(h), 0.1))
    assert abs(p.sum() * h * h - 1) < 1e-3


@pytest.mark.parametrize("noise", [0.05, 0.1, 0.3])
def test_quadrature_converged(noise):
    x = make_moons(2000, noise, rng=0)
    coarse = moons_log_density(x, noise)
    fine = moons_log_density(x, noise, num_nodes=2 * default_num_nodes(noise))
    assert np.abs(coarse - fine).max() < 1e-6


def test_log_density_shapes_and_errors():
    assert moons_log_density(np.zeros((3, 4, 2))).shape == (3, 4)
    with pytest.raises(ValueError, match="shape"):
        moons_log_density(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="noise"):
        moons_log_density(np.zeros((3, 2)), noise=0.0)


def test_entropy_matches_grid_integration():
    h_mc, se = moons_entropy(0.1, num_samples=20_000, rng=0)
    assert 0.005 < se < 0.02
    h = 0.02
    log_p = moons_log_density(_grid(h), 0.1)
    h_grid = float(-(np.exp(log_p) * log_p).sum() * h * h)
    assert abs(h_mc - h_grid) < 3 * se
    assert abs(h_grid - 1.00758) < 1e-4


# -- the model's density: the sign of the log-det ------------------------------------------------


def test_nll_sign_at_initialisation_is_standard_normal():
    flow = build_flow("realnvp", 2, num_layers=6, hidden_dims=[64, 64])
    x = torch.as_tensor(make_moons(500, rng=0), dtype=torch.float32)
    u, ladj = flow.inverse_and_ladj(x)
    assert torch.equal(u, x) and torch.equal(ladj, torch.zeros(500))  # exactly the identity
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    torch.testing.assert_close(flow_log_prob(flow, x), expected)  # up to float32 rounding


def test_nll_sign_after_training_perturbation():
    torch.manual_seed(0)
    flow = build_flow("realnvp", 2, num_layers=4, hidden_dims=[16]).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(200, 2, dtype=torch.float64)
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    reference = dist.TransformedDistribution(base, flow).log_prob(x)
    torch.testing.assert_close(flow_log_prob(flow, x), reference)
    # the density integrates to one (with the log-det's sign flipped the mass here is ~1700)
    h = 0.05
    grid = torch.as_tensor(_grid(h, (-12, 12), (-12, 12)))
    with torch.no_grad():
        log_q = flow_log_prob(flow, grid)
    assert abs(float(log_q.exp().sum()) * h * h - 1) < 1e-3


# -- plotting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("df", [1, 2, 3, 7])
def test_chi2_quantile_matches_scipy(df):
    stats = pytest.importorskip("scipy.stats")
    p = np.array([1e-4, 0.01, 0.3, 0.5, 0.9, 0.999])
    np.testing.assert_allclose(chi2_quantile(p, df), stats.chi2.ppf(p, df), rtol=1e-9)


def test_plots_write_pngs(tmp_path):
    x = torch.as_tensor(make_moons(300, rng=0), dtype=torch.float32)
    normal = torch.distributions.Normal(0.0, 1.0)
    paths = [
        plot_samples(x, torch.randn(300, 2), tmp_path / "a" / "samples.png"),
        plot_density({"n": lambda p: normal.log_prob(p).sum(-1),
                      "true": lambda p: moons_log_density(p.numpy())},
                     tmp_path / "density.png", resolution=30, data=x),
        plot_grid_deformation(lambda u: u + 0.3 * torch.sin(u.flip(-1)), tmp_path / "grid.png",
                              points_per_line=50, data=x),
        plot_latent_qq(torch.randn(300, 2), tmp_path / "qq.png"),
        plot_latent_qq(torch.randn(300, 3), tmp_path / "qq3.png"),
        plot_training_curve(torch.linspace(3, 1, 120), tmp_path / "curve.png",
                            curves={"eval": ([50, 100], [2.0, 1.5])}, reference=1.0),
    ]
    for path in paths:
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 1000


# -- the experiment and the CLI ------------------------------------------------------------------

SMALL = ["--num-train", "400", "--num-test", "400", "--num-entropy", "1000", "--num-plot", "200",
         "--eval-every", "10", "--no-progress"]


def test_cli_moons_writes_metrics_and_pngs(tmp_path, capsys):
    assert main(["moons", "--steps", "30", "--out", str(tmp_path), *SMALL]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ["train_nll", "test_nll", "entropy", "gap", "kl_paired"]:
        assert set(metrics[key]) == {"mean", "se"} and math.isfinite(metrics[key]["mean"])
    for key in ["runtime_seconds", "train_seconds", "num_params", "device", "versions", "config",
                "target_met", "eval_curve", "files"]:
        assert key in metrics
    assert metrics["versions"]["torch"] == torch.__version__ and "pyro" in metrics["versions"]
    assert metrics["config"]["steps"] == 30 and metrics["num_params"] > 0
    assert metrics["eval_curve"]["step"] == [10, 20, 30]
    gap = metrics["test_nll"]["mean"] - metrics["entropy"]["mean"]
    assert metrics["gap"]["mean"] == pytest.approx(gap)
    for name in PNGS:
        assert (tmp_path / name).stat().st_size > 1000
    assert "test NLL" in capsys.readouterr().out


def test_cli_options_and_errors(tmp_path):
    args = build_parser().parse_args(
        ["moons", "--no-actnorm", "--flow-option", "linear=lu", "--flow-option", "scale=softplus",
         "--max-log-scale", "1.5"])
    cfg = config_from_args(args)
    assert cfg.flow_options == {"linear": "lu", "scale": "softplus"}
    assert cfg.actnorm is False and cfg.max_log_scale == 1.5 and cfg.hidden == 64
    with pytest.raises(ValueError, match="no analytic inverse"):
        run_moons(MoonsConfig(arch="planar", actnorm=False, steps=1, out=str(tmp_path),
                              progress=False))
    with pytest.raises(ValueError, match="--no-actnorm"):
        run_moons(MoonsConfig(arch="planar", steps=1, out=str(tmp_path), progress=False))
    with pytest.raises(ValueError, match="unknown architecture"):
        run_moons(MoonsConfig(arch="nope", steps=1, out=str(tmp_path), progress=False))
    with pytest.raises(SystemExit):
        main(["moons", "--flow-option", "novalue"])


def test_fresh_samples_mode_and_threads_restored(tmp_path):
    before = torch.get_num_threads()
    metrics = run_moons(MoonsConfig(steps=5, num_train=0, num_test=200, num_entropy=500,
                                    num_plot=100, eval_every=0, out=str(tmp_path),
                                    progress=False))
    assert metrics["train_nll"] is None and math.isfinite(metrics["test_nll"]["mean"])
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_short_default_run_is_within_target(tmp_path):
    """Half the default steps already put KL(data || model) well under the 0.5-nat bar."""
    metrics = run_moons(MoonsConfig(steps=1500, num_train=5000, num_test=5000, num_entropy=5000,
                                    num_plot=300, eval_every=0, out=str(tmp_path),
                                    progress=False))
    assert metrics["kl_paired"]["mean"] < 0.5 and metrics["target_met"]
    assert metrics["gap"]["mean"] > -3 * metrics["gap"]["se"]
