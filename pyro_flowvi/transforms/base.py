"""One-pass flow transforms: the base classes every pyro_flowvi bijector derives from.

A flow layer implements a single method, ``_call_and_ladj(x, context)``, returning the output and
``log|det J_f(x)|`` of the forward (sampling) map in one pass, and, when it has one,
``_inverse_and_ladj(y, context)`` returning ``x = f^{-1}(y)`` together with the *forward* log-det at
that ``x``.  Everything Pyro and ``torch.distributions`` expect (``_call``, ``_inverse``,
``log_abs_det_jacobian``, the ``(x, y)`` cache, ``.inv``, ``condition``) is derived here, once.

The density of a flow sample follows from the change of variables

.. math::

    \\log q(z) = \\log p_{\\text{base}}(\\varepsilon) - \\log\\left|\\det J_f(\\varepsilon)\\right|,
    \\qquad z = f(\\varepsilon),

so scoring a sample the flow has just drawn needs only the log-det cached during the forward pass:
no inversion ever happens inside an SVI step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform, constraints

from pyro_flowvi.transforms.checks import check_context, check_event

__all__ = [
    "ConditionalFlowTransform",
    "ConditionedFlow",
    "FlowStack",
    "FlowTransform",
    "Inverted",
    "check_context",
    "check_event",
]


class _OnePassCache:
    """Derives ``_call``, ``_inverse`` and ``log_abs_det_jacobian`` from one-pass primitives.

    Subclasses provide ``_bound_forward(x) -> (y, ladj)`` and ``_bound_inverse(y) -> (x, ladj)``
    (``ladj`` always being the forward map's log-det at ``x``).  The last ``(x, y, ladj)`` triple is
    kept in a single slot so that ``log_abs_det_jacobian(x, y)`` right after a call is free.
    """

    _last: tuple[Tensor, Tensor, Tensor] | None

    def _bound_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _bound_inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _call(self, x: Tensor) -> Tensor:
        y, ladj = self._bound_forward(x)
        self._last = (x, y, ladj)
        return y

    def _inverse(self, y: Tensor) -> Tensor:
        x, ladj = self._bound_inverse(y)
        self._last = (x, y, ladj)
        return x

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """``log|det J_f(x)|`` with batch shape; free when ``(x, y)`` is the last pair seen."""
        last = self._last
        if last is not None and last[0] is x and last[1] is y:
            return last[2]
        return self._bound_forward(x)[1]

    def __getstate__(self) -> dict:
        # Cached tensors belong to someone's autograd graph: never copy or pickle them.
        state = super().__getstate__()  # type: ignore[misc]
        state["_last"] = None
        state["_cached_x_y"] = (None, None)
        return state

    def clear_cache(self) -> None:
        """Forget the cached ``(x, y)`` pair and log-det (forces recomputation)."""
        self._last = None
        self._cached_x_y = (None, None)  # torch.distributions.Transform's own cache


class FlowTransform(_OnePassCache, TransformModule):
    """Base class of every pyro_flowvi bijector on ``R^dim`` (event dim 1).

    Contract for subclasses:

    * ``_call_and_ladj(x, context) -> (y, ladj)``: forward (sampling-direction) map and
      ``log|det df/dx|`` with the batch shape of ``broadcast(x, context)``.
    * ``_inverse_and_ladj(y, context) -> (x, ladj)``: only when ``has_inverse``; ``ladj`` is the
      forward log-det at the returned ``x`` (so the inverse map's log-det is ``-ladj``).
    * ``context`` is ``None`` unless the layer was built with ``context_dim``.

    Class attributes declare capabilities: ``has_inverse`` (an analytic inverse exists),
    ``autoregressive``.  A layer built with ``context_dim`` is used through
    :class:`ConditionalFlowTransform` (``.condition(context)``).

    Example:
        >>> from pyro_flowvi.transforms import Permute
        >>> t = Permute(torch.tensor([1, 0]))
        >>> t(torch.tensor([1.0, 2.0]))
        tensor([2., 1.])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    has_inverse: bool = True
    autoregressive: bool = False

    def __init__(self, dim: int, context_dim: int | None = None) -> None:
        super().__init__(cache_size=1)
        if int(dim) < 1:
            raise ValueError(f"{type(self).__name__}: dim must be a positive integer, got {dim}")
        if context_dim is not None and int(context_dim) < 1:
            raise ValueError(
                f"{type(self).__name__}: context_dim must be a positive integer or None, "
                f"got {context_dim}"
            )
        self.dim = int(dim)
        self.context_dim = None if context_dim is None else int(context_dim)
        self._last = None

    # -- subclass API ---------------------------------------------------------------------------
    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(
            f"{type(self).__name__} has no analytic inverse (has_inverse=False): it can sample and "
            "score its own samples (cached), but cannot evaluate the density of arbitrary points."
        )

    # -- checked public API ---------------------------------------------------------------------
    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Forward map and its log-det in one pass, after checking shapes."""
        name = type(self).__name__
        check_event(name, x, self.dim)
        check_context(name, x, context, self.context_dim)
        return self._call_and_ladj(x, context)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Inverse map and the forward log-det at the returned point, after checking shapes."""
        name = type(self).__name__
        check_event(name, y, self.dim)
        check_context(name, y, context, self.context_dim)
        return self._inverse_and_ladj(y, context)

    @property
    def sign(self) -> int:
        # torch's Transform.sign raises NotImplementedError, which escapes ``hasattr`` and so
        # broke torch.jit.trace_module of any module holding a flow (it probes every attribute).
        # A layer's determinant sign is not tracked: report it as a missing attribute instead.
        raise AttributeError(f"{type(self).__name__} does not define a determinant sign")

    def _bound_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.call_and_ladj(x, None)

    def _bound_inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inverse_and_ladj(y, None)

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)

    def __hash__(self) -> int:
        return TransformModule.__hash__(self)

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        self._last = None
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]


