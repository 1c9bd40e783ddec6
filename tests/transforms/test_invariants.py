"""The invariant suite: every registered architecture and every public transform, plain and
conditional, through the same checks (STYLE.md, "Invariants every registered transform must pass")."""

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro.distributions.transforms import Planar, Radial

import pyro_flowvi.transforms as T
from pyro_flowvi import available_archs, build_flow
from pyro_flowvi.testing import (
    check_finite_gradients,
    check_identity_at_init,
    check_log_det,
    check_one_pass_matches_two_pass,
    check_round_trip,
    check_scored_without_inversion,
    check_state_dict_round_trip,
    check_triangular,
    randomize_parameters,
)
from pyro_flowvi.transforms.base import ConditionalFlowTransform

DIM, CTX = 3, 2
HIDDEN = [12, 12]


@dataclass(frozen=True)
class Case:
    """How to build one flow: ``make(dim, context_dim)``; ``context_dim=None`` for the plain one."""

    make: Callable
    conditional: bool = True  # has a conditional form
    identity_at_init: bool = True
    structure: str | None = None  # "autoregressive" | "coupling" | None


def _sylvester(variant):
    def make(d, c):
        if c is None:
            return T.Sylvester(d, variant=variant, hidden_dims=HIDDEN)
        return T.ConditionalSylvester(d, c, variant=variant, hidden_dims=HIDDEN)

    return make


def _ar(scale):
    def make(d, c):
        order = torch.arange(d).flip(0)
        if c is None:
            return T.AffineAutoregressive(d, HIDDEN, order=order, scale=scale)
        return T.ConditionalAffineAutoregressive(d, c, hidden_dims=HIDDEN, order=order, scale=scale)

    return make


def _coupling(d, c):
    mask = torch.arange(d) % 2 == 1
    if c is None:
        return T.AffineCoupling(d, mask, HIDDEN)
    return T.ConditionalAffineCoupling(d, c, mask=mask, hidden_dims=HIDDEN)


def _spline_ar(bound, affine=False):
    def make(d, c):
        order = torch.arange(d).flip(0)
        spline = T.SplineTransformer(count_bins=5, bound=bound)
        if affine:
            spline = T.ComposedTransformer(spline, T.AffineTransformer())
        if c is None:
            return T.Autoregressive(d, spline, HIDDEN, order=order)
        return T.ConditionalAutoregressive(d, spline, c, hidden_dims=HIDDEN, order=order)

    return make


def _spline_coupling(bound):
    def make(d, c):
        mask = torch.arange(d) % 2 == 1
        spline = T.SplineTransformer(count_bins=5, bound=bound)
        if c is None:
            return T.Coupling(d, spline, mask, HIDDEN)
        return T.ConditionalCoupling(d, spline, c, mask=mask, hidden_dims=HIDDEN)

    return make


def _svd_linear(rotation):
    def make(d, c):
        layer = T.SVDLinear(d, context_dim=c, rotation=rotation)
        return layer if c is None else ConditionalFlowTransform(layer)

    return make


def _flowified_bijection(d, c):
    from pyro_flowvi.transforms.flowify import flowified_block

    layer = T.FlowifiedBijection(flowified_block(d, 1, context_dim=c, hidden_dims=[8]))
    return layer if c is None else ConditionalFlowTransform(layer)


def _maf_layer(d, c):
    layer = T.Inverted(T.AffineAutoregressive(d, HIDDEN, context_dim=c))
    return layer if c is None else ConditionalFlowTransform(layer)


