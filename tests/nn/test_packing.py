"""PackedParameters: one flat vector behind a module's parameters."""

import copy

import pytest
import torch
from torch import nn

from pyro_flowvi import build_flow
from pyro_flowvi.nn.packing import PackedParameters


def test_packing_reproduces_the_module_and_routes_gradients(float64):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    reference = copy.deepcopy(net)
    x = torch.randn(7, 3)
    packed = PackedParameters(net)
    assert list(net.parameters()) == []
    assert packed.numel == sum(p.numel() for p in reference.parameters())
    flat = packed.initial.clone().requires_grad_()
    packed.install(net, flat)
    torch.testing.assert_close(net(x), reference(x))
    net(x).square().sum().backward()
    reference(x).square().sum().backward()
    expected = torch.cat([p.grad.reshape(-1) for p in reference.parameters()])
    torch.testing.assert_close(flat.grad, expected)


def test_shared_parameters_are_stored_once_and_views_follow_in_place_writes(float64):
    shared = nn.Linear(2, 2)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    packed = PackedParameters(net)
    assert packed.numel == 6 and len(packed.slots) == 4
    flat = packed.initial.clone().requires_grad_()
    packed.install(net, flat)
    assert net[0].weight.data_ptr() == net[2].weight.data_ptr()
    with torch.no_grad():
        net[0].bias.fill_(0.5)  # an in-place write (ActNorm's data init) lands in the flat vector
    assert torch.equal(flat[4:6], torch.full((2,), 0.5))
    net(torch.ones(1, 2)).sum().backward()  # the views stay differentiable after the write
    assert flat.grad.abs().sum() > 0


def test_layout_installs_into_a_structural_copy_and_checks_the_length(float64):
    flow = build_flow("iaf", 3, num_layers=2, hidden_dims=[8])
    packed = PackedParameters(flow)
    packed.install(flow, packed.initial)  # detached values: a deep copy needs leaf tensors
    twin = copy.deepcopy(flow)
    flat = torch.randn(packed.numel) * 0.1
    packed.install(flow, flat)
    packed.install(twin, flat.clone())
    x = torch.randn(4, 3)
    torch.testing.assert_close(twin(x), flow(x))
    assert set(packed.named_views(flat)) == {
        f"{path}.{name}" for path, name in packed.slots}
    with pytest.raises(ValueError, match=r"flat vector of shape \(\d+,\)"):
        packed.install(flow, flat[:-1])


def test_installing_one_leaf_per_parameter_gives_the_flat_gradient(float64):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    layout = PackedParameters(net)
    x = torch.randn(5, 3)
    flat = (layout.initial + 0.1 * torch.randn(layout.numel)).requires_grad_()
    layout.install(net, flat)
    (expected,) = torch.autograd.grad(net(x).pow(2).sum(), [flat])
    parts = [v.detach().requires_grad_() for v in layout.views(flat.detach())]
    layout.install(net, parts)
    grads = torch.autograd.grad(net(x).pow(2).sum(), parts)
    assert torch.equal(torch.cat([g.reshape(-1) for g in grads]), expected)
    with pytest.raises(ValueError, match="expected tensors of shapes"):
        layout.install(net, parts[:-1])
    with pytest.raises(ValueError, match="expected tensors of shapes"):
        layout.install(net, [p.t() for p in parts])
