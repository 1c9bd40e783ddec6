"""Tutorial 2: amortized inference, a small VAE with an IAF guide conditioned on the encoder.

Each data point ``x`` (16 binary pixels, drawn around 4 prototypes) has its own latent ``z``.
``AmortizedFlowGuide`` runs the encoder, ``enc(x) -> (loc, scale, h)``, draws ``z0 ~ N(loc,
scale)`` and pushes it through a conditional IAF whose every layer sees the context ``h``.  The
decoder is the Pyro model; the data plate's size scales a mini-batch ELBO to the whole data set.

    python examples/amortized_vae.py
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn

from pyro_flowvi import AmortizedFlowGuide

PIXELS, LATENT, CONTEXT, N = 16, 2, 8, 512


def make_data(n=N, seed=0):
    gen = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(4, PIXELS, generator=gen) < 0.4).float()
    x = prototypes[torch.randint(0, 4, (n,), generator=gen)]
    flips = (torch.rand(n, PIXELS, generator=gen) < 0.05).float()
    return (x - flips).abs()


class Encoder(nn.Module):
    """x -> (loc, scale, h): the Gaussian base of q(z | x) and the flow's context."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(PIXELS, 64), nn.ReLU())
        self.head = nn.Linear(64, 2 * LATENT + CONTEXT)

    def forward(self, x):
        loc, raw, h = self.head(self.body(x)).split([LATENT, LATENT, CONTEXT], -1)
        return loc, nn.functional.softplus(raw) + 1e-4, h


decoder = nn.Sequential(nn.Linear(LATENT, 64), nn.ReLU(), nn.Linear(64, PIXELS))


def model(x):
    pyro.module("decoder", decoder)
    with pyro.plate("data", N, subsample_size=len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)


def main(steps=2000, batch_size=64, progress=True):
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    data = make_data()
    guide = AmortizedFlowGuide(model, Encoder(), arch="iaf", num_layers=2, context_dim=CONTEXT)
    svi = SVI(model, guide, Adam({"lr": 3e-3}), Trace_ELBO(max_plate_nesting=1))
    elbo = Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    for step in range(steps):
        batch = data[torch.randint(0, N, (batch_size,))]
        svi.step(batch)
        if progress and (step + 1) % 500 == 0:
            print(f"step {step + 1}: -ELBO {svi.evaluate_loss(data) / N:.3f} nats per point")
    with torch.no_grad():
        nelbo = elbo.loss(model, guide, data) / N
    print(f"final -ELBO: {nelbo:.3f} nats per point (coding 16 pixels uniformly: "
          f"{PIXELS * torch.log(torch.tensor(2.0)).item():.2f} nats)")
    return nelbo


if __name__ == "__main__":
    main()
