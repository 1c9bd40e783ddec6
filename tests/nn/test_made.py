"""MADE masks and connectivity: output (p, i) sees exactly the inputs earlier in the order."""

import pytest
import torch

from pyro_flowvi.nn import MADE, MaskedMLP
from pyro_flowvi.nn.masks import connectivity, hidden_degrees, input_degrees, made_masks


@pytest.mark.parametrize("dim", [1, 2, 3, 7])
@pytest.mark.parametrize("hidden", [[16], [10, 20], [6, 6, 6]])
@pytest.mark.parametrize("conditional", [False, True])
def test_connectivity_is_exactly_autoregressive(dim, hidden, conditional):
    order = torch.randperm(dim, generator=torch.Generator().manual_seed(dim))
    masks = made_masks(order, hidden, num_params=2, conditional=conditional)
    paths = connectivity(masks)  # (2 D, D)
    deg = input_degrees(order)
    allowed = deg.repeat(2)[:, None] > deg[None, :]
    assert torch.all(paths[~allowed] == 0), "an output sees an input that is not earlier"
    if min(hidden) >= dim - (0 if conditional else 1):  # wide enough: all degrees present
        assert torch.all(paths[allowed] > 0), "an allowed dependency is missing"


def test_conditional_hidden_degrees_include_zero():
    assert hidden_degrees(6, 3, conditional=True).min() == 0
    assert hidden_degrees(6, 3, conditional=False).min() == 1


@pytest.mark.parametrize("dim", [1, 4])
def test_made_jacobian_and_context_reach(dim):
    torch.manual_seed(0)
    made = MADE(dim, [8, 8], num_params=2, context_dim=3, order=torch.arange(dim).flip(0))
    for p in made.parameters():
        p.data.normal_(0, 0.5)
    x, c = torch.randn(dim), torch.randn(3)
    jac_x = torch.autograd.functional.jacobian(lambda v: made(v, c), x)  # (2, D, D)
    deg = input_degrees(made.order)
    allowed = deg[:, None] > deg[None, :]
    assert torch.all(jac_x[:, ~allowed] == 0)
    # the context reaches every output, the first in the order included (degree-0 hidden units)
    jac_c = torch.autograd.functional.jacobian(lambda v: made(x, v), c)  # (2, D, 3)
    assert torch.all(jac_c.abs().sum(-1) > 0)


def test_output_layer_starts_at_zero_and_shapes():
    net = MaskedMLP(3, [5], out_features=4, num_params=3, context_dim=2)
    out = net(torch.randn(6, 3), torch.randn(6, 2))
    assert out.shape == (6, 3, 4) and torch.all(out == 0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="permutation"):
        MADE(3, [8], 2, order=torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="at least one hidden"):
        MaskedMLP(3, [], 3)
