"""Numerical agreement with Pyro's own transforms given the same weights, where the
parametrisations coincide (unclamped exp scale inside Pyro's clip range; the gated form)."""

import pytest
import torch
from pyro.distributions.transforms import AffineAutoregressive as PyroAR
from pyro.distributions.transforms import AffineCoupling as PyroCoupling
from pyro.nn import AutoRegressiveNN, DenseNN
from torch import nn

from pyro_flowvi.transforms import AffineAutoregressive, AffineCoupling


def _copy_linear(dst, src):
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)


@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("dim, hidden", [(2, [8]), (5, [16, 16])])
def test_affine_autoregressive_matches_pyro(stable, dim, hidden):
    torch.manual_seed(1)
    perm = torch.randperm(dim)
    arn = AutoRegressiveNN(dim, hidden, permutation=perm, nonlinearity=nn.ReLU())
    for p in arn.parameters():
        p.data.mul_(0.5)  # keep log-scales inside Pyro's clip range [-5, 3]
    theirs = PyroAR(arn, stable=stable)
    ours = AffineAutoregressive(
        dim, hidden, order=perm, scale="sigmoid" if stable else "exp", max_log_scale=None,
        activation=nn.ReLU,
    )
    for mine, pyros in zip(ours.conditioner.layers, arn.layers, strict=True):
        assert torch.equal(mine.mask, pyros.mask), "MADE masks differ from Pyro's"
        _copy_linear(mine, pyros)
    x = torch.randn(10, dim)
    y_theirs = theirs(x)
    y_ours, ladj_ours = ours.call_and_ladj(x)
    assert torch.allclose(y_ours, y_theirs, atol=1e-12)
    assert torch.allclose(ladj_ours, theirs.log_abs_det_jacobian(x, y_theirs), atol=1e-12)
    theirs.clear_cache() if hasattr(theirs, "clear_cache") else None
    x_back, _ = ours.inverse_and_ladj(y_theirs)
    assert torch.allclose(x_back, theirs._inverse(y_theirs), atol=1e-10)


@pytest.mark.parametrize("dim, split", [(2, 1), (5, 2), (6, 3)])
def test_affine_coupling_matches_pyro(dim, split):
    torch.manual_seed(2)
    hypernet = DenseNN(split, [16, 16], param_dims=[dim - split, dim - split],
                       nonlinearity=nn.ReLU())
    for p in hypernet.parameters():
        p.data.mul_(0.5)
    theirs = PyroCoupling(split, hypernet)
    mask = torch.arange(dim) < split
    ours = AffineCoupling(dim, mask, [16, 16], scale="exp", max_log_scale=None,
                          activation=nn.ReLU)
    for mine, pyros in zip(ours.conditioner.layers, hypernet.layers, strict=True):
        _copy_linear(mine, pyros)
    x = torch.randn(10, dim)
    y_theirs = theirs(x)
    y_ours, ladj_ours = ours.call_and_ladj(x)
    assert torch.allclose(y_ours, y_theirs, atol=1e-12)
    assert torch.allclose(ladj_ours, theirs.log_abs_det_jacobian(x, y_theirs), atol=1e-12)
    assert torch.allclose(ours.inverse_and_ladj(y_ours)[0], theirs._inverse(y_theirs), atol=1e-12)
