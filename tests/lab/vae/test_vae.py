"""The VAE: IS estimator vs ELBO, the trace ELBO vs Trace_ELBO, training lowers the loss,
checkpoint resume, data checks, the CLI end to end and CPU/CUDA agreement."""

import json
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_flowvi import AmortizedFlowGuide
from pyro_flowvi.lab.cli import main
from pyro_flowvi.lab.vae import build_vae, elbo_terms, log_importance_weights, log_mean_exp
from pyro_flowvi.lab.vae.averaging import ParameterEMA
from pyro_flowvi.lab.vae.evaluate import evaluate_nll
from pyro_flowvi.lab.vae.objectives import importance_weighted_bound
from pyro_flowvi.lab.vae.train import ELBOModule, TrainState, fit, load_checkpoint
from tests.lab.vae.test_ddp import fixed_latent

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (SHARED / "binarized_mnist").is_dir(),
                                reason="no ../shared/data")


def toy_images(n, seed=0):
    """Binary 'images': a few noisy prototypes, so a small VAE has something to learn."""
    gen = torch.Generator().manual_seed(seed)
    protos = (torch.rand(4, 784, generator=gen) < 0.25).float()
    which = torch.randint(0, 4, (n,), generator=gen)
    flip = (torch.rand(n, 784, generator=gen) < 0.05).float()
    return (protos[which] - flip).abs()


def small_run(arch="iaf", latent=4, hidden=(32,), context=8, num_layers=2):
    vae, enc = build_vae("mlp", latent, 0 if arch is None else context, list(hidden))
    guide = AmortizedFlowGuide(vae.model, enc, arch=arch, num_layers=num_layers,
                               hidden_dims=[16], create_plates=vae.create_plates)
    return vae, guide


@pytest.mark.parametrize("arch", [None, "iaf"])
def test_importance_estimate_exceeds_elbo_and_grows_with_k(arch):
    vae, guide = small_run(arch)
    x = toy_images(100)
    guide(x[:2])
    lw = log_importance_weights(vae.model, guide, x, 1000).double()  # (1000, 100)
    estimates = []
    for k in (1, 10, 100, 1000):
        groups = lw.reshape(1000 // k, k, -1)
        estimates.append(log_mean_exp(groups, 1).mean().item())  # E[log p_k] over groups, points
    elbo = lw.mean().item()
    assert estimates[0] == pytest.approx(elbo)
    assert all(b > a for a, b in zip(estimates, estimates[1:], strict=False)), estimates
    assert estimates[-1] > elbo + 0.5


def test_trace_elbo_matches_pyro_trace_elbo():
    vae, guide = small_run("realnvp")
    x = toy_images(16)
    guide(x, num_data=160)
    pyro.set_rng_seed(2)
    ours = elbo_terms(vae.model, guide, x, num_data=160).elbo().item()
    pyro.set_rng_seed(2)
    assert ours == pytest.approx(-Trace_ELBO().loss(vae.model, guide, x, num_data=160), rel=1e-5)


def test_evaluation_matches_the_weights_and_bounds():
    vae, guide = small_run("sylvester")
    x = toy_images(30)
    out = evaluate_nll(vae, guide, x, 40, batch_size=7, samples_per_pass=15, progress=False)
    assert out["elbo"].shape == (30,) and out["nll"].shape == (30,)
    assert (out["nll"] <= -out["elbo"] + 1e-9).all()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["iaf", None])
def test_few_hundred_steps_on_a_1k_subset_lower_the_loss(arch):
    torch.manual_seed(0)
    x = toy_images(1000)
    vae, guide = small_run(arch, latent=8, hidden=(64,))
    guide(x[:2])
    module = ELBOModule(vae, guide)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    before = evaluate_nll(vae, guide, x[:200], 1, progress=False)["elbo"].mean()
    state = fit(module, opt, x, epochs=30, batch_size=100, warmup_epochs=3, progress=False)
    after = evaluate_nll(vae, guide, x[:200], 1, progress=False)["elbo"].mean()
    assert len(state.history) == 30  # 300 steps
    assert after > before + 100  # nats per image
    assert state.history[-1]["train_elbo"] > state.history[0]["train_elbo"]


