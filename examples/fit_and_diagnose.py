"""Tutorial 1: a Pyro model -> a flow guide -> fit -> diagnose -> an ArviZ plot.

The model is the eight-schools hierarchy in its non-centred form.  ``pyro_flowvi.fit`` builds an
``AutoFlowGuide`` (an IAF here), trains it with the measured recipe and diagnoses it: the ELBO,
the PSIS k-hat of the importance weights ``log p(x, z) - log q(z)`` (below 0.7 the guide is
usable for importance sampling) and the entropy identity of the flow.  The guide's draws go to
ArviZ as ``InferenceData``.

    python examples/fit_and_diagnose.py        # writes eight_schools.png
"""

import matplotlib

matplotlib.use("Agg")

import arviz as az  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402

import pyro_flowvi  # noqa: E402

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])  # coaching effects
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])  # their standard errors


def model(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(y)):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.deterministic("theta", mu + tau * eta)
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)


def main(steps=3000, num_samples=4000, out="eight_schools.png", progress=True):
    pyro.set_rng_seed(0)
    result = pyro_flowvi.fit(model, Y, SIGMA, arch="iaf", progress=progress,
                             recipe=pyro_flowvi.Recipe(max_steps=steps),
                             num_diagnostic_samples=num_samples)
    print(f"{result.num_steps} steps in {result.seconds:.1f} s")
    print(result.report)  # ELBO, PSIS k-hat, ESS, entropy = H[base] + E[log|det J|]
    idata = result.to_inference_data(num_samples=num_samples)
    print(az.summary(idata, var_names=["mu", "tau"], kind="stats"))
    axes = az.plot_posterior(idata, var_names=["mu", "tau"])
    fig = axes.ravel()[0].figure
    fig.savefig(out)
    plt.close(fig)
    return result


if __name__ == "__main__":
    main()