LAYER_CASES = {
    "AffineAutoregressive-exp": Case(_ar("exp"), structure="autoregressive"),
    "AffineAutoregressive-softplus": Case(_ar("softplus"), structure="autoregressive"),
    "AffineAutoregressive-sigmoid": Case(
        _ar("sigmoid"), identity_at_init=False, structure="autoregressive"
    ),
    "Inverted-AffineAutoregressive": Case(_maf_layer),
    "AffineCoupling": Case(_coupling, structure="coupling"),
    # bound 3 keeps most inputs inside the spline; bound 0.5 sends most into the identity tails
    "Autoregressive-spline": Case(_spline_ar(3.0), structure="autoregressive"),
    "Autoregressive-spline-narrow": Case(_spline_ar(0.5), structure="autoregressive"),
    "Autoregressive-spline-affine": Case(_spline_ar(1.0, affine=True), structure="autoregressive"),
    "Coupling-spline": Case(_spline_coupling(3.0), structure="coupling"),
    "Coupling-spline-narrow": Case(_spline_coupling(0.5), structure="coupling"),
    "LULinear": Case(lambda d, c: T.LULinear(d, permutation=torch.arange(d).flip(0)),
                     conditional=False, identity_at_init=False),
    "ActNorm": Case(lambda d, c: T.ActNorm(d, data_init=False), conditional=False),
    "Permute": Case(lambda d, c: T.Permute(torch.arange(d).roll(1)), conditional=False,
                    identity_at_init=False),
    "Sylvester-orthogonal": Case(_sylvester("orthogonal")),
    "Sylvester-householder": Case(_sylvester("householder")),
    "Sylvester-triangular": Case(_sylvester("triangular")),
    "PyroLayer-Planar": Case(lambda d, c: T.PyroLayer(Planar(d), d), conditional=False,
                             identity_at_init=False),
    "PyroLayer-Radial": Case(lambda d, c: T.PyroLayer(Radial(d), d), conditional=False,
                             identity_at_init=False),
    "SVDLinear-exp": Case(_svd_linear("exp")),
    "SVDLinear-householder": Case(_svd_linear("householder")),
    "InvertibleLeakyReLU": Case(lambda d, c: T.InvertibleLeakyReLU(d), conditional=False,
                                identity_at_init=False),
    "SharedSpline": Case(lambda d, c: T.SharedSpline(d), conditional=False),
    "SharedSpline-per-unit": Case(lambda d, c: T.SharedSpline(d, shared=False), conditional=False),
    "FlowifiedBijection": Case(_flowified_bijection),
    "TukeyTails": Case(lambda d, c: T.TukeyTails(d, init_tail_weight=0.3), conditional=False,
                       identity_at_init=False),
}

# Archs whose layers do not start at the identity (Pyro's planar/radial initialise randomly).
_NOT_IDENTITY_ARCHS = {"planar", "radial"}
ARCH_CASES = {
    f"arch:{name}": Case(
        (lambda n: lambda d, c: build_flow(n, d, context_dim=c, hidden_dims=HIDDEN,
                                           num_layers=None if n == "gaussian" else 3))(name),
        identity_at_init=name not in _NOT_IDENTITY_ARCHS,
    )
    for name in available_archs()
}
ARCH_CASES["arch:realnvp+actnorm+lu"] = Case(
    lambda d, c: build_flow("realnvp", d, context_dim=c, num_layers=2, hidden_dims=HIDDEN,
                            actnorm=True, linear="lu"),
    identity_at_init=False,  # ActNorm initialises from the first batch
)
# Three randomised flowified blocks (random funnel conditioners, scales divided on the sampling
# path) reach outputs ~1e3, where float32 differs from float64 by more than the absolute 1e-4 of
# test_to_dtype_and_device; two blocks exercise the same code.
ARCH_CASES["arch:flowified"] = Case(
    lambda d, c: build_flow("flowified", d, context_dim=c, num_layers=2, hidden_dims=HIDDEN))
ARCH_CASES["arch:flowified-leaky-householder"] = Case(
    lambda d, c: build_flow("flowified", d, context_dim=c, num_layers=2, hidden_dims=HIDDEN,
                            nonlinearity="leaky_relu", rotation="householder"),
    identity_at_init=False,  # LeakyReLU(0.5) is not the identity
)
ARCH_CASES["arch:nsf-affine"] = Case(
    lambda d, c: build_flow("nsf", d, context_dim=c, num_layers=2, hidden_dims=HIDDEN, affine=True,
                            count_bins=4))
ARCH_CASES["arch:nsf-coupling-affine-alternate"] = Case(
    lambda d, c: build_flow("nsf-coupling", d, context_dim=c, num_layers=2, hidden_dims=HIDDEN,
                            affine=True, mask="alternate"))
ARCH_CASES["arch:realnvp+tails"] = Case(
    lambda d, c: build_flow("realnvp", d, context_dim=c, num_layers=2, hidden_dims=HIDDEN,
                            tails="tukey"), identity_at_init=False)
ARCH_CASES["arch:iaf-random-softplus"] = Case(
    lambda d, c: build_flow("iaf", d, context_dim=c, num_layers=2, hidden_dims=HIDDEN,
                            permutation="random", scale="softplus"),
)

CASES = {**LAYER_CASES, **ARCH_CASES}
PARAMS = [
    pytest.param(name, cond, id=f"{name}-{'cond' if cond else 'plain'}")
    for name, case in CASES.items()
    for cond in (False, True)
    if case.conditional or not cond
]