def seeded_module_and_optimizer(x, lr):
    """The same small IAF-VAE module and a fresh Adam on it, every call."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    vae, guide = small_run("iaf")
    guide(x[:2])
    module = ELBOModule(vae, guide)
    return module, torch.optim.Adam(module.parameters(), lr=lr)


def test_checkpoint_resume_continues_exactly(tmp_path):
    x = toy_images(300)

    def fresh():
        module, opt = seeded_module_and_optimizer(x, 1e-3)
        return module, opt, torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)

    kwargs = dict(batch_size=50, valid=x[:50], eval_every=1, warmup_epochs=2, progress=False)
    module, opt, sched = fresh()
    straight = fit(module, opt, x, epochs=3, scheduler=sched, **kwargs)
    reference = {k: v.clone() for k, v in module.state_dict().items()}

    module, opt, sched = fresh()
    fit(module, opt, x, epochs=2, scheduler=sched, checkpoint=tmp_path / "ck.pt", **kwargs)
    module, opt, sched = fresh()
    state = load_checkpoint(tmp_path / "ck.pt", module, opt, sched)
    assert isinstance(state, TrainState) and state.epoch == 2
    resumed = fit(module, opt, x, epochs=3, scheduler=sched, state=state, **kwargs)
    assert [h["train_elbo"] for h in resumed.history] == [h["train_elbo"] for h in
                                                           straight.history]
    for k, v in module.state_dict().items():
        assert torch.equal(v, reference[k]), k


def test_checkpoint_resume_with_parameter_averages(tmp_path):
    """--ema: validation scores the averaged weights (so the kept best state is the average), and
    a resumed run restores the averages and reproduces the straight run."""
    x = toy_images(300)

    def fresh():
        module, opt = seeded_module_and_optimizer(x, 1e-2)
        return module, opt, ParameterEMA(module, decay=0.9)

    kwargs = dict(batch_size=50, valid=x[:50], eval_every=1, warmup_epochs=0, progress=False)
    module, opt, ema = fresh()
    straight = fit(module, opt, x, epochs=3, ema=ema, **kwargs)
    live = {k: v.clone() for k, v in module.state_dict().items()}
    with ema.swapped():
        averaged = {k: v.clone() for k, v in module.state_dict().items()}
    assert any(not torch.equal(live[k], averaged[k]) for k in live)  # the average is not live
    best = straight.best_state
    assert straight.best_epoch == 3  # the kept best state is the last epoch's average
    assert all(torch.equal(best[k], averaged[k]) for k in best)
    for k, v in module.state_dict().items():  # swapped() restored the live weights
        assert torch.equal(v, live[k]), k

    module, opt, ema = fresh()
    fit(module, opt, x, epochs=2, ema=ema, checkpoint=tmp_path / "ck.pt", **kwargs)
    module, opt, ema = fresh()
    state = load_checkpoint(tmp_path / "ck.pt", module, opt, None, ema)
    resumed = fit(module, opt, x, epochs=3, ema=ema, state=state, **kwargs)
    assert [h["valid_elbo"] for h in resumed.history] == [h["valid_elbo"] for h in
                                                           straight.history]
    with ema.swapped():
        for k, v in module.state_dict().items():
            assert torch.equal(v, averaged[k]), k


def test_parameter_average_is_the_exponential_moving_average():
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = ParameterEMA(net, decay=0.5)
    expected = 0.0
    for t, value in enumerate([1.0, 2.0, 4.0, 8.0], start=1):
        with torch.no_grad():
            net.weight.fill_(value)
        ema.update()
        rho = min(0.5, (1 + t) / (10 + t))
        expected = rho * expected + (1 - rho) * value
    assert ema.averages[0].item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="decay must be in"):
        ParameterEMA(net, decay=1.0)


def test_importance_weighted_bound_is_exact_for_the_true_posterior_and_trains():
    """With q = p(z | x) every weight is p(x): the bound equals log p(x) for any K.  With a
    flow guide, L_K lies between the ELBO and log p(x) on average and ELBOModule trains it."""
    import pyro.distributions as dist

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def exact(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x / 2, 0.5 ** 0.5))

    x = torch.tensor([0.0, 1.5, -2.0])
    log_px = dist.Normal(0.0, 2 ** 0.5).log_prob(x)
    for k in (1, 7):
        torch.testing.assert_close(importance_weighted_bound(model, exact, x, k), log_px)

    torch.manual_seed(0)
    images = toy_images(64)
    vae, guide = small_run("iaf")
    guide(images[:2])
    module = ELBOModule(vae, guide, num_particles=8)
    loss, bound = module(images, len(images))
    loss.backward()
    assert all(p.grad is not None for p in guide.parameters())
    assert bound.item() == pytest.approx(-loss.item())
    elbo = ELBOModule(vae, guide)(images, len(images))[1]
    assert bound.item() > elbo.item()
    with pytest.raises(ValueError, match="warm-up"):
        module(images, len(images), beta=0.5)


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    vae, enc = build_vae("mlp", latent_dim=4, hidden_dims=[32], dropout=0.5)
    z = torch.randn(3, 4)
    vae.train()
    assert not torch.equal(vae.decoder(z), vae.decoder(z))
    vae.eval()
    assert torch.equal(vae.decoder(z), vae.decoder(z))
    with pytest.raises(ValueError, match="dropout is implemented for the mlp"):
        build_vae("conv", latent_dim=4, dropout=0.1)


@pytest.mark.parametrize("arch", ["maf", "realnvp"])
def test_flow_prior_density_sampling_and_training(arch):
    """log p(z) of the flow prior is log N(f^-1(z)) - log|det J_f| at f^-1(z), recomputed by
    hand in float64; samples go through f; the model trace scores z with it; and one training
    step of the ELBO moves the prior's parameters."""
    torch.manual_seed(0)
    vae, enc = build_vae("mlp", 4, 8, [32], prior_flow=arch, prior_layers=2, prior_hidden=[16])
    vae = vae.double()
    with torch.no_grad():  # leave the identity start, so the check is not trivial
        for p in vae.prior_flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(5, 3, 4, dtype=torch.float64)
    u, ladj = vae.prior_flow.inverse_and_ladj(z.reshape(-1, 4))
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(u).sum(-1) - ladj
    got = vae.prior(z.new_zeros(3, 4)).log_prob(z)
    torch.testing.assert_close(got.reshape(-1), expected)
    eps = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(vae.sample_prior(6, torch.Generator().manual_seed(1)),
                               vae.prior_flow(eps))
    x = toy_images(10).double()
    tr = poutine.trace(vae.model).get_trace(x)
    torch.testing.assert_close(tr.nodes["z"]["fn"].log_prob(tr.nodes["z"]["value"]),
                               vae.prior(x.new_zeros(10, 4)).log_prob(tr.nodes["z"]["value"]))

    vae = vae.float()
    guide = AmortizedFlowGuide(vae.model, enc, arch="iaf", num_layers=2, hidden_dims=[16],
                               create_plates=vae.create_plates)
    images = toy_images(64)
    guide(images[:2])
    module = ELBOModule(vae, guide)
    before = [p.detach().clone() for p in vae.prior_flow.parameters()]
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    module(images, len(images))[0].backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.prior_flow.parameters(),
                                                         strict=True))


