"""Invariant checks every flow must pass; used by the test suite and by ``register_arch`` users.

Each check raises ``AssertionError`` with a readable message.  Run them in float64: the log-det
checks compare against the autograd Jacobian, ``log|det J| = slogdet(d f / d x)``.

Example:
    >>> from pyro_flowvi import build_flow
    >>> flow = build_flow("realnvp", dim=3, num_layers=2, hidden_dims=[8]).double()
    >>> check_flow(flow, torch.randn(4, 3, dtype=torch.float64))
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch import Tensor

from pyro_flowvi.transforms.base import ConditionalFlowTransform, FlowTransform

__all__ = [
    "AnyFlow",
    "check_finite_gradients",
    "check_flow",
    "check_identity_at_init",
    "check_log_det",
    "check_one_pass_matches_two_pass",
    "check_round_trip",
    "check_scored_without_inversion",
    "check_state_dict_round_trip",
    "check_triangular",
    "randomize_parameters",
]

AnyFlow = FlowTransform | ConditionalFlowTransform


def _core(flow: AnyFlow) -> FlowTransform:
    return flow.flow if isinstance(flow, ConditionalFlowTransform) else flow


def _bound(flow: AnyFlow, context: Tensor | None) -> torch.distributions.Transform:
    return flow.condition(context) if isinstance(flow, ConditionalFlowTransform) else flow


def _forward_fn(flow: AnyFlow, context: Tensor | None) -> Callable[[Tensor], Tensor]:
    core = _core(flow)
    return lambda v: core.call_and_ladj(v, context)[0]


def _clear(flow: AnyFlow) -> None:
    for m in flow.modules():
        if isinstance(m, FlowTransform):
            m.clear_cache()


def randomize_parameters(flow: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    """Overwrite every parameter with ``N(0, scale^2)`` noise so that checks are not trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device))


def check_round_trip(flow: AnyFlow, x: Tensor, context: Tensor | None = None,
                     atol: float = 1e-8) -> None:
    """``f^{-1}(f(x)) = x`` with caches cleared, and the inverse's ladj equals the forward's."""
    core = _core(flow)
    y, ladj = core.call_and_ladj(x, context)
    _clear(flow)
    x_back, ladj_back = core.inverse_and_ladj(y.detach().clone(), context)
    err = (x_back - x).abs().max().item()
    assert err < atol, f"{type(core).__name__}: round trip error {err:.3g} >= {atol}"
    lerr = (ladj_back - ladj).abs().max().item()
    assert lerr < atol, f"{type(core).__name__}: inverse ladj differs from forward by {lerr:.3g}"


def _per_element(x: Tensor, context: Tensor | None) -> list[tuple[Tensor, Tensor | None]]:
    if context is None:
        return [(v, None) for v in x.reshape(-1, x.shape[-1])]
    batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    xs = x.expand(batch + x.shape[-1:]).reshape(-1, x.shape[-1])
    cs = context.expand(batch + context.shape[-1:]).reshape(-1, context.shape[-1])
    return list(zip(xs, cs, strict=True))


def check_log_det(flow: AnyFlow, x: Tensor, context: Tensor | None = None,
                  atol: float = 1e-8) -> None:
    """``log|det J|`` equals ``slogdet`` of the autograd Jacobian at every batch element."""
    core = _core(flow)
    _, ladj = core.call_and_ladj(x, context)
    for k, (xi, ci) in enumerate(_per_element(x, context)):
        jac = torch.autograd.functional.jacobian(_forward_fn(flow, ci), xi)
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0, f"{type(core).__name__}: singular Jacobian at batch element {k}"
        got = ladj.reshape(-1)[k]
        err = (got - logabs).abs().item()
        assert err < atol, (
            f"{type(core).__name__}: log|det J| = {got.item():.10g} but autograd gives "
            f"{logabs.item():.10g} (element {k})"
        )


def check_triangular(flow: AnyFlow, x: Tensor, context: Tensor | None = None,
                     atol: float = 1e-12) -> None:
    """An autoregressive layer's Jacobian is lower triangular in its ``order``."""
    core = _core(flow)
    order = core.order  # type: ignore[attr-defined]
    for xi, ci in _per_element(x, context):
        jac = torch.autograd.functional.jacobian(_forward_fn(flow, ci), xi)
        permuted = jac[order][:, order]
        upper = torch.triu(permuted, 1).abs().max().item() if core.dim > 1 else 0.0
        assert upper < atol, f"{type(core).__name__}: Jacobian not triangular in order ({upper})"


