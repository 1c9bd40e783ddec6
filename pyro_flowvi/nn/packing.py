"""Pack a module's parameters into one flat vector and install views of it as the parameters."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PackedParameters"]


class PackedParameters:
    """The layout of a module's parameters inside one flat vector.

    ``PackedParameters(module)`` records every parameter's place (submodule path, attribute name,
    shape), removes the parameters from the module and returns their values concatenated in
    :attr:`initial`.  :meth:`install` then splits any flat vector of that length into views and
    sets them as the module's attributes, so the module computes with them (and autograd reaches
    the flat vector through the views).  A parameter shared by several submodules is stored once.

    Why: Pyro's optimisers wrap one ``torch.optim`` instance per parameter tensor and
    ``pyro.module`` makes one param-store call per tensor, a fixed cost per tensor and step that
    dominates small guides.  One flat parameter costs one call of each.

    The packed module has no ``parameters()`` of its own; its buffers (masks, permutations,
    ActNorm flags) stay registered, so ``state_dict`` and ``.to()`` still carry them.  The same
    layout installs into a structural copy of the module (:meth:`install` resolves submodules by
    path), e.g. a copy that scores with detached views.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
        >>> packed = PackedParameters(net)
        >>> packed.initial.shape, len(list(net.parameters()))
        (torch.Size([13]), 0)
        >>> flat = packed.initial.clone().requires_grad_()
        >>> packed.install(net, flat)
        >>> net(torch.ones(4, 2)).sum().backward()
        >>> flat.grad.shape
        torch.Size([13])
    """

    def __init__(self, module: nn.Module) -> None:
        slots: list[tuple[str, str]] = []
        piece_of_slot: list[int] = []
        first_slot_of: dict[int, int] = {}
        values: list[Tensor] = []
        for path, sub in module.named_modules(remove_duplicate=False):
            for name, param in list(sub._parameters.items()):
                if param is None:
                    continue
                slots.append((path, name))
                if id(param) not in first_slot_of:
                    first_slot_of[id(param)] = len(values)
                    values.append(param)
                piece_of_slot.append(first_slot_of[id(param)])
        self.slots = slots
        self.piece_of_slot = piece_of_slot
        self.shapes = [v.shape for v in values]
        self.numels = [v.numel() for v in values]
        self.offsets = [sum(self.numels[:k]) for k in range(len(self.numels))]
        self.numel = sum(self.numels)
        if values:
            self.initial = torch.cat([v.detach().reshape(-1) for v in values])
        else:
            self.initial = torch.zeros(0)
        for path, name in slots:
            sub = module.get_submodule(path)
            sub._parameters.pop(name, None)
        # resolved submodules per target (a plain dict, so the layout pickles and deep-copies;
        # the stored module is compared by identity, so a recycled id() cannot alias)
        self._targets: dict[int, tuple[nn.Module, list[nn.Module]]] = {}
        self.install(module, self.initial)

    def _submodules(self, module: nn.Module) -> list[nn.Module]:
        entry = self._targets.get(id(module))
        if entry is None or entry[0] is not module:
            entry = (module, [module.get_submodule(path) for path, _ in self.slots])
            self._targets[id(module)] = entry
        return entry[1]

    def views(self, flat: Tensor) -> list[Tensor]:
        """The parameter views of ``flat``, one per distinct parameter, in layout order."""
        if flat.shape != (self.numel,):
            raise ValueError(f"PackedParameters: expected a flat vector of shape ({self.numel},), "
                             f"got {tuple(flat.shape)}")
        # narrow, not split: views of a single-output op stay valid (and differentiable) after
        # an in-place write to the flat vector (ActNorm's data-dependent initialisation)
        return [flat.narrow(0, start, n).view(shape) for start, n, shape in
                zip(self.offsets, self.numels, self.shapes, strict=True)]

    def install(self, module: nn.Module, flat: Tensor | list[Tensor]) -> None:
        """Set views of ``flat`` as the parameters of ``module`` (this layout's module or a
        structural copy of it); or, given a list, its tensors (one per distinct parameter, as
        :meth:`views` returns them): e.g. leaf tensors to differentiate with respect to, whose
        gradients are then concatenated once, where the views of one flat vector would each
        spread their gradient over the whole vector."""
        views = self.views(flat) if isinstance(flat, Tensor) else flat
        if not isinstance(flat, Tensor) and (len(views) != len(self.shapes) or any(
                v.shape != shape for v, shape in zip(views, self.shapes, strict=False))):
            raise ValueError(f"PackedParameters: expected tensors of shapes "
                             f"{[tuple(s) for s in self.shapes]}, got "
                             f"{[tuple(v.shape) for v in views]}")
        for sub, (_, name), piece in zip(self._submodules(module), self.slots,
                                         self.piece_of_slot, strict=True):
            sub.__dict__[name] = views[piece]

    def named_views(self, flat: Tensor) -> dict[str, Tensor]:
        """``{"path.name": view}`` for every slot (shared parameters appear under each name)."""
        views = self.views(flat)
        return {f"{path}.{name}" if path else name: views[piece]
                for (path, name), piece in zip(self.slots, self.piece_of_slot, strict=True)}