def test_flow_prior_needs_an_inverse_and_the_latent_size():
    from pyro_flowvi import build_flow
    from pyro_flowvi.lab.models.vae import BernoulliVAE, MLPDecoder

    with pytest.raises(ValueError, match="has no inverse.*use maf or realnvp"):
        build_vae("mlp", 4, 8, [32], prior_flow="sylvester")
    with pytest.raises(ValueError, match="acts on dim 3, but the latent has dim 4"):
        BernoulliVAE(MLPDecoder(4, [8]), 4, build_flow("maf", 3, num_layers=1))


def test_data_of_the_wrong_shape_or_dtype_is_rejected():
    vae, guide = small_run("iaf")
    with pytest.raises(ValueError, match=r"shape \(batch, 784\), got \(3, 28, 28\)"):
        vae.model(torch.zeros(3, 28, 28))
    with pytest.raises(TypeError, match="floating-point tensor of 0/1 values, got dtype "
                                        "torch.uint8"):
        vae.model(torch.zeros(3, 784, dtype=torch.uint8))


@needs_data
def test_cli_end_to_end(tmp_path):
    out = tmp_path / "vae"
    argv = ["vae", "--flow", "iaf", "--epochs", "1", "--train-subset", "500", "--test-subset",
            "50", "--num-is-samples", "20", "--samples-per-pass", "10", "--hidden", "64",
            "--latent-dim", "8", "--context-dim", "16", "--out", str(out), "--no-progress",
            "--data-dir", str(SHARED)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["test_nll"]["mean"] < -metrics["test_elbo"]["mean"]
    for name in ("samples.png", "reconstructions.png", "training_curve.png", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0
    assert main([*argv, "--epochs", "2", "--resume"]) == 0  # one more epoch from the checkpoint
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]


@needs_data
def test_cli_train_on_valid_and_flow_prior(tmp_path):
    """--train-on-valid trains on train + valid rows and evaluates the last epoch (no
    validation curve, no best-epoch pick); --prior-flow builds and reports the flow prior."""
    out = tmp_path / "vae"
    assert main(["vae", "--flow", "iaf", "--epochs", "2", "--train-subset", "500",
                 "--test-subset", "20", "--num-is-samples", "10", "--samples-per-pass", "10",
                 "--hidden", "32", "--latent-dim", "4", "--context-dim", "8", "--out", str(out),
                 "--no-progress", "--data-dir", str(SHARED), "--train-on-valid",
                 "--prior-flow", "maf", "--prior-layers", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_train"] == 500 + 100  # the subset's 500 train and 100 valid rows
    assert metrics["evaluated_epoch"] == 2 and metrics["best_valid_elbo"] is None
    assert all("valid_elbo" not in h for h in metrics["history"])
    state = torch.load(out / "checkpoint.pt", weights_only=False)["module"]
    assert any(k.startswith("vae.prior_flow.") for k in state)


def test_cli_without_data_explains(tmp_path, capsys):
    """Missing data is an expected failure: one line on stderr, status 1; --debug re-raises."""
    from pyro_flowvi.lab.data.mnist import MNISTNotFoundError

    argv = ["vae", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("pyro-flowvi vae: error: ") and "--data-dir" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(MNISTNotFoundError, match="not found.*--data-dir"):
        main(["--debug", *argv])


@pytest.mark.cuda
def test_cpu_and_cuda_elbo_agree():
    """Same weights, same batch, same latent draw: the ELBO on CPU and on CUDA agree."""
    vae, guide = small_run("iaf")
    vae, guide = vae.double(), guide.double()
    x = toy_images(64).double()
    guide(x[:2])
    z = poutine.trace(guide).get_trace(x).nodes["z"]["value"].detach()
    cpu = ELBOModule(vae, guide, fixed_latent(guide, z, x, num_data=640))(x, 640)[1]
    pyro.clear_param_store()  # else pyro.module would pull the CPU tensors back in
    vae, guide, x, z = vae.cuda(), guide.cuda(), x.cuda(), z.cuda()
    gpu = ELBOModule(vae, guide, fixed_latent(guide, z, x, num_data=640))(x, 640)[1]
    assert torch.allclose(cpu, gpu.cpu(), rtol=1e-7, atol=1e-7)
