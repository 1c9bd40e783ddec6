"""Polyak (exponential moving) averages of a module's parameters, for evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["ParameterEMA"]


class ParameterEMA:
    r"""An exponential moving average of every floating-point parameter of ``module``.

    After each optimiser step :meth:`update` applies

    .. math::

        \bar\theta_t = \bar\theta_{t-1} + (1 - \rho_t)\,(\theta_t - \bar\theta_{t-1}),
        \qquad \rho_t = \min\!\Big(\rho,\ \frac{1 + t}{10 + t}\Big),

    (Polyak averaging with the usual warm-up of the decay, so early averages are not dominated
    by the initial weights), in one fused ``_foreach_lerp_`` on the device: no host
    synchronisation.  :meth:`swapped` temporarily loads the averages into the module (validation,
    test evaluation, the kept best state) and restores the live weights afterwards.

    Args:
        module: the module whose parameters are averaged (model and guide together).
        decay: :math:`\rho \in [0, 1)`; e.g. ``0.999`` averages over about 1000 steps.

    Example:
        >>> net = nn.Linear(1, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = net.weight.fill_(0.0)
        >>> ema = ParameterEMA(net, decay=0.5)
        >>> with torch.no_grad():
        ...     _ = net.weight.fill_(1.0)
        >>> ema.update(); ema.update()       # rho = min(0.5, 2/11), then min(0.5, 3/12)
        >>> round(ema.averages[0].item(), 4)  # 1 - (2/11)(3/12)
        0.9545
        >>> with ema.swapped():
        ...     round(net.weight.item(), 4)
        0.9545
        >>> net.weight.item()
        1.0
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ParameterEMA: decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        # storage-sharing detached views of the live parameters, built once
        self._live = [p.detach() for p in module.parameters() if p.is_floating_point()]
        self.averages = [p.clone() for p in self._live]
        self.num_updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """Move the averages towards the current parameters (call after ``optimizer.step()``)."""
        self.num_updates += 1
        rho = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        torch._foreach_lerp_(self.averages, self._live, 1.0 - rho)

    @torch.no_grad()
    def copy_to_module(self) -> None:
        """Overwrite the module's parameters with the averages (for good)."""
        torch._foreach_copy_(self._live, self.averages)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Load the averages into the module for the block; restore the live weights after."""
        saved = [p.clone() for p in self._live]
        self.copy_to_module()
        try:
            yield
        finally:
            torch._foreach_copy_(self._live, saved)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "averages": [a.clone() for a in self.averages]}

    def load_state_dict(self, state: dict[str, object]) -> None:
        averages: list[Tensor] = state["averages"]  # type: ignore[assignment]
        if len(averages) != len(self.averages):
            raise ValueError(f"ParameterEMA: the checkpoint holds {len(averages)} averages, the "
                             f"module has {len(self.averages)} parameters")
        with torch.no_grad():
            torch._foreach_copy_(self.averages, [a.to(b) for a, b in zip(averages, self.averages,
                                                                          strict=True)])
        self.num_updates = int(state["num_updates"])  # type: ignore[call-overload]
