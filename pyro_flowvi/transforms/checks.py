"""Input and context checks shared by every flow: early errors that name the fix."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_context", "check_event"]


def check_event(name: str, x: Tensor, dim: int) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``x`` has event shape ``(dim,)``."""
    if x.dim() < 1 or x.shape[-1] != dim:
        raise ValueError(
            f"{name}: expected a tensor with event shape ({dim},) (any batch shape before it), "
            f"got shape {tuple(x.shape)}. Reshape the input so its last dimension is {dim}."
        )


def check_context(name: str, x: Tensor, context: Tensor | None, context_dim: int | None) -> None:
    """Validate a context against a flow's ``context_dim`` and the input's batch shape."""
    if context_dim is None:
        if context is not None:
            raise ValueError(
                f"{name}: this flow is unconditional but was given a context of shape "
                f"{tuple(context.shape)}; build it with context_dim=... to condition on it."
            )
        return
    if context is None:
        raise ValueError(
            f"{name}: this flow is conditional (context_dim={context_dim}); call "
            f".condition(context) with a context of shape (..., {context_dim}) first."
        )
    if not isinstance(context, Tensor):
        raise TypeError(
            f"{name}: the context must be a tensor of shape (..., {context_dim}), got "
            f"{type(context).__name__}; convert it with torch.as_tensor(h, dtype=x.dtype, "
            "device=x.device).")
    if context.dtype != x.dtype or context.device != x.device:
        raise ValueError(
            f"{name}: the context is {context.dtype} on {context.device} but the input is "
            f"{x.dtype} on {x.device}; move it with h.to(x) (or the flow with .to(...)).")
    if context.dim() < 1 or context.shape[-1] != context_dim:
        raise ValueError(
            f"{name}: expected a context with last dimension {context_dim}, got shape "
            f"{tuple(context.shape)}."
        )
    try:
        torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"{name}: the context's batch shape {tuple(context.shape[:-1])} does not broadcast "
            f"with the input's batch shape {tuple(x.shape[:-1])}."
        ) from None
