"""AmortizedFlowGuide: log q against an explicit recomputation, plate scaling, Pyro plumbing
(SVI, param store, AutoGuideList with a global AutoFlowGuide) and every error case."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoGuideList
from pyro.optim import Adam
from torch import nn

from pyro_flowvi import AmortizedFlowGuide, AutoFlowGuide

D, C, X = 3, 6, 5


class Encoder(nn.Module):
    def __init__(self, latent=D, context=C, x_dim=X):
        super().__init__()
        self.latent, self.context = latent, context
        self.net = nn.Linear(x_dim, 2 * latent + context)

    def forward(self, x):
        loc, raw, h = self.net(x).split([self.latent, self.latent, self.context], -1)
        out = (loc, nn.functional.softplus(raw) + 0.1)
        return out + (torch.tanh(h),) if self.context else out


def local_model(x, num_data=None):
    w = torch.linspace(-1.0, 1.0, D * X).reshape(D, X).to(x)
    with pyro.plate("data", num_data or len(x), subsample_size=len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), D, dtype=x.dtype), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ w, 0.5).to_event(1), obs=x)


def randomize(module, scale=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale)


# ---------------------------------------------------------------------------------------------
# log q equals base log-prob minus the flow's log-det, for the same draw
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["iaf", "realnvp", "nsf", "nsf-coupling", "sylvester",
                                  "sylvester-orthogonal", "flowified", None])
def test_log_q_matches_explicit_recomputation(arch, float64):
    x = torch.randn(7, X)
    guide = AmortizedFlowGuide(local_model, Encoder(context=C if arch else 0), arch=arch,
                               num_layers=2, hidden_dims=[16])
    guide(x)
    randomize(guide)  # move the flow away from the identity
    pyro.set_rng_seed(5)
    tr = poutine.trace(guide).get_trace(x)
    site = tr.nodes["z"]
    log_q = site["fn"].log_prob(site["value"])

    pyro.set_rng_seed(5)
    loc, scale, *h = guide.encoder(x)
    z0 = dist.Normal(loc, scale).rsample()
    log_base = dist.Normal(loc, scale).log_prob(z0).sum(-1)
    if arch is None:
        z, ladj = z0, torch.zeros(7)
    else:
        z, ladj = guide.flow.flow.call_and_ladj(z0, h[0])
        assert ladj.abs().max() > 1e-3  # a non-trivial flow
    assert torch.allclose(site["value"], z, atol=1e-10)
    assert torch.allclose(log_q, log_base - ladj, atol=1e-10)
    if arch in ("realnvp", "nsf-coupling", None):  # a fresh copy is scored through the inverse
        assert torch.allclose(site["fn"].log_prob(site["value"].clone()), log_q, atol=1e-8)


def test_context_broadcasts_over_extra_sample_dims(float64):
    guide = AmortizedFlowGuide(local_model, Encoder(), arch="iaf", num_layers=2, hidden_dims=[16])
    x = torch.randn(4, X)
    guide(x)
    with pyro.plate("particles", 11, dim=-2):
        z = guide(x)["z"]
    assert z.shape == (11, 4, D)


# ---------------------------------------------------------------------------------------------
# Plate scaling with subsampling
# ---------------------------------------------------------------------------------------------
def test_plate_scaling_with_subsampling(float64):
    n, b = 1000, 10
    x = torch.randn(b, X)
    guide = AmortizedFlowGuide(local_model, Encoder(), arch="realnvp", num_layers=2,
                               hidden_dims=[16])
    guide(x, num_data=n)
    assert guide.plate_frame.full_size == n
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(guide).get_trace(x, num_data=n)
    model_trace = poutine.trace(poutine.replay(local_model, trace=guide_trace)).get_trace(
        x, num_data=n)
    assert guide_trace.nodes["z"]["scale"] == pytest.approx(n / b)
    assert model_trace.nodes["z"]["scale"] == pytest.approx(n / b)
    assert torch.equal(model_trace.nodes["data"]["value"], guide_trace.nodes["data"]["value"])
    per_point = sum(model_trace.nodes[s]["fn"].log_prob(model_trace.nodes[s]["value"])
                    for s in ("z", "x")) - guide_trace.nodes["z"]["fn"].log_prob(
                        guide_trace.nodes["z"]["value"])
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().loss(local_model, guide, x, num_data=n)
    assert loss == pytest.approx(-(n / b) * per_point.sum().item(), rel=1e-9)


def test_plate_without_subsampling_follows_the_batch(float64):
    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(torch.zeros(len(x), D), 1.0).to_event(1))

    guide = AmortizedFlowGuide(model, Encoder(), arch="iaf", hidden_dims=[16])
    guide(torch.randn(4, X))
    tr = poutine.trace(guide).get_trace(torch.randn(9, X))  # another batch size: no scaling
    assert tr.nodes["z"]["value"].shape == (9, D) and tr.nodes["z"]["scale"] == 1.0


# ---------------------------------------------------------------------------------------------
# Pyro plumbing
# ---------------------------------------------------------------------------------------------
def test_svi_trains_and_registers_encoder_and_flow():
    pyro.set_rng_seed(0)
    x = torch.randn(64, X)
    guide = AmortizedFlowGuide(local_model, Encoder(), arch="iaf", num_layers=2, context_dim=C,
                               hidden_dims=[16])
    svi = SVI(local_model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(300)]
    assert sum(losses[-30:]) < sum(losses[:30])
    names = set(pyro.get_param_store().keys())
    assert any(n.startswith("AmortizedFlowGuide.encoder$$$") for n in names)
    assert any(n.startswith("AmortizedFlowGuide.flow$$$") for n in names)
    # the param store round-trips: a fresh guide loaded from it gives the same draws
    state = pyro.get_param_store().get_state()
    pyro.set_rng_seed(1)
    z = guide(x[:3])["z"]
    pyro.clear_param_store()
    guide2 = AmortizedFlowGuide(local_model, Encoder(), arch="iaf", num_layers=2, hidden_dims=[16])
    pyro.get_param_store().set_state(state)
    guide2(x[:3])  # the first call traces the model (and draws from the prior)
    pyro.set_rng_seed(1)
    assert torch.allclose(guide2(x[:3])["z"], z)


def global_local_model(x):
    w = pyro.sample("w", dist.Normal(torch.zeros(X), 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), D), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True) + w, 1.0).to_event(1), obs=x)


def test_mixed_model_composes_with_autoguidelist():
    pyro.set_rng_seed(0)
    x = torch.randn(32, X) + 2.0
    guide = AutoGuideList(global_local_model)
    guide.append(AutoFlowGuide(poutine.block(global_local_model, hide=["z"]), arch="iaf"))
    guide.append(AmortizedFlowGuide(poutine.block(global_local_model, expose=["z"]), Encoder(),
                                    arch="iaf", hidden_dims=[16]))
    svi = SVI(global_local_model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(200)]
    assert sum(losses[-20:]) < sum(losses[:20])
    sample = guide(x)
    assert sample["w"].shape == (X,) and sample["z"].shape == (32, D)
    with torch.no_grad():
        w_mean = torch.stack([guide(x)["w"] for _ in range(200)]).mean()
    # the data's mean 2 is shared between w and the local sums z, so w's posterior mean lies
    # between the prior's 0 and 2: the fitted guide has moved off the prior towards the data
    assert 0.5 < float(w_mean) < 2.5


def test_several_and_constrained_local_sites_are_packed(float64):
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
            s = pyro.sample("s", dist.LogNormal(torch.zeros(len(x)), 1.0))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), s[:, None]).to_event(1), obs=x)

    guide = AmortizedFlowGuide(model, Encoder(latent=3), arch="realnvp", hidden_dims=[16])
    x = torch.randn(6, X)
    out = guide(x)
    assert guide.latent_dim == 3 and out["z"].shape == (6, 2) and out["s"].shape == (6,)
    assert (out["s"] > 0).all()
    tr = poutine.trace(guide).get_trace(x)
    aux = tr.nodes["_AmortizedFlowGuide_latent"]
    u = aux["value"]
    # log q(z, s) = log q(u) - log|ds/du| with s = exp(u_s)
    log_q = aux["fn"].log_prob(u) + tr.nodes["s"]["fn"].log_prob(tr.nodes["s"]["value"])
    assert torch.allclose(log_q, aux["fn"].log_prob(u) - u[:, 2])
    assert torch.isfinite(torch.tensor(Trace_ELBO().loss(model, guide, x)))


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_global_latent_is_rejected_with_advice():
    guide = AmortizedFlowGuide(global_local_model, Encoder(), arch="iaf")
    with pytest.raises(ValueError, match=r"'w' is outside any plate.*AutoGuideList"):
        guide(torch.randn(4, X))


def test_wrong_plate_name_is_rejected():
    guide = AmortizedFlowGuide(local_model, Encoder(), arch="iaf", plate_name="items")
    with pytest.raises(ValueError, match="outside plate 'items'"):
        guide(torch.randn(4, X))


def test_discrete_latent_is_rejected():
    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("k", dist.Bernoulli(0.5 * torch.ones(len(x))))

    with pytest.raises(ValueError, match="'k' is discrete"):
        AmortizedFlowGuide(model, Encoder(), arch="iaf")(torch.randn(4, X))


@pytest.mark.parametrize(
    ("encoder", "match"),
    [
        (Encoder(latent=2), r"loc has shape \(4, 2\); expected \(4, 3\)"),
        (Encoder(context=0), r"needs a context: the encoder must return \(loc, scale, h\)"),
        (nn.Identity(), "must return a tuple"),
    ],
)
def test_encoder_output_errors(encoder, match):
    with pytest.raises(ValueError, match=match):
        AmortizedFlowGuide(local_model, encoder, arch="iaf")(torch.randn(4, X))


def test_context_dim_mismatch_says_expected_and_got():
    guide = AmortizedFlowGuide(local_model, Encoder(context=5), arch="iaf", context_dim=8)
    with pytest.raises(ValueError, match=r"h has shape \(4, 5\); expected \(4, 8\)"):
        guide(torch.randn(4, X))


def test_constructor_errors():
    with pytest.raises(ValueError, match="unknown architecture"):
        AmortizedFlowGuide(local_model, Encoder(), arch="iaff")
    with pytest.raises(TypeError, match="nn.Module"):
        AmortizedFlowGuide(local_model, lambda x: x)
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1"):
        AmortizedFlowGuide(local_model, Encoder(), num_layers=-1)
    with pytest.raises(ValueError, match=r"unknown option 'hidden' for arch 'iaf' \(did you mean "
                       r"'hidden_dims'\?"):
        AmortizedFlowGuide(local_model, Encoder(), hidden=32)
    with pytest.warns(DeprecationWarning, match="num_flows is now num_layers"):
        assert AmortizedFlowGuide(local_model, Encoder(), num_flows=3).num_layers == 3