def build(name, conditional, dim=DIM, randomize=True):
    flow = CASES[name].make(dim, CTX if conditional else None)
    if randomize:
        randomize_parameters(flow, scale=0.4)
    return flow


def core(flow):
    return flow.flow if isinstance(flow, ConditionalFlowTransform) else flow


def context_for(conditional, batch=(), seed=1):
    if not conditional:
        return None
    return torch.randn(*batch, CTX, generator=torch.Generator().manual_seed(seed))


# 1. shapes and broadcasting -----------------------------------------------------------------
SHAPES = [((), ()), ((3,), ()), ((3, 4), ()), ((3,), (3,)), ((3, 4), (4,)), ((5, 1), (3,))]


@pytest.mark.parametrize("name, conditional", PARAMS)
@pytest.mark.parametrize("x_batch, ctx_batch", SHAPES)
def test_shapes_and_broadcasting(name, conditional, x_batch, ctx_batch):
    if not conditional and ctx_batch:
        pytest.skip("context batch shapes only apply to conditional flows")
    flow = build(name, conditional)
    ctx = context_for(conditional, ctx_batch)
    x = torch.randn(*x_batch, DIM)
    batch = torch.broadcast_shapes(x_batch, ctx_batch)
    y, ladj = core(flow).call_and_ladj(x, ctx)
    assert y.shape == batch + (DIM,)
    assert ladj.shape == batch
    if core(flow).has_inverse:
        x_back, ladj_back = core(flow).inverse_and_ladj(y, ctx)
        assert x_back.shape == y.shape and ladj_back.shape == batch


@pytest.mark.parametrize("name, conditional", PARAMS)
def test_wrong_shapes_raise(name, conditional):
    flow = build(name, conditional, randomize=False)
    with pytest.raises(ValueError, match=r"event shape \(3,\).*got shape \(2, 5\)"):
        core(flow).call_and_ladj(torch.zeros(2, 5), context_for(conditional))
    if conditional:
        with pytest.raises(ValueError, match=r"last dimension 2, got shape \(4, 7\)"):
            flow.condition(torch.zeros(4, 7))
        with pytest.raises(ValueError, match="does not broadcast"):
            core(flow).call_and_ladj(torch.zeros(5, DIM), torch.zeros(4, CTX))
        with pytest.raises(ValueError, match="conditional"):
            core(flow).call_and_ladj(torch.zeros(5, DIM))


# 2. round trip --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, conditional", PARAMS)
def test_round_trip(name, conditional):
    flow = build(name, conditional)
    if not core(flow).has_inverse:
        with pytest.raises(NotImplementedError, match="no analytic inverse"):
            core(flow).inverse_and_ladj(torch.zeros(DIM), context_for(conditional))
        return
    check_round_trip(flow, torch.randn(4, 3, DIM), context_for(conditional, (3,)), atol=1e-9)


# 3. log-det vs autograd ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, conditional", PARAMS)
def test_log_det_matches_autograd(name, conditional):
    flow = build(name, conditional)
    check_log_det(flow, 1.5 * torch.randn(2, 3, DIM), context_for(conditional, (3,)), atol=1e-9)


@pytest.mark.parametrize("name, conditional", PARAMS)
def test_inverse_log_det_is_negative(name, conditional):
    flow = build(name, conditional)
    if not core(flow).has_inverse:
        pytest.skip("no analytic inverse")
    ctx = context_for(conditional)
    t = flow.condition(ctx) if conditional else flow
    y = torch.randn(5, DIM)
    x = t.inv(y)
    lp_inv = t.inv.log_abs_det_jacobian(y, x)
    assert torch.allclose(lp_inv, -t.log_abs_det_jacobian(x, y), atol=1e-10)
    jac = torch.autograd.functional.jacobian(lambda v: t.inv(v), y[0])
    assert torch.allclose(lp_inv[0], torch.linalg.slogdet(jac)[1], atol=1e-9)


# 4. structure -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, conditional", [p for p in PARAMS if
                                               CASES[p.values[0]].structure is not None])
def test_structure(name, conditional):
    flow = build(name, conditional, dim=5)
    ctx = context_for(conditional)
    x = torch.randn(4, 5)
    if CASES[name].structure == "autoregressive":
        check_triangular(flow, x, ctx)
    else:
        y, _ = core(flow).call_and_ladj(x, ctx)
        mask = core(flow).mask
        assert torch.equal(y[..., mask], x[..., mask])
        assert not torch.allclose(y[..., ~mask], x[..., ~mask])


