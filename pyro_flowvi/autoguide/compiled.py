"""The captured training step of :class:`~pyro_flowvi.AutoFlowGuide`: the model's log density
and the whole SVI step traced once into one graph, optionally compiled."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import torch
from torch import Tensor

from pyro_flowvi.autoguide.flow_guide import AutoFlowGuide
from pyro_flowvi.autoguide.potential import UnconstrainedLogDensity
from pyro_flowvi.autoguide.score_direction import flow_and_jacobian, score_by_inverse, score_by_jacobian
from pyro_flowvi.flows import arch_spec
from pyro_flowvi.importance import subsampled_plates

__all__ = ["BACKENDS", "CaptureError", "CompiledSVI"]

BACKENDS = ("graph", "script", "inductor")
"""``"graph"``: run the traced aten graph as it is, from Python (traced in about a second);
``"script"``: the same graph run by TorchScript's interpreter (``torch.jit.trace`` of the graph,
a fraction of a second more; no Python between the operations, which is most of a small
model's step; TorchScript is deprecated upstream, so where it is missing or fails the step
warns and runs ``"graph"``); ``"inductor"``: ``torch.compile`` it (fused kernels; a first
compile takes seconds to tens of seconds on a CPU, cached on disk for the next run)."""


class CaptureError(RuntimeError):
    """The model's log density cannot be captured as one tensor function of the latents; the
    message says why.  Train with ``pyro.infer.Trace_ELBO`` instead."""


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


class CompiledSVI:
    r"""An SVI step for an :class:`~pyro_flowvi.AutoFlowGuide` as one traced (and optionally
    compiled) graph: base draws :math:`\varepsilon` in, then

    .. math::

        z = \mu + L f(\varepsilon),\qquad
        \ell = -\frac1M \sum_m \big[\log\tilde p(z_m) - \log q(z_m)\big],

    its gradients, per-tensor gradient-norm clipping and an Adam update, where
    :math:`\log\tilde p` is the model's log joint on the unconstrained latent vector
    (:class:`~pyro_flowvi.autoguide.potential.UnconstrainedLogDensity`, vectorised over the
    ``M`` draws with ``torch.vmap``, so the model need not broadcast over particles).  It is the
    estimator ``Trace_ELBO(num_particles=M, vectorize_particles=True)`` computes with the same
    draws, and the same update as ``PyroLRScheduler(LambdaLR, {"optimizer": Adam, ...},
    clip_args={"clip_norm": c})``.

    With ``stl`` (the guide's own setting by default) the gradient is the path derivative
    (sticking the landing): the score term is replaced by :math:`v^\top z` with
    :math:`v = \nabla_z \log q_{\bar\phi}(z)` under detached parameters, computed from the
    flow's Jacobian at :math:`\varepsilon` as :math:`v = J^{-\top} \nabla_\varepsilon[\log
    p_0(\varepsilon) - \log|\det J_f(\varepsilon)|]`: a linear solve instead of the flow's
    inverse (which an autoregressive flow computes in ``D`` sequential passes), so it works
    for flows without an analytic inverse too.

    A step whose loss or gradient is not finite leaves the parameters and the optimiser state
    unchanged (decided inside the graph, no host synchronisation); :meth:`step` returns that
    loss so the caller can count or stop.

    The model's data are captured as constants: calling :meth:`step` with other arguments
    (compared by identity) captures again.  :class:`CaptureError` says why a model cannot be
    captured: a plate that subsamples (new data each step), control flow that depends on the
    latents' values, or a log density that differs between calls (randomness in the model).

    Args:
        guide: an :class:`~pyro_flowvi.AutoFlowGuide`, called once (set up).
        num_particles: draws per step ``M``.
        lr: Adam's base rate; ``lr_factor(step)`` multiplies it (default 1).
        clip_norm: the largest gradient norm per parameter tensor (``None``: no clipping).
        betas, eps: Adam's.
        stl: the path-derivative gradient (default: the guide's ``stl``).
        backend: one of :data:`BACKENDS`.  If TorchScript or ``torch.compile`` fails, the step
            warns and runs the traced graph.

    Example:
        >>> import pyro.distributions as dist
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     pyro.sample("y", dist.Normal(mu, 1.0).expand([3]).to_event(1), obs=y)
        >>> y = torch.tensor([0.9, 1.1, 1.3])
        >>> guide = AutoFlowGuide(model, num_layers=1, hidden_dims=[8], warm_start=None)
        >>> _ = guide(y)
        >>> svi = CompiledSVI(guide, lr=0.05)
        >>> losses = [svi.step(y) for _ in range(300)]
        >>> round(float(guide.median(y)["mu"]), 1)  # the posterior mean is 1.1
        1.1
    """

    def __init__(self, guide: AutoFlowGuide, *, num_particles: int = 8, lr: float = 1e-2,
                 lr_factor: Callable[[int], float] | None = None,
                 clip_norm: float | None = 10.0, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, stl: bool | None = None, backend: str = "script") -> None:
        if not isinstance(guide, AutoFlowGuide):
            raise TypeError(f"CompiledSVI: the guide must be an AutoFlowGuide, got "
                            f"{type(guide).__name__}")
        if guide.prototype_trace is None:
            raise ValueError("CompiledSVI: call the guide once first (its latent layout is set "
                             "up on the first call)")
        if backend not in BACKENDS:
            raise ValueError(f"CompiledSVI: backend must be one of {BACKENDS}, got {backend!r}")
        if not (isinstance(num_particles, int) and num_particles >= 1):
            raise ValueError(f"CompiledSVI: num_particles must be a positive integer, got "
                             f"{num_particles!r}")
        self.guide, self.model = guide, guide.model
        self.num_particles, self.lr, self.clip_norm = num_particles, float(lr), clip_norm
        self.lr_factor = lr_factor if lr_factor is not None else (lambda step: 1.0)
        self.betas, self.adam_eps = betas, eps
        self.stl = guide.stl if stl is None else bool(stl)
        self.backend = backend
        self.score_by_inverse = bool(guide._modules["flow"].has_inverse
                                     and not arch_spec(guide.arch).autoregressive)
        """STL's ``grad_z log q`` through the flow's inverse where that is one pass (coupling
        and elementwise flows); from the flow's Jacobian (a solve) where the inverse is ``D``
        sequential passes (autoregressive flows) or does not exist."""
        self.num_steps = 0
        self.names = [guide._pyro_get_fullname(n) for n in ("affine_white", "flow_packed")]
        params = self.params
        self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        self.count = params[0].new_zeros(())  # Adam's step count (updates applied)
        self._captured: tuple[tuple, dict] | None = None
        self._fn: Callable | None = None

    @property
    def params(self) -> list[Tensor]:
        """The unconstrained ``affine_white`` and ``flow_packed`` tensors of the param store
        (looked up on each use: loading a param-store state replaces them)."""
        store = pyro.get_param_store()
        return [store.get_param(name).unconstrained() for name in self.names]

    # -- the traced function ----------------------------------------------------------------------
    def _loss_and_grads(self, potential: Callable[[Tensor], Tensor], affine: Tensor,
                        flat: Tensor, eps: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The loss on the draws ``eps`` and its gradients in ``affine`` and ``flat``.  The flow
        computes with one leaf tensor per parameter (sharing ``flat``'s memory) and their
        gradients are concatenated once: differentiating through views of ``flat`` would add
        one ``flat``-sized gradient per view."""
        layout = self.guide._flow_layout
        with torch.enable_grad():
            a = affine.detach().requires_grad_()
            parts = [v.detach().requires_grad_() for v in layout.views(flat.detach())]
            value, loss = self._loss_terms(potential, a, flat, eps, parts=parts)
            grads = torch.autograd.grad(loss, [a, *parts], allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g
                 for x, g in zip([a, *parts], grads, strict=True)]
        flat_grad = torch.cat([g.reshape(-1) for g in grads[1:]]) if parts else \
            torch.zeros_like(flat)
        return value.detach(), [grads[0], flat_grad]

    def _loss_terms(self, potential: Callable[[Tensor], Tensor], affine: Tensor, flat: Tensor,
                    eps: Tensor, value_only: bool = False, parts: list[Tensor] | None = None
                    ) -> tuple[Tensor, Tensor]:
        """(loss value, loss to differentiate) on the draws ``eps``; the flow computes with
        ``parts`` (tensors per parameter) where given, else with views of ``flat``."""
        guide = self.guide
        flow = guide._live_flow(flat if parts is None else parts)
        loc, scale = guide._loc_scale(affine)
        stl = self.stl and not value_only
        jac = None
        if stl and not self.score_by_inverse:  # one pass: the draws, log-det and Jacobian
            u, flow_ladj, jac = flow_and_jacobian(flow, eps)
        else:
            u, flow_ladj = flow.call_and_ladj(eps)
        diagonal = scale.dim() == 1
        z = loc + (u * scale if diagonal else u @ scale.transpose(-1, -2))
        log_det_scale = (scale if diagonal else scale.diagonal()).log().sum()
        log_q = guide.get_base_dist().log_prob(eps) - flow_ladj - log_det_scale
        log_p = potential(z)
        value = -(log_p - log_q).mean()
        if not stl:
            return value, value
        if jac is None:
            v = score_by_inverse(guide._frozen_flow(flat), guide.get_base_dist(), loc.detach(),
                                 scale.detach(), z.detach())
        else:
            v = score_by_jacobian(guide.get_base_dist(), scale.detach(), eps, jac)
        path = (v * z).sum(-1)
        return value, -(log_p - log_q.detach() - (path - path.detach())).mean()

    def _step_fn(self, potential: Callable[[Tensor], Tensor]) -> Callable:
        beta1, beta2 = self.betas

        def step(eps: Tensor, lr: Tensor, count: Tensor, affine: Tensor, flat: Tensor,
                 m_a: Tensor, v_a: Tensor, m_f: Tensor, v_f: Tensor) -> tuple[Tensor, Tensor]:
            """Updates the parameters and the Adam moments in place (few passes over memory and
            no new parameter-sized tensors: at large ``D`` the update is memory bound); returns
            the loss (NaN when the step was skipped) and the new count of applied steps."""
            value, grads = self._loss_and_grads(potential, affine, flat, eps)
            norms = [g.norm() for g in grads]  # not finite iff some element is not
            ok = torch.isfinite(value)
            for norm in norms:
                ok = ok & torch.isfinite(norm)
            t = count + ok.to(count.dtype)
            t_safe = t.clamp(min=1)
            bias1, bias2 = 1 - beta1 ** t_safe, 1 - beta2 ** t_safe
            step_size = torch.where(ok, lr / bias1, torch.zeros_like(lr))
            for p, g, m, v, norm in ((affine, grads[0], m_a, v_a, norms[0]),
                                     (flat, grads[1], m_f, v_f, norms[1])):
                coef = torch.ones_like(norm)
                if self.clip_norm is not None:  # as torch.nn.utils.clip_grad_norm_, per tensor
                    coef = torch.clamp(self.clip_norm / (norm + 1e-6), max=1.0)
                g.masked_fill_(~ok, 0.0).mul_(coef)  # a skipped step moves nothing
                m.lerp_(g, (1 - beta1) * ok.to(g.dtype))
                v.mul_(1 - (1 - beta2) * ok.to(g.dtype)).addcmul_(g, g, value=1 - beta2)
                update = g.copy_(v).sqrt_().div_(bias2.sqrt()).add_(self.adam_eps)  # g's memory
                p.sub_(update.reciprocal_().mul_(m).mul_(step_size))
            return torch.where(ok, value, torch.full_like(value, math.nan)), t

        return step

    # -- capture ------------------------------------------------------------------------------
    def potential(self, args: tuple, kwargs: dict) -> Callable[[Tensor], Tensor]:
        """The model's log density on ``(M, D)`` unconstrained draws: one model run per draw
        under ``torch.vmap`` (the model need not broadcast), or, where an operation has no
        vmap rule, one run over a plate of the ``M`` draws (as vectorised ``Trace_ELBO``);
        :class:`CaptureError` if the model subsamples or neither runs."""
        with pyro.validation_enabled(False):
            plates = subsampled_plates(self.model, *args, **kwargs)
            if plates:
                raise CaptureError(
                    f"the model subsamples the plate {plates[0].name!r} "
                    f"({plates[0].subsample_size} of {plates[0].size}), so its data change every "
                    "step")
            density = UnconstrainedLogDensity(self.guide, args, kwargs, full_data=False)
        probe = self.guide.loc.detach().expand(2, -1)
        failures = []
        for batched in (torch.vmap(density), density):

            def log_density(z: Tensor, batched: Callable = batched) -> Tensor:
                with pyro.validation_enabled(False):  # its NaN checks are host-side control flow
                    return batched(z)

            try:
                with torch.no_grad():
                    log_density(probe)
                return log_density
            except Exception as err:  # noqa: BLE001 - try the next way, then report both
                failures.append(_first_line(err))
        raise CaptureError(f"the model's log density runs neither under torch.vmap ({failures[0]}) "
                           f"nor over a plate of draws ({failures[1]})")

    def capture(self, *args: Any, **kwargs: Any) -> None:
        """Trace the step for the model arguments ``args, kwargs`` (and compile it with the
        ``"inductor"`` backend); :class:`CaptureError` if the model does not allow it.  The
        random state is left as it was (the example draws are not part of the stream)."""
        rng = pyro.util.get_rng_state()
        try:
            self._capture(args, kwargs)
        finally:
            pyro.util.set_rng_state(rng)

    def _capture(self, args: tuple, kwargs: dict) -> None:
        from torch.fx.experimental.proxy_tensor import make_fx

        potential = self.potential(args, kwargs)
        example = self._inputs(self._draw(), copies=True)
        if self.stl and self.score_by_inverse:
            self.guide._frozen_flow()  # build the detached twin (a deep copy) before tracing
        with pyro.validation_enabled(False), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                graph = make_fx(self._step_fn(potential))(*example)
            except Exception as err:  # noqa: BLE001 - any failure means "not capturable"
                raise CaptureError(
                    "tracing the model's log density failed (control flow that depends on the "
                    f"latents' values, or an operation without a vmap rule?): {_first_line(err)}"
                ) from err
        self._check(graph, potential)
        fn = graph if self.backend == "graph" else self._run_by_backend(graph, example)
        self._fn, self._captured = fn, (args, kwargs)

    def _check(self, graph: Callable, potential: Callable) -> None:
        """The traced step must reproduce the eager loss on fresh draws: a model whose log
        density changes between calls (randomness, hidden state) is refused."""
        with torch.no_grad(), pyro.validation_enabled(False):
            for scale in (1.0, 2.0):
                inputs = self._inputs(scale * self._draw(), copies=True)
                traced = graph(*inputs)[0]
                eager = self._loss_terms(potential, self.params[0], self.params[1], inputs[0],
                                         value_only=True)[0]
                if not (torch.isfinite(eager) and torch.isfinite(traced)):
                    continue
                if not torch.allclose(traced, eager, rtol=1e-4, atol=1e-4 * (1 + float(
                        eager.abs()))):
                    raise CaptureError(
                        f"the traced log density disagrees with the model's ({float(traced):.6g} "
                        f"vs {float(eager):.6g} on the same draws): the model's density changes "
                        "between calls or depends on Python-side state")

    def _run_by_backend(self, graph: Callable, example: tuple) -> Callable:
        """The traced graph as the backend runs it; warns and returns the graph itself if the
        backend fails (never crashes)."""
        what = "torch.compile" if self.backend == "inductor" else "TorchScript"
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's
                if self.backend == "inductor":
                    fn = torch.compile(graph, fullgraph=True, dynamic=False)
                else:
                    fn = torch.jit.trace(graph, example, check_trace=False)
                fn(*example)  # compiles (inductor) or runs TorchScript's profiling pass
            return fn
        except Exception as err:  # noqa: BLE001 - fall back, never crash
            warnings.warn(f"CompiledSVI: {what} failed ({_first_line(err)}); running the traced "
                          "graph from Python instead", stacklevel=3)
            self.backend = "graph"
            return graph

    # -- running --------------------------------------------------------------------------------
    def _draw(self) -> Tensor:
        return self.guide.get_base_dist().sample((self.num_particles,))

    def _inputs(self, eps: Tensor, copies: bool = False) -> tuple[Tensor, ...]:
        """The step's inputs; the step updates the last six in place, so ``copies`` gives
        copies of them (for runs that must change nothing: tracing, checks, warm-up)."""
        affine, flat = self.params
        lr = affine.new_tensor(self.lr * self.lr_factor(self.num_steps))
        (m_a, v_a), (m_f, v_f) = self.state
        mutable = (self.count, affine.detach(), flat.detach(), m_a, v_a, m_f, v_f)
        if copies:
            mutable = tuple(x.clone() for x in mutable)
        return (eps, lr, *mutable)

    def step(self, *args: Any, **kwargs: Any) -> float:
        """One step on fresh base draws; returns the loss (-ELBO estimate) of the parameters
        before the update, or NaN when the step was skipped (a non-finite loss or gradient;
        nothing changed)."""
        captured = self._captured
        if captured is None or len(captured[0]) != len(args) or any(
                a is not b for a, b in zip(captured[0], args, strict=False)) or \
                captured[1].keys() != kwargs.keys() or any(
                kwargs[k] is not v for k, v in captured[1].items()):
            self.capture(*args, **kwargs)
        assert self._fn is not None
        with torch.no_grad():  # the parameters and moments change in place
            value, self.count = self._fn(*self._inputs(self._draw()))
        loss = float(value)
        if math.isfinite(loss):
            self.num_steps += 1  # the rate schedule counts applied steps, as LambdaLR would
        return loss

    def get_state(self) -> dict[str, Any]:
        """The optimiser state (Adam moments, step counts), for a checkpoint."""
        return {"state": [(m.clone(), v.clone()) for m, v in self.state],
                "count": self.count.clone(), "num_steps": self.num_steps}

    def set_state(self, state: dict[str, Any]) -> None:
        self.state = [(m.clone(), v.clone()) for m, v in state["state"]]
        self.count = state["count"].clone()
        self.num_steps = int(state["num_steps"])

    def loss_and_grads(self, eps: Tensor, *args: Any, **kwargs: Any
                       ) -> tuple[Tensor, list[Tensor]]:
        """The loss and its gradients with respect to ``affine_white`` and ``flow_packed`` on the
        base draws ``eps`` ``(M, D)``, computed eagerly by the function the step traces (for
        checks against ``Trace_ELBO`` on the same draws)."""
        potential = self.potential(args, kwargs)
        return self._loss_and_grads(potential, *self.params, eps)

    def evaluate_loss(self, *args: Any, **kwargs: Any) -> float:
        """The loss on fresh draws without updating (as ``SVI.evaluate_loss``)."""
        potential = self.potential(args, kwargs)
        with torch.no_grad(), pyro.validation_enabled(False):
            value = self._loss_terms(potential, self.params[0], self.params[1], self._draw(),
                                     value_only=True)[0]
        return float(value) if math.isfinite(float(value)) else float("nan")
