"""The architecture registry: names, suggestions, custom builders, bad arguments."""

import pyro.distributions as dist
import pytest
import torch

from pyro_flowvi import available_archs, build_flow, register_arch
from pyro_flowvi.transforms import AffineCoupling, FlowStack


def test_known_archs_and_issue_example():
    assert {"iaf", "maf", "realnvp", "sylvester", "planar", "radial"} <= set(available_archs())
    flow = build_flow("iaf", dim=10, num_layers=4, hidden_dims=[64, 64])
    q = dist.TransformedDistribution(dist.Normal(0.0, 1.0).expand([10]).to_event(1), flow)
    z = q.rsample((256,))
    assert q.log_prob(z).shape == (256,)
    cflow = build_flow("realnvp", dim=10, context_dim=32, num_layers=6)
    h = torch.randn(256, 32)
    cq = dist.ConditionalTransformedDistribution(
        dist.Normal(0.0, 1.0).expand([10]).to_event(1), [cflow]
    ).condition(h)
    assert cq.log_prob(cq.rsample()).shape == (256,)


def test_unknown_arch_lists_known_names_and_closest_match():
    with pytest.raises(ValueError) as err:
        build_flow("realnpv", 3)
    msg = str(err.value)
    assert "'realnvp'" in msg and "Did you mean" in msg
    for name in available_archs():
        assert name in msg


def test_register_custom_arch_and_overwrite_protection():
    def single_coupling(dim, *, context_dim, num_layers, hidden_dims):
        return FlowStack([AffineCoupling(dim, hidden_dims=hidden_dims, context_dim=context_dim)],
                         context_dim)

    register_arch("test-single-coupling", single_coupling, overwrite=True)
    assert len(build_flow("test-single-coupling", 4, hidden_dims=[8])) == 1
    with pytest.raises(ValueError, match="already registered"):
        register_arch("test-single-coupling", single_coupling)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"dim must be an integer >= 1, got 0"):
        build_flow("iaf", 0)
    with pytest.raises(ValueError, match=r"dim must be an integer >= 1, got 2.5"):
        build_flow("iaf", 2.5)  # refused, not truncated
    with pytest.raises(ValueError, match=r"dim must be an integer >= 1, got '3'"):
        build_flow("iaf", "3")
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1"):
        build_flow("iaf", 3, num_layers=0)
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1"):
        build_flow("iaf", 3, num_layers="2")
    with pytest.raises(ValueError, match="hidden_dims must be a list of positive integers"):
        build_flow("iaf", 3, hidden_dims=[0])
    with pytest.raises(ValueError, match="hidden_dims must be a list of positive integers"):
        build_flow("iaf", 3, hidden_dims=32)
    with pytest.raises(ValueError, match="permutation"):
        build_flow("iaf", 3, permutation="shuffle")
    with pytest.raises(ValueError, match="mask"):
        build_flow("realnvp", 3, mask="checker")
    with pytest.raises(ValueError, match=r"unknown option 'num_hidden' for arch 'realnvp'.*valid "
                       r"options: .*activation"):
        build_flow("realnvp", 3, num_hidden=5)


def test_unknown_option_fails_when_the_guide_is_built_naming_the_valid_ones():
    from pyro_flowvi import AutoFlowGuide

    with pytest.raises(ValueError, match=r"AutoFlowGuide: unknown option 'hidden' for arch 'iaf' "
                       r"\(did you mean 'hidden_dims'\?.*valid options: .*permutation"):
        AutoFlowGuide(lambda: None, "iaf", hidden=32)
    with pytest.raises(ValueError, match="AutoFlowGuide: num_layers must be an integer"):
        AutoFlowGuide(lambda: None, "iaf", num_layers=1.5)
    with pytest.raises(ValueError, match=r"unknown option 'bogus' for arch 'flowified'.*count_bins"):
        AutoFlowGuide(lambda: None, "flowified", bogus=1)
    with pytest.raises(ValueError, match=r"unknown option 'variant' for arch 'sylvester'"):
        AutoFlowGuide(lambda: None, "sylvester", variant="triangular")


def test_one_source_of_defaults_per_arch():
    """build_flow's defaults are the guide's: depth, widths and options come from the spec."""
    from pyro_flowvi.flows import arch_spec

    for arch in [a for a in available_archs() if not a.startswith("test-")]:  # built-in ones
        spec = arch_spec(arch)
        flow = build_flow(arch, 5)
        assert len(flow) == spec.num_layers, arch
        assert flow.has_inverse == spec.has_inverse, arch  # declared capabilities hold
        assert flow.autoregressive == spec.autoregressive, arch
    iaf = build_flow("iaf", 5)
    assert isinstance(iaf[0].conditioner.activation, torch.nn.ReLU)  # spec.options' activation
    assert [layer.out_features for layer in iaf[0].conditioner.layers][:2] == \
        arch_spec("iaf").hidden(5)


def test_gaussian_is_the_zero_layer_arch():
    flow = build_flow("gaussian", 3)
    x = torch.randn(4, 3)
    y, ladj = flow.call_and_ladj(x)
    assert len(flow) == 0 and torch.equal(y, x) and torch.equal(ladj, torch.zeros(4))
    assert torch.equal(flow.inv(y), x)
    with pytest.raises(ValueError, match="no layers"):
        build_flow("gaussian", 3, num_layers=2)


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_reverse_last_natural_ends_in_the_model_order(num_layers):
    """``permutation="reverse_last_natural"`` alternates the orders so that the last layer moves
    each coordinate given the ones declared before it; ``"reverse"`` starts there instead."""
    natural = torch.arange(3)
    last = build_flow("iaf", 3, num_layers=num_layers, hidden_dims=[8],
                      permutation="reverse_last_natural")
    orders = [layer.order for layer in last]
    assert torch.equal(orders[-1], natural)
    for a, b in zip(orders[:-1], orders[1:], strict=True):
        assert torch.equal(a.flip(0), b)
    first = build_flow("iaf", 3, num_layers=num_layers, hidden_dims=[8], permutation="reverse")
    assert torch.equal(first[0].order, natural)


def test_conditional_flow_misuse_names_the_fix():
    flow = build_flow("iaf", 3, context_dim=4, hidden_dims=[8])
    x = torch.zeros(2, 3)
    with pytest.raises(TypeError, match=r"not called directly; bind the context first: "
                       r"flow.condition\(h\)\(x\)"):
        flow(x)
    with pytest.raises(TypeError, match="context must be a tensor.*got list.*torch.as_tensor"):
        flow.condition([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"context is torch.float64 on cpu but the input is "
                       r"torch.float32 on cpu; move it with h.to\(x\)"):
        flow.condition(torch.zeros(2, 4, dtype=torch.float64))(x)
    with pytest.raises(ValueError, match="expected a context with last dimension 4"):
        flow.condition(torch.zeros(2, 5))(x)
    assert flow.condition(torch.zeros(2, 4))(x).shape == (2, 3)
