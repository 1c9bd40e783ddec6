"""The lab's analytic targets: the banana is normalised, with the stated moments."""

import torch

from pyro_flowvi.lab.targets import Banana


def test_banana_target_is_normalised(float64):
    p = Banana(a=1.2, b=0.7, sigma=0.5)
    x1, x2 = torch.linspace(-8.0, 8.0, 801), torch.linspace(-4.0, 45.0, 2451)
    cell = (x1[1] - x1[0]) * (x2[1] - x2[0])
    x = torch.stack(torch.meshgrid(x1, x2, indexing="ij"), dim=-1)
    assert abs(p.log_prob(x).exp().sum().item() * cell.item() - 1.0) < 1e-6
    samples = p.sample((200_000,))
    torch.testing.assert_close(samples.mean(0), p.mean, atol=0.02, rtol=0)
    torch.testing.assert_close(samples.var(0), p.variance, atol=0.0, rtol=0.03)