def check_one_pass_matches_two_pass(flow: AnyFlow, x: Tensor, context: Tensor | None = None,
                                    atol: float = 1e-10) -> None:
    """``call_and_ladj`` agrees with ``f(x)`` then ``log_abs_det_jacobian``, cached or not."""
    core = _core(flow)
    y1, l1 = core.call_and_ladj(x, context)
    t = _bound(flow, context)
    _clear(flow)
    y2 = t(x)
    l_cached = t.log_abs_det_jacobian(x, y2)
    t.clear_cache()  # type: ignore[attr-defined]
    l_fresh = t.log_abs_det_jacobian(x, y2)
    for name, a, b in (("y", y1, y2), ("cached ladj", l1, l_cached), ("fresh ladj", l1, l_fresh)):
        err = (a - b).abs().max().item()
        assert err < atol, f"{type(core).__name__}: one-pass vs two-pass {name} differ by {err}"


def check_scored_without_inversion(flow: AnyFlow, dim: int, context: Tensor | None = None,
                                   num_samples: int = 7, atol: float = 1e-10) -> None:
    """``rsample`` then ``log_prob`` never calls the inverse, and equals base lp minus ladj."""
    dtype = next(iter(flow.parameters()), torch.empty(0)).dtype
    device = next(iter(flow.parameters()), torch.empty(0)).device
    base = dist.Normal(torch.zeros(dim, dtype=dtype, device=device), 1.0).to_event(1)
    if isinstance(flow, ConditionalFlowTransform):
        q = dist.ConditionalTransformedDistribution(base, [flow]).condition(context)
    else:
        q = dist.TransformedDistribution(base, [flow])
    patched = [_core(flow)]  # inner layers may legitimately invert (an Inverted layer's forward)
    saved = [m._inverse_and_ladj for m in patched]

    def refuse(*args: object) -> None:
        raise AssertionError("the inverse was called while scoring the flow's own sample")

    try:
        for m in patched:
            m._inverse_and_ladj = refuse  # type: ignore[method-assign]
        batch = () if context is None else tuple(context.shape[:-1])
        z = q.rsample((num_samples, *batch))
        lp = q.log_prob(z)
    finally:
        for m, fn in zip(patched, saved, strict=True):
            m._inverse_and_ladj = fn  # type: ignore[method-assign]
    t = q.transforms[0]
    eps = t._last[0]  # type: ignore[attr-defined]
    expected = base.log_prob(eps) - t._last[2]  # type: ignore[attr-defined]
    err = (lp - expected).abs().max().item()
    assert err < atol, f"{type(_core(flow)).__name__}: log q differs from lp - ladj by {err}"


def check_finite_gradients(flow: AnyFlow, x: Tensor, context: Tensor | None = None) -> None:
    """Every parameter receives a finite, non-zero gradient from ``sum(y) + sum(ladj)``."""
    if not any(True for _ in flow.parameters()):
        return
    flow.zero_grad()
    y, ladj = _core(flow).call_and_ladj(x, context)
    (y.square().sum() + ladj.sum()).backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None, f"parameter {name} received no gradient"
        assert torch.isfinite(p.grad).all(), f"parameter {name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"parameter {name} has an all-zero gradient"


def check_identity_at_init(flow: AnyFlow, x: Tensor, context: Tensor | None = None,
                           atol: float = 1e-10) -> None:
    """At construction the flow is the identity map with zero log-det."""
    y, ladj = _core(flow).call_and_ladj(x, context)
    err = (y - x).abs().max().item()
    assert err < atol, f"{type(_core(flow)).__name__}: not the identity at init ({err:.3g})"
    assert ladj.abs().max().item() < atol, "log-det is not zero at init"


def check_state_dict_round_trip(flow: AnyFlow, x: Tensor, context: Tensor | None = None) -> None:
    """``state_dict`` save/load into a fresh copy reproduces the log-probs exactly."""
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    clone = copy.deepcopy(flow)
    randomize_parameters(clone, seed=123)
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    y1, l1 = _core(flow).call_and_ladj(x, context)
    y2, l2 = _core(clone).call_and_ladj(x, context)
    assert torch.equal(y1, y2) and torch.equal(l1, l2), "state_dict round trip changed outputs"
    assert repr(flow)


def check_flow(flow: AnyFlow, x: Tensor, context: Tensor | None = None,
               atol: float = 1e-8) -> None:
    """Run every applicable invariant on ``flow`` at ``x`` (float64 recommended)."""
    core = _core(flow)
    if core.has_inverse:
        check_round_trip(flow, x, context, atol)
    check_log_det(flow, x, context, atol)
    check_one_pass_matches_two_pass(flow, x, context, atol)
    check_scored_without_inversion(flow, core.dim, context, atol=atol)
    check_state_dict_round_trip(flow, x, context)