# 5. one pass vs two passes ---------------------------------------------------------------------
@pytest.mark.parametrize("name, conditional", PARAMS)
def test_one_pass_matches_two_pass(name, conditional):
    flow = build(name, conditional)
    check_one_pass_matches_two_pass(flow, torch.randn(6, DIM), context_for(conditional, (6,)))


# 6. scoring a sample without inversion -------------------------------------------------------------
@pytest.mark.parametrize("name, conditional", PARAMS)
def test_sample_scored_without_inversion(name, conditional):
    flow = build(name, conditional)
    check_scored_without_inversion(flow, DIM, context_for(conditional, (2,)))


# 7. gradients -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, conditional", PARAMS)
def test_every_parameter_gets_a_finite_gradient(name, conditional):
    flow = build(name, conditional)
    check_finite_gradients(flow, torch.randn(8, DIM), context_for(conditional, (8,)))


# 8. identity at initialisation ----------------------------------------------------------------------
@pytest.mark.parametrize("name, conditional", PARAMS)
def test_identity_at_init(name, conditional):
    if not CASES[name].identity_at_init:
        pytest.skip("this transform does not start at the identity (documented)")
    flow = build(name, conditional, randomize=False)
    check_identity_at_init(flow, torch.randn(5, DIM), context_for(conditional, (5,)))


# 9. serialisation, repr, dtype and device ---------------------------------------------------------
@pytest.mark.parametrize("name, conditional", PARAMS)
def test_state_dict_round_trip(name, conditional):
    flow = build(name, conditional)
    check_state_dict_round_trip(flow, torch.randn(4, DIM), context_for(conditional, (4,)))


@pytest.mark.parametrize("name, conditional", PARAMS)
def test_to_dtype_and_device(name, conditional, device):
    flow = build(name, conditional)
    ctx = context_for(conditional)
    x = torch.randn(4, DIM)
    y64, l64 = core(flow).call_and_ladj(x, ctx)
    flow32 = flow.to(device=device, dtype=torch.float32)
    ctx32 = None if ctx is None else ctx.to(device, torch.float32)
    y32, l32 = core(flow32).call_and_ladj(x.to(device, torch.float32), ctx32)
    assert y32.dtype == torch.float32 and y32.device.type == device.type
    assert torch.allclose(y32.double().cpu(), y64, atol=1e-4)
    assert torch.allclose(l32.double().cpu(), l64, atol=1e-4)


# 10. registry completeness ---------------------------------------------------------------------------
EXEMPT = {
    "FlowTransform": "abstract base class",
    "ConditionalFlowTransform": "generic wrapper, exercised by every conditional case",
    "ConditionedFlow": "what condition() returns, exercised by every conditional case",
    "FlowStack": "exercised by every arch case",
}
COVERED = {
    "AffineAutoregressive", "ConditionalAffineAutoregressive", "Inverted", "AffineCoupling",
    "ConditionalAffineCoupling", "LULinear", "ActNorm", "Permute", "Sylvester",
    "ConditionalSylvester", "PyroLayer", "SVDLinear", "InvertibleLeakyReLU", "SharedSpline",
    "FlowifiedBijection", "Autoregressive", "ConditionalAutoregressive", "Coupling",
    "ConditionalCoupling", "TukeyTails",
}


def test_every_public_transform_is_covered_or_exempt():
    public = {
        n for n in T.__all__
        if isinstance(getattr(T, n), type)
        and issubclass(getattr(T, n), T.FlowTransform | ConditionalFlowTransform)
    }
    missing = public - COVERED - set(EXEMPT)
    assert not missing, f"add these to the invariant suite or EXEMPT: {sorted(missing)}"
    assert COVERED <= public


# Random shapes and inputs -------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(
    arch=st.sampled_from(["iaf", "maf", "realnvp", "nsf", "nsf-coupling", "sylvester-orthogonal",
                          "sylvester-triangular"]),
    dim=st.integers(1, 6),
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    conditional=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_round_trip_and_log_det(arch, dim, batch, conditional, seed):
    torch.set_default_dtype(torch.float64)
    flow = build_flow(arch, dim, context_dim=CTX if conditional else None, num_layers=2,
                      hidden_dims=[max(2 * dim, 4)])
    randomize_parameters(flow, scale=0.4, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(*batch, dim, generator=gen)
    ctx = torch.randn(*batch, CTX, generator=gen) if conditional else None
    if core(flow).has_inverse:
        check_round_trip(flow, x, ctx, atol=1e-8)
    check_log_det(flow, x.reshape(-1, dim)[:2], None if ctx is None else ctx.reshape(-1, CTX)[:2])
