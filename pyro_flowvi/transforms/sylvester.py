"""Sylvester normalizing flows: orthogonal (O-SNF), Householder (H-SNF) and triangular (T-SNF)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pyro_flowvi.nn.mlp import MaskedMLP
from pyro_flowvi.transforms.base import ConditionalFlowTransform, FlowTransform

__all__ = [
    "ConditionalSylvester",
    "Sylvester",
    "SylvesterParams",
    "householder_product",
    "orthogonalize",
]

VARIANTS = ("orthogonal", "householder", "triangular")
DEFAULT_ORTHO_VECTORS = 32
DEFAULT_HOUSEHOLDER = 8
# The diagonals are ``DIAG_BOUND * tanh(raw)``: |r_ii r~_ii| <= DIAG_BOUND**2 < 1 holds even in
# float32, where tanh(raw) rounds to exactly 1 once |raw| > ~9.
DIAG_BOUND = 1.0 - 1e-6


class SylvesterParams(NamedTuple):
    """The matrices of one Sylvester layer, each with a leading batch shape (``()`` if plain)."""

    q: Tensor  #: ``(..., D, M)`` with orthonormal columns
    r: Tensor  #: ``(..., M, M)`` upper triangular
    r_tilde: Tensor  #: ``(..., M, M)`` upper triangular
    b: Tensor  #: ``(..., M)``


def orthogonalize(a: Tensor, num_iterations: int = 30) -> Tensor:
    """Orthonormalise the columns of ``a`` (``(..., D, M)``, ``M <= D``) by Björck iteration.

    .. math:: Q_0 = A / \\sqrt{\\lVert A^\\top A\\rVert_\\infty}, \\qquad
        Q_{k+1} = Q_k\\left(I + \\tfrac12 (I - Q_k^\\top Q_k)\\right).

    Each step maps every singular value ``s`` to ``s (3 - s^2) / 2``, which converges
    (quadratically near 1) for ``0 < s < sqrt(3)``.  The start scale bounds the spectral norm by
    1, since ``s_max^2`` is the spectral radius of the Gram matrix, at most its max-row-sum norm.
    A fixed number of steps keeps it free of host syncs; 30 suffice from ``s_min / s_max`` down
    to about ``1e-4`` (float64 accuracy).

    Example:
        >>> q = orthogonalize(torch.randn(5, 3, dtype=torch.float64))
        >>> torch.allclose(q.mT @ q, torch.eye(3, dtype=torch.float64))
        True
    """
    batch, (d, m) = a.shape[:-2], a.shape[-2:]
    q = a.reshape(-1, d, m)  # (B, D, M): two fused kernels per step
    gram = q.mT @ q
    scale = gram.abs().sum(-1).amax(-1).clamp_min(torch.finfo(a.dtype).tiny).sqrt()
    q = q / scale[:, None, None]
    eye = torch.eye(m, dtype=a.dtype, device=a.device)
    for _ in range(num_iterations):
        q = torch.bmm(q, torch.baddbmm(eye, q.mT, q, beta=1.5, alpha=-0.5))
    return q.reshape(batch + (d, m))


def householder_product(v: Tensor) -> Tensor:
    """``Q = H_1 H_2 \\cdots H_K``, ``H_k = I - 2 v_k v_k^T / ||v_k||^2``; ``v``: ``(..., K, D)``.

    A zero vector gives ``H_k = I``.  ``Q`` is orthogonal up to rounding.

    Example:
        >>> q = householder_product(torch.tensor([[1.0, 0.0]]))
        >>> q
        tensor([[-1.,  0.],
                [ 0.,  1.]])
    """
    dim = v.shape[-1]
    # a zero v stays zero (0 * rsqrt(tiny) = 0), giving H = I
    unit = v * torch.rsqrt((v * v).sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny))
    eye = torch.eye(dim, dtype=v.dtype, device=v.device)
    if v.dim() == 2:  # one set of vectors: rank-one updates Q <- Q - 2 (Q u) u^T
        q = eye
        for uk in unit.unbind(0):
            q = torch.addr(q, q @ uk, uk, alpha=-2.0)
        return q
    q = eye.expand(v.shape[:-2] + (dim, dim))
    for uk in unit.unbind(-2):
        q = q - 2.0 * (q @ uk.unsqueeze(-1)) @ uk.unsqueeze(-2)
    return q


def _vecmat(v: Tensor, a: Tensor) -> Tensor:
    """``a^T v`` for vectors ``v`` (``(..., n)``) and matrices ``a`` (``(..., n, m)``), batched."""
    return (v.unsqueeze(-2) @ a).squeeze(-2)


def _triangular(diag_raw: Tensor, upper: Tensor, m: int, flat_index: Tensor) -> Tensor:
    """Upper-triangular ``(..., m, m)`` from a strict upper part and a ``tanh``-bounded diagonal.

    ``flat_index`` holds the row-major positions of the strict upper entries then the diagonal.
    """
    values = torch.cat([upper, DIAG_BOUND * torch.tanh(diag_raw)], dim=-1)
    out = values.new_zeros(values.shape[:-1] + (m * m,))
    out = out.index_copy(-1, flat_index, values)
    return out.unflatten(-1, (m, m))


class Sylvester(FlowTransform):
    """Sylvester normalizing flow layer (van den Berg et al. 2018), three ways to build ``Q``.

    .. math::

        z' = z + Q R\\, h(\\tilde R Q^\\top z + b), \\qquad
        \\log|\\det J| = \\sum_{i=1}^{M} \\log\\left|1 + r_{ii} \\tilde r_{ii}\\,
        h'\\big((\\tilde R Q^\\top z + b)_i\\big)\\right|,

    with ``h = tanh``, ``Q`` a ``D x M`` matrix with orthonormal columns and ``R``, ``R~``
    ``M x M`` upper triangular (Sylvester's determinant identity reduces the ``D x D`` log-det to
    an ``M x M`` triangular one).  The map is invertible when ``r_ii r~_ii > -1 / sup h' = -1``;
    as in the paper, both diagonals pass through ``tanh`` (times ``1 - 1e-6``), so
    ``|r_ii r~_ii| < 1`` and every Jacobian eigenvalue lies in ``(0, 2)``.

    ``Q`` by variant:

    * ``"orthogonal"`` (O-SNF): ``M = num_ortho_vectors`` (default ``min(D, 32)``) columns
      orthonormalised from a free ``D x M`` matrix by :func:`orthogonalize`
      (``ortho_iterations = 30`` fixed steps; the matrix is initialised orthonormal).
    * ``"householder"`` (H-SNF): ``M = D``, ``Q`` the product of ``num_householder``
      (default ``min(D, 8)``) reflections, :func:`householder_product`.
    * ``"triangular"`` (T-SNF): ``M = D``, ``Q`` the identity for even ``layer_index`` and the
      reversal permutation for odd ones (so ``R`` alternates between upper and lower triangular).

    Initialisation: ``R = 0`` (exactly the identity map, log-det 0),
    ``R~ = tanh(1) I``, ``b = 0``, random orthonormal ``Q``; ``R`` receives a gradient at once
    (``R~ != 0``), and ``R~, b, Q`` follow as soon as ``R`` moves.  With ``context_dim`` every
    parameter (both diagonals and strict upper parts, ``b`` and the ``Q`` parameters) is the
    output of a dense hypernetwork of the context (the paper's amortised form): its output layer
    is zero-weighted with the bias set to the initial values above, so every context starts at
    the identity map.  Each batch element then has its own ``Q, R, R~, b``.

    Forward cost O(D M) per sample plus building ``Q`` (O(D M^2) per Björck step, O(K D^2) for
    Householder) once per parameter set.  There is no analytic inverse (``has_inverse=False``):
    the flow samples and scores its own samples (cached log-det), as VI needs, but cannot
    evaluate the density of arbitrary points.

    References:
        van den Berg, Hasenclever, Tomczak, Welling, "Sylvester Normalizing Flows for Variational
        Inference", UAI 2018, arXiv:1803.05649.

    Args:
        dim: event size ``D``.
        variant: ``"orthogonal"``, ``"householder"`` or ``"triangular"``.
        context_dim: context size for the amortised form (use :class:`ConditionalSylvester`),
            or ``None``.
        hidden_dims: hypernetwork hidden sizes (ignored without a context).
        layer_index: position in the stack; sets the T-SNF permutation.
        num_ortho_vectors: ``M`` for O-SNF, ``1 <= M <= D``.
        num_householder: number of reflections for H-SNF (``>= 1``).
        activation: hypernetwork non-linearity.

    Example:
        >>> layer = Sylvester(3, variant="orthogonal")
        >>> x = torch.randn(5, 3)
        >>> y, ladj = layer.call_and_ladj(x)
        >>> torch.equal(y, x), torch.equal(ladj, torch.zeros(5))   # identity at initialisation
        (True, True)
        >>> q = layer.params().q
        >>> torch.allclose(q.mT @ q, torch.eye(3), atol=1e-6)
        True
    """

    permutation_matrix: Tensor  # T-SNF only
    triangle_index: Tensor
    has_inverse = False
    ortho_iterations: int = 30

    def __init__(
        self,
        dim: int,
        variant: str = "householder",
        context_dim: int | None = None,
        hidden_dims: Sequence[int] = (64, 64),
        layer_index: int = 0,
        num_ortho_vectors: int | None = None,
        num_householder: int | None = None,
        activation: Callable[[], nn.Module] = nn.ELU,
    ) -> None:
        super().__init__(dim, context_dim)
        if variant not in VARIANTS:
            raise ValueError(f"Sylvester: unknown variant {variant!r}; use one of {VARIANTS}")
        if num_ortho_vectors is not None and variant != "orthogonal":
            raise ValueError("Sylvester: num_ortho_vectors only applies to variant='orthogonal'")
        if num_householder is not None and variant != "householder":
            raise ValueError("Sylvester: num_householder only applies to variant='householder'")
        self.variant = variant
        self.layer_index = int(layer_index)
        m = self.dim
        if variant == "orthogonal":
            m = (
                min(self.dim, DEFAULT_ORTHO_VECTORS)
                if num_ortho_vectors is None
                else int(num_ortho_vectors)
            )
            if not 1 <= m <= self.dim:
                raise ValueError(f"Sylvester: num_ortho_vectors must be in [1, {dim}], got {m}")
        self.num_ortho_vectors = m
        self.num_householder = 0
        if variant == "householder":
            k = min(self.dim, DEFAULT_HOUSEHOLDER) if num_householder is None else num_householder
            if int(k) < 1:
                raise ValueError(f"Sylvester: num_householder must be >= 1, got {k}")
            self.num_householder = int(k)

        rows, cols = torch.triu_indices(m, m, 1)
        diag = torch.arange(m)
        self.register_buffer("triangle_index", torch.cat([rows * m + cols, diag * m + diag]))
        init = self._initial_values()
        self._shapes = {name: value.shape for name, value in init.items()}
        self.hypernet: MaskedMLP | None = None
        if self.context_dim is None:
            for name, value in init.items():
                self.register_parameter(name, nn.Parameter(value))
        else:
            flat = torch.cat([value.flatten() for value in init.values()])
            self.hypernet = MaskedMLP(
                self.context_dim, hidden_dims, flat.numel(), 1, activation=activation
            )
            with torch.no_grad():
                self.hypernet.layers[-1].bias.copy_(flat)
        if variant == "triangular":
            order = torch.arange(self.dim)
            if self.layer_index % 2 == 1:
                order = order.flip(0)
            self.register_buffer("permutation_matrix", torch.eye(self.dim)[:, order])

    def _initial_values(self) -> dict[str, Tensor]:
        """Raw parameters at initialisation (see the class docstring), in hypernet output order."""
        d, m = self.dim, self.num_ortho_vectors
        n_upper = m * (m - 1) // 2
        values = {
            "r_diag": torch.zeros(m),
            "r_tilde_diag": torch.ones(m),
            "r_upper": torch.zeros(n_upper),
            "r_tilde_upper": torch.zeros(n_upper),
            "b": torch.zeros(m),
        }
        if self.variant == "orthogonal":
            values["q_raw"] = torch.linalg.qr(torch.randn(d, m)).Q
        elif self.variant == "householder":
            values["householder_vectors"] = torch.randn(self.num_householder, d)
        return values

    def raw_params(self, context: Tensor | None = None) -> dict[str, Tensor]:
        """The unconstrained parameters by name: the module's own, or the hypernet's output."""
        if self.hypernet is None:
            return {name: getattr(self, name) for name in self._shapes}
        if context is None:
            raise ValueError("Sylvester: this layer is conditional; pass a context")
        flat = self.hypernet(context).squeeze(-2)
        batch = flat.shape[:-1]
        sizes = [shape.numel() for shape in self._shapes.values()]
        pieces = flat.split(sizes, dim=-1)
        return {
            name: piece.reshape(batch + shape)
            for (name, shape), piece in zip(self._shapes.items(), pieces, strict=True)
        }

    def params(self, context: Tensor | None = None) -> SylvesterParams:
        """``Q, R, R~, b`` (batch shape of the context for a conditional layer, else ``()``)."""
        raw = self.raw_params(context)
        m = self.num_ortho_vectors
        r = _triangular(raw["r_diag"], raw["r_upper"], m, self.triangle_index)
        r_tilde = _triangular(raw["r_tilde_diag"], raw["r_tilde_upper"], m, self.triangle_index)
        if self.variant == "orthogonal":
            q = orthogonalize(raw["q_raw"], self.ortho_iterations)
        elif self.variant == "householder":
            q = householder_product(raw["householder_vectors"])
        else:
            q = self.permutation_matrix
        return SylvesterParams(q, r, r_tilde, raw["b"])

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        q, r, r_tilde, b = self.params(context)
        if q.dim() == 2 and r.dim() == 2:
            # One parameter set for the whole batch: fold it into two D x M matrices so the
            # batch costs two GEMMs, x A + b and h B, with A = Q R~^T and B = R^T Q^T.
            pre = torch.addmm(b, x.reshape(-1, self.dim), q @ r_tilde.mT)
            h = torch.tanh(pre)
            y = torch.addmm(x.reshape(-1, self.dim), h, r.mT @ q.mT).reshape(x.shape)
            h = h.reshape(x.shape[:-1] + h.shape[-1:])
        else:
            pre = _vecmat(_vecmat(x, q), r_tilde.mT) + b  # R~ Q^T x + b
            h = torch.tanh(pre)
            y = x + _vecmat(_vecmat(h, r.mT), q.mT)  # x + Q R h
        diag = torch.diagonal(r, dim1=-2, dim2=-1) * torch.diagonal(r_tilde, dim1=-2, dim2=-1)
        ladj = torch.log1p(diag * (1.0 - h * h)).sum(-1)
        return y, ladj

    def extra_repr(self) -> str:
        extra = f"dim={self.dim}, variant={self.variant!r}, M={self.num_ortho_vectors}"
        if self.variant == "householder":
            extra += f", num_householder={self.num_householder}"
        if self.variant == "triangular":
            extra += f", layer_index={self.layer_index}"
        if self.context_dim is not None:
            extra += f", context_dim={self.context_dim}"
        return extra


class ConditionalSylvester(ConditionalFlowTransform):
    """Amortised Sylvester layer: a hypernetwork of the context gives ``Q, R, R~, b``.

    ``condition(context)`` returns the layer with the context bound; arguments as
    :class:`Sylvester`.

    Example:
        >>> t = ConditionalSylvester(4, context_dim=3, variant="householder", hidden_dims=[16])
        >>> t.condition(torch.randn(7, 3))(torch.randn(5, 7, 4)).shape
        torch.Size([5, 7, 4])
    """

    def __init__(self, dim: int, context_dim: int, **kwargs: object) -> None:
        super().__init__(Sylvester(dim, context_dim=context_dim, **kwargs))  # type: ignore[arg-type]
