"""Pure functions for MADE degrees and masks, and coupling masks.

MADE (Germain et al. 2015) gives every unit a *degree*; a weight from unit ``a`` to unit ``b`` is
kept iff ``deg(b) >= deg(a)`` between hidden layers and ``deg(out) > deg(hidden)`` into the output,
so output ``i`` depends only on inputs of strictly smaller degree: the Jacobian of the
conditioner's outputs w.r.t. its inputs is strictly triangular in the input order.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "alternating_mask",
    "half_mask",
    "connectivity",
    "hidden_degrees",
    "input_degrees",
    "made_masks",
    "random_mask",
]


def input_degrees(order: Tensor) -> Tensor:
    """Degree ``1..D`` of each input: ``order[k]`` is the input placed ``k``-th.

    Example:
        >>> input_degrees(torch.tensor([2, 0, 1]))
        tensor([2, 3, 1])
    """
    dim = order.numel()
    degrees = torch.empty(dim, dtype=torch.long)
    degrees[order] = torch.arange(1, dim + 1)
    return degrees


def hidden_degrees(num_units: int, dim: int, conditional: bool) -> Tensor:
    """Evenly spread degrees for one hidden layer.

    Without context the degrees cover ``1..max(D-1, 1)`` (a unit of degree ``D`` would be useless);
    with context they cover ``0..D-1``: degree-0 units see only the context (Paige & Wood 2016),
    so every output, the first one included, depends non-linearly on the context.

    Example:
        >>> hidden_degrees(5, 3, conditional=False)
        tensor([1, 1, 2, 2, 2])
    """
    low, high = (0, dim - 1) if conditional else (1, max(dim - 1, 1))
    return torch.round(torch.linspace(low, high, steps=num_units)).long()


def made_masks(
    order: Tensor, hidden_sizes: list[int], num_params: int, conditional: bool = False
) -> list[Tensor]:
    """Masks ``(out_features, in_features)`` for a MADE with ``num_params`` outputs per input.

    Output unit ``p * D + i`` is parameter ``p`` of input ``i`` and has that input's degree.

    Example:
        >>> [m.shape for m in made_masks(torch.arange(3), [4], num_params=2)]
        [torch.Size([4, 3]), torch.Size([6, 4])]
    """
    dim = order.numel()
    if not hidden_sizes:
        raise ValueError("made_masks: MADE needs at least one hidden layer")
    deg_in = input_degrees(order)
    degs = [deg_in] + [hidden_degrees(h, dim, conditional) for h in hidden_sizes]
    masks = [degs[k + 1][:, None] >= degs[k][None, :] for k in range(len(hidden_sizes))]
    deg_out = deg_in.repeat(num_params)
    masks.append(deg_out[:, None] > degs[-1][None, :])
    return [m.to(torch.get_default_dtype()) for m in masks]


def connectivity(masks: list[Tensor]) -> Tensor:
    """Number of paths from each input to each output: the product of the masks.

    For a valid MADE, ``connectivity(masks)[p * D + i, j] > 0`` only if ``deg(j) < deg(i)``.
    """
    out = masks[0]
    for m in masks[1:]:
        out = m @ out
    return out


def alternating_mask(dim: int, parity: int) -> Tensor:
    """Coupling mask (``True`` = passed through, conditions the rest): even or odd features.

    Example:
        >>> alternating_mask(5, 0)
        tensor([ True, False,  True, False,  True])
    """
    return (torch.arange(dim) % 2) == (parity % 2)


def half_mask(dim: int, parity: int) -> Tensor:
    """Coupling mask passing the first ``ceil(D/2)`` (``parity=0``) or the last ``floor(D/2)``
    features through; alternating the parity transforms every feature every two layers.

    Contiguous blocks need no gather/scatter in :class:`~pyro_flowvi.transforms.AffineCoupling`.

    Example:
        >>> half_mask(5, 0), half_mask(5, 1)
        (tensor([ True,  True,  True, False, False]), tensor([False, False, False,  True,  True]))
    """
    head = (dim + 1) // 2
    mask = torch.arange(dim) < head
    return mask if parity % 2 == 0 else ~mask


def random_mask(dim: int, generator: torch.Generator | None = None) -> Tensor:
    """Coupling mask passing a random half (``ceil(D/2)``) of the features through."""
    perm = torch.randperm(dim, generator=generator)
    mask = torch.zeros(dim, dtype=torch.bool)
    mask[perm[: (dim + 1) // 2]] = True
    return mask
