"""Flowified 2-D convolutions: pad, tile (duplicate overlapping pixels), shared flowified kernel.

A convolution is a linear map; it is flowified by factorising it into three flowified pieces
(paper, Fig. 3):

1. :class:`FlowifiedPad` (dimension-increasing unless no padding is needed): right/bottom padding
   with values :math:`\\sim \\mathcal N(0, A^2)`, ``A`` learned, :math:`C = -\\log\\mathcal N(pad;
   0, A^2)`; the inverse crops.  Constant padding has no density, hence the noise.
2. :class:`FlowifiedTile` (increasing when ``stride < kernel``): a pixel lying in ``N`` windows is
   copied, :math:`p \\mapsto p\\,\\mathbf 1_N + \\sqrt N\\,u` with :math:`u` isotropic
   :math:`\\mathcal N(0, A^2)` on the ``(N-1)``-dimensional complement of :math:`\\mathbf 1_N`;
   per pixel and channel :math:`C = \\tfrac N2 \\log N - \\log\\mathcal N_{N-1}(u; 0, A^2 I)`
   (the map :math:`(p, u) \\mapsto p\\mathbf 1 + \\sqrt N Q_\\perp u` has
   :math:`|\\det| = \\sqrt N \\cdot \\sqrt N^{N-1}`).  The inverse folds with the mean (exact).
3. The kernel: one :class:`~pyro_flowvi.transforms.flowify.density.linear.FlowifiedLinear`
   ``k_h k_w C_in -> C_out`` on every flattened tile, shared across locations, contributions
   summed over locations; a decreasing kernel gets a per-location Gaussian conditioner.

With ``stride = kernel``, no padding and ``C_out <= k^2 C_in`` the convolution is exact.
``stride > kernel`` (pixels in no window) is rejected.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_flowvi.transforms.flowify.density.layer import FlowifiedLayer, FlowifiedSequential
from pyro_flowvi.transforms.flowify.density.linear import FlowifiedLinear

__all__ = ["FlowifiedConv2d", "FlowifiedPad", "FlowifiedTile", "FlowifiedTileLinear", "conv_padding"]

LOG_2PI = math.log(2.0 * math.pi)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_padding(size: int, kernel: int, stride: int) -> int:
    """Rows (or columns) to add at the bottom (right) so windows tile ``size`` exactly:
    ``(s - (H - k) mod s) mod s``."""
    if size < kernel:
        raise ValueError(f"flowified conv: input size {size} is smaller than the kernel {kernel}")
    return (stride - (size - kernel) % stride) % stride


def _flat(x: Tensor, event: int) -> tuple[Tensor, torch.Size]:
    batch = x.shape[: x.dim() - event]
    return x.reshape((-1,) + tuple(x.shape[x.dim() - event:])), batch


class FlowifiedPad(FlowifiedLayer):
    """Pad an image ``(C, H, W)`` at the bottom/right with learned-scale Gaussian noise.

    Example:
        >>> pad = FlowifiedPad((1, 3, 3), (1, 2))
        >>> y, c = pad(torch.zeros(4, 1, 3, 3))
        >>> y.shape, pad.inverse(y).shape
        (torch.Size([4, 1, 4, 5]), torch.Size([4, 1, 3, 3]))
    """

    def __init__(self, in_shape: tuple[int, int, int], padding: tuple[int, int],
                 init_scale: float = 1.0) -> None:
        super().__init__()
        c, h, w = in_shape
        ph, pw = padding
        self.in_shape, self.out_shape = (c, h, w), (c, h + ph, w + pw)
        self.padding = (int(ph), int(pw))
        self.is_exact = ph == 0 and pw == 0
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        mask = torch.zeros(h + ph, w + pw, dtype=torch.bool)
        mask[h:, :] = True
        mask[:, w:] = True
        self.register_buffer("pad_mask", mask)
        self.num_padded = int(mask.sum()) * c

    def _pad_log_prob(self, y: Tensor) -> Tensor:
        a = self.log_scale
        vals = torch.where(self.pad_mask, y, 0.0)
        return -(vals.square().sum((-3, -2, -1)) * torch.exp(-2 * a) / 2
                 + self.num_padded * (a + 0.5 * LOG_2PI))

    def _forward(self, x: Tensor, context: Tensor | None, noise: bool) -> tuple[Tensor, Tensor]:
        ph, pw = self.padding
        y = F.pad(x, (0, pw, 0, ph))
        if noise:
            y = y + torch.where(self.pad_mask, torch.randn_like(y) * self.log_scale.exp(), 0.0)
        return y, -self._pad_log_prob(y)

    def _inverse(self, y: Tensor, context: Tensor | None, mode: str,
                 noise: Tensor | None) -> tuple[Tensor, Tensor]:
        _, h, w = self.in_shape
        return y[..., :h, :w], -self._pad_log_prob(y)


class FlowifiedTile(FlowifiedLayer):
    """Unfold an image ``(C, H, W)`` into tiles ``(C k_h k_w, n_H, n_W)``, duplicating pixels that
    lie in several windows (increasing when ``stride < kernel``; see the module docstring).

    Example:
        >>> tile = FlowifiedTile((1, 3, 3), kernel_size=2, stride=1)
        >>> y, c = tile(torch.randn(2, 1, 3, 3))
        >>> y.shape, tile.is_exact
        (torch.Size([2, 4, 2, 2]), False)
    """

    def __init__(self, in_shape: tuple[int, int, int], kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int], init_scale: float = 0.1) -> None:
        super().__init__()
        c, h, w = in_shape
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if sh > kh or sw > kw:
            raise ValueError(
                f"flowified conv: stride {self.stride} > kernel {self.kernel_size} leaves pixels in "
                "no window (nothing to invert); use stride <= kernel_size")
        if (h - kh) % sh or (w - kw) % sw:
            raise ValueError(f"FlowifiedTile: windows do not tile {(h, w)} exactly; pad first "
                             "(FlowifiedConv2d does)")
        self.in_shape = (c, h, w)
        self.grid = ((h - kh) // sh + 1, (w - kw) // sw + 1)
        self.out_shape = (c * kh * kw, *self.grid)
        counts = F.fold(F.unfold(torch.ones(1, 1, h, w), self.kernel_size, stride=self.stride),
                        (h, w), self.kernel_size, stride=self.stride)[0, 0]
        self.register_buffer("counts", counts)  # N per pixel, (H, W)
        self.register_buffer("copy_counts",
                             F.unfold(counts[None, None].expand(1, c, h, w).contiguous(),
                                      self.kernel_size, stride=self.stride)[0])  # (C k k, L)
        self.is_exact = bool((counts == 1).all())
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.log_det = c * float((0.5 * counts * counts.log()).sum())  # sum_pixels (N/2) log N
        self.dof = c * float((counts - 1).sum())  # sum_pixels (N - 1)

    def _unfold(self, x: Tensor) -> Tensor:
        return F.unfold(x, self.kernel_size, stride=self.stride)  # (B, C k k, L)

    def _fold(self, t: Tensor) -> Tensor:
        return F.fold(t, self.in_shape[1:], self.kernel_size, stride=self.stride)

    def _noise_log_prob(self, u: Tensor) -> Tensor:
        a = self.log_scale
        return -(u.square().sum((-2, -1)) * torch.exp(-2 * a) / 2
                 + self.dof * (a + 0.5 * LOG_2PI))

    def _forward(self, x: Tensor, context: Tensor | None, noise: bool) -> tuple[Tensor, Tensor]:
        flat, batch = _flat(x, 3)
        tiles = self._unfold(flat)
        if noise and not self.is_exact:
            w = torch.randn_like(tiles) * self.log_scale.exp()
            u = w - self._unfold(self._fold(w) / self.counts)  # centre each pixel's copies
        else:
            u = torch.zeros_like(tiles)
        tiles = tiles + self.copy_counts.sqrt() * u
        c = self.log_det - self._noise_log_prob(u)
        return tiles.reshape(batch + self.out_shape), c.reshape(batch)

    def _inverse(self, y: Tensor, context: Tensor | None, mode: str,
                 noise: Tensor | None) -> tuple[Tensor, Tensor]:
        flat, batch = _flat(y, 3)
        tiles = flat.flatten(-2)
        x = self._fold(tiles) / self.counts
        u = (tiles - self._unfold(x)) / self.copy_counts.sqrt()
        c = self.log_det - self._noise_log_prob(u)
        return x.reshape(batch + self.in_shape), c.reshape(batch)


class FlowifiedTileLinear(FlowifiedLayer):
    """A :class:`FlowifiedLinear` applied to the channel vector at every location of a
    ``(D, n_H, n_W)`` map (the convolution kernel on flattened tiles), contributions summed."""

    def __init__(self, in_shape: tuple[int, int, int], out_channels: int, **linear: object) -> None:
        super().__init__()
        d, gh, gw = in_shape
        self.linear = FlowifiedLinear(d, out_channels, **linear)  # type: ignore[arg-type]
        self.in_shape, self.out_shape = (d, gh, gw), (out_channels, gh, gw)
        self.is_exact = self.linear.is_exact
        self.noise_features = self.linear.noise_features * gh * gw
        self.context_dim = self.linear.context_dim

    def _ctx(self, context: Tensor | None) -> Tensor | None:
        return None if context is None else context[..., None, None, :]

    def _forward_with_noise(self, x: Tensor,
                            context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        y, c, eps = self.linear._forward_with_noise(x.movedim(-3, -1), self._ctx(context))
        return y.movedim(-1, -3), c.sum((-2, -1)), eps.flatten(-3)

    def _forward(self, x: Tensor, context: Tensor | None, noise: bool) -> tuple[Tensor, Tensor]:
        y, c = self.linear._forward(x.movedim(-3, -1), self._ctx(context), noise)
        return y.movedim(-1, -3), c.sum((-2, -1))

    def _inverse(self, y: Tensor, context: Tensor | None, mode: str,
                 noise: Tensor | None) -> tuple[Tensor, Tensor]:
        eps = None if noise is None else noise.unflatten(-1, (*self.in_shape[1:], -1))
        x, c = self.linear._inverse(y.movedim(-3, -1), self._ctx(context), mode, eps)
        return x.movedim(-1, -3), c.sum((-2, -1))


class FlowifiedConv2d(FlowifiedSequential):
    """Flowified ``nn.Conv2d(in_channels, out_channels, kernel_size, stride)`` on ``(C, H, W)``
    images: ``FlowifiedPad`` (if needed), ``FlowifiedTile``, then a shared ``FlowifiedLinear``.

    Args:
        in_channels, out_channels, kernel_size, stride: as ``nn.Conv2d`` (``stride`` defaults to
            ``kernel_size``; ``stride > kernel_size`` raises); no dilation or groups.
        input_size: ``(H, W)`` of the input images (fixes the event shapes).
        conditioner: the kernel's conditioner for ``C_out < k^2 C_in`` (``"local"`` = the default
            per-location MLP; see :class:`FlowifiedLinear`).
        linear: further :class:`FlowifiedLinear` options (``init``, ``noise``, ``rotation``...).

    Example:
        >>> conv = FlowifiedConv2d(1, 3, kernel_size=2, input_size=(4, 4))
        >>> y, c = conv(torch.randn(5, 1, 4, 4))
        >>> y.shape, conv.is_exact, conv.weight.shape
        (torch.Size([5, 3, 2, 2]), True, torch.Size([3, 1, 2, 2]))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] | None = None, *, input_size: tuple[int, int],
                 conditioner: object = "local", **linear: object) -> None:
        kernel = _pair(kernel_size)
        strides = kernel if stride is None else _pair(stride)
        if strides[0] > kernel[0] or strides[1] > kernel[1]:
            raise ValueError(
                f"FlowifiedConv2d: stride {strides} > kernel {kernel} is not supported (pixels "
                "between windows would be dropped with no density); use stride <= kernel_size")
        h, w = _pair(input_size)
        pad = (conv_padding(h, kernel[0], strides[0]), conv_padding(w, kernel[1], strides[1]))
        layers: list[FlowifiedLayer] = []
        if pad != (0, 0):
            layers.append(FlowifiedPad((in_channels, h, w), pad))
        tile = FlowifiedTile((in_channels, h + pad[0], w + pad[1]), kernel, strides)
        layers += [tile, FlowifiedTileLinear(tile.out_shape, out_channels,
                                             conditioner=conditioner, **linear)]
        super().__init__(*layers)
        self.kernel_size, self.stride, self.padding = kernel, strides, pad
        self.in_channels, self.out_channels = in_channels, out_channels

    @property
    def kernel(self) -> FlowifiedLinear:
        return self.layers[-1].linear  # type: ignore[return-value]

    @property
    def weight(self) -> Tensor:
        """The convolution weight ``(C_out, C_in, k_h, k_w)``."""
        return self.kernel.weight.reshape(self.out_channels, self.in_channels, *self.kernel_size)

    @property
    def bias(self) -> Tensor | None:
        return self.kernel.bias
