"""Volume-tracking linear layers: fixed permutations and the LU-parametrised invertible linear map."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyro_flowvi.transforms.base import FlowTransform

__all__ = ["LULinear", "Permute"]


class Permute(FlowTransform):
    """Fixed permutation of the coordinates: ``y_i = x_{perm[i]}``, ``log|det J| = 0``.

    Example:
        >>> Permute(torch.tensor([2, 0, 1]))(torch.tensor([10.0, 11.0, 12.0]))
        tensor([12., 10., 11.])
    """

    permutation: Tensor
    inverse_permutation: Tensor

    def __init__(self, permutation: Tensor) -> None:
        permutation = torch.as_tensor(permutation).long()
        dim = permutation.numel()
        if sorted(permutation.tolist()) != list(range(dim)):
            raise ValueError(f"Permute: not a permutation of range({dim}): {permutation.tolist()}")
        super().__init__(dim)
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return x.index_select(-1, self.permutation), x.new_zeros(x.shape[:-1])

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return y.index_select(-1, self.inverse_permutation), y.new_zeros(y.shape[:-1])


class LULinear(FlowTransform):
    """Invertible linear map ``y = W x + b`` with ``W = P L U`` (Kingma & Dhariwal 2018).

    .. math::

        W = P\\,L\\,(U + \\mathrm{diag}(e^{\\ell})),\\qquad
        \\log|\\det J| = \\sum_i \\ell_i,

    with ``P`` a fixed permutation, ``L`` unit lower triangular and ``U`` strictly upper
    triangular (learned), so the log-det costs O(D) and the inverse two triangular solves.
    Initialised at the identity (``L = I``, ``U = 0``, ``ell = 0``, ``b = 0``).

    Example:
        >>> t = LULinear(3)
        >>> x = torch.randn(4, 3)
        >>> t(x).allclose(x)
        True
    """

    permutation: Tensor
    row_order: Tensor

    def __init__(self, dim: int, permutation: Tensor | None = None, bias: bool = True) -> None:
        super().__init__(dim)
        perm = torch.arange(dim) if permutation is None else torch.as_tensor(permutation).long()
        if sorted(perm.tolist()) != list(range(dim)):
            raise ValueError(f"LULinear: not a permutation of range({dim}): {perm.tolist()}")
        self.register_buffer("permutation", perm)
        self.register_buffer("row_order", torch.argsort(perm))
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.dim, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(torch.exp(self.log_diag))
        return lower, upper

    @property
    def weight(self) -> Tensor:
        """The matrix ``W = P L U`` (rows of ``L U`` reordered by ``P``)."""
        lower, upper = self._factors()
        return (lower @ upper)[self.row_order]

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        # y = P L U x + b, computed on row vectors: x U^T L^T, then rows permuted by P.
        y = ((x @ upper.T) @ lower.T).index_select(-1, self.row_order)
        if self.bias is not None:
            y = y + self.bias
        return y, self.log_diag.sum().expand(x.shape[:-1])

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        if self.bias is not None:
            y = y - self.bias
        r = y.index_select(-1, self.permutation)  # undo P
        batch = r.shape[:-1]
        r2 = r.reshape(-1, self.dim)
        z = torch.linalg.solve_triangular(lower.T, r2, upper=True, left=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper.T, z, upper=False, left=False)
        return x.reshape(*batch, self.dim), self.log_diag.sum().expand(batch)