class ConditionedFlow(_OnePassCache, Transform):
    """A conditional flow with its context bound: a plain ``Transform`` over ``R^dim``.

    Returned by :meth:`ConditionalFlowTransform.condition`; it owns no parameters (they live in
    the conditional module) and keeps its own one-slot cache.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, flow: FlowTransform, context: Tensor) -> None:
        super().__init__(cache_size=1)
        check_context(type(flow).__name__, context.new_zeros(flow.dim), context, flow.context_dim)
        self.flow = flow
        self.context = context
        self.has_inverse = flow.has_inverse
        self._last = None

    def _bound_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.flow.call_and_ladj(x, self.context)

    def _bound_inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.flow.inverse_and_ladj(y, self.context)


class ConditionalFlowTransform(ConditionalTransformModule):
    """The generic conditional twin: wraps a :class:`FlowTransform` built with ``context_dim``.

    ``condition(context)`` binds the context and returns a :class:`ConditionedFlow`; the math is
    the wrapped flow's, written once.  Every ``Conditional...`` class in pyro_flowvi is this
    wrapper around its plain twin.

    Example:
        >>> from pyro_flowvi.transforms import AffineCoupling
        >>> cflow = ConditionalFlowTransform(AffineCoupling(3, context_dim=2, hidden_dims=[8]))
        >>> cflow.condition(torch.zeros(5, 2))(torch.zeros(5, 3)).shape
        torch.Size([5, 3])
    """

    def __init__(self, flow: FlowTransform) -> None:
        super().__init__()
        if flow.context_dim is None:
            raise ValueError(
                f"ConditionalFlowTransform: {type(flow).__name__} was built without context_dim; "
                "build it with context_dim=... to make it conditional."
            )
        self.flow = flow

    @property
    def dim(self) -> int:
        return self.flow.dim

    @property
    def context_dim(self) -> int:
        assert self.flow.context_dim is not None
        return self.flow.context_dim

    @property
    def has_inverse(self) -> bool:
        return self.flow.has_inverse

    def condition(self, context: Tensor) -> ConditionedFlow:
        """Bind ``context`` (shape ``(..., context_dim)``), returning a plain transform."""
        if not isinstance(context, Tensor):
            raise TypeError(
                f"ConditionalFlowTransform.condition: the context must be a tensor of shape "
                f"(..., {self.context_dim}), got {type(context).__name__}; convert it with "
                "torch.as_tensor(h, dtype=..., device=...).")
        return ConditionedFlow(self.flow, context)

    def forward(self, *args: object, **kwargs: object) -> None:
        raise TypeError(
            f"ConditionalFlowTransform: a conditional flow (context_dim={self.context_dim}) is "
            "not called directly; bind the context first: flow.condition(h)(x), with h of shape "
            f"(..., {self.context_dim}).")

    def __hash__(self) -> int:
        return ConditionalTransformModule.__hash__(self)


class Inverted(FlowTransform):
    """The inverse of a flow layer as a layer of its own (e.g. MAF = ``Inverted(IAF layer)``).

    .. math::  g = f^{-1}, \\qquad \\log|\\det J_g(y)| = -\\log|\\det J_f(f^{-1}(y))|.

    Its forward pass is the wrapped layer's inverse, so for an autoregressive layer sampling
    becomes sequential (O(dim) network passes) while density evaluation becomes one pass.

    Example:
        >>> from pyro_flowvi.transforms import Permute
        >>> Inverted(Permute(torch.tensor([1, 2, 0])))(torch.tensor([0.0, 1.0, 2.0]))
        tensor([2., 0., 1.])
    """

    def __init__(self, layer: FlowTransform) -> None:
        if not layer.has_inverse:
            raise ValueError(f"Inverted: {type(layer).__name__} has no analytic inverse")
        super().__init__(layer.dim, layer.context_dim)
        self.layer = layer
        self.autoregressive = layer.autoregressive

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u, ladj = self.layer._inverse_and_ladj(x, context)
        return u, -ladj

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u, ladj = self.layer._call_and_ladj(y, context)
        return u, -ladj


def _broadcast_to_context(x: Tensor, context: Tensor | None) -> Tensor:
    if context is None:
        return x
    batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    return x.expand(batch + x.shape[-1:])


class FlowStack(FlowTransform):
    """A composition of flow layers that sums the per-layer log-dets in the same loop.

    .. math::

        f = f_K \\circ \\cdots \\circ f_1, \\qquad
        \\log|\\det J_f(x)| = \\sum_{k=1}^{K} \\log|\\det J_{f_k}(x_{k-1})|,\\quad x_0 = x.

    The context (if any) is passed to the layers built with a ``context_dim``; the others ignore
    it.  ``has_inverse`` holds when every layer has one.  With no layers (give ``dim``) the
    stack is the identity: the ``"gaussian"`` architecture.

    Example:
        >>> from pyro_flowvi.transforms import AffineCoupling, Permute
        >>> stack = FlowStack([AffineCoupling(2, hidden_dims=[8]), Permute(torch.tensor([1, 0]))])
        >>> y, ladj = stack.call_and_ladj(torch.zeros(4, 2))
        >>> y.shape, ladj.shape
        (torch.Size([4, 2]), torch.Size([4]))
    """

    def __init__(self, layers: Iterable[FlowTransform], context_dim: int | None = None,
                 dim: int | None = None) -> None:
        layers = list(layers)
        dims = {layer.dim for layer in layers} | ({int(dim)} if dim is not None else set())
        if not dims:
            raise ValueError("FlowStack: give at least one layer, or dim for the identity stack")
        if len(dims) != 1:
            raise ValueError(f"FlowStack: all layers must share one dim, got dims {sorted(dims)}")
        for layer in layers:
            if layer.context_dim is not None and layer.context_dim != context_dim:
                raise ValueError(
                    f"FlowStack: layer {type(layer).__name__} has context_dim="
                    f"{layer.context_dim} but the stack has context_dim={context_dim}"
                )
        super().__init__(dims.pop(), context_dim)
        self.layers = nn.ModuleList(layers)
        self.has_inverse = all(layer.has_inverse for layer in layers)
        self.autoregressive = any(layer.autoregressive for layer in layers)
        self._takes_context = [layer.context_dim is not None for layer in layers]

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        total: Tensor | None = None
        for layer, takes in zip(self.layers, self._takes_context, strict=True):
            x, ladj = layer._call_and_ladj(x, context if takes else None)
            total = ladj if total is None else total + ladj
        if total is None:  # no layers: the identity, broadcast against the context's batch
            x = _broadcast_to_context(x, context)
            total = x.new_zeros(x.shape[:-1])
        return x, total

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if not self.has_inverse:
            missing = [type(la).__name__ for la in self.layers if not la.has_inverse]
            raise NotImplementedError(
                f"FlowStack: layers {missing} have no analytic inverse; this flow can sample and "
                "score its own (cached) samples but cannot evaluate arbitrary points."
            )
        total: Tensor | None = None
        for layer, takes in zip(
            reversed(self.layers), reversed(self._takes_context), strict=True
        ):
            y, ladj = layer._inverse_and_ladj(y, context if takes else None)
            total = ladj if total is None else total + ladj
        if total is None:
            y = _broadcast_to_context(y, context)
            total = y.new_zeros(y.shape[:-1])
        return y, total

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> FlowTransform:
        return self.layers[index]  # type: ignore[return-value]
