"""Bernoulli VAEs for binarized MNIST: MLP and convolutional encoders/decoders and the Pyro model.

The generative model of a ``28 x 28`` binary image ``x`` with latent ``z \\in R^D`` is

.. math::

    z \\sim \\mathcal N(0, I_D), \\qquad
    x_j \\mid z \\sim \\mathrm{Bernoulli}\\big(\\sigma(\\mathrm{dec}_\\theta(z)_j)\\big),
    \\quad j = 1, \\dots, 784,

written as a Pyro model (:meth:`BernoulliVAE.model`) with the images in a ``"data"`` plate.  The
encoder returns ``(loc, scale, h)`` for :class:`~pyro_flowvi.AmortizedFlowGuide`.

Optionally the prior is a learned flow (``build_vae(prior_flow="maf")``): ``z = f(e)``,
``e ~ N(0, I_D)``, so that

.. math::

    \\log p_\\psi(z) = \\log \\mathcal N\\big(f_\\psi^{-1}(z); 0, I_D\\big)
        - \\log\\big|\\det J_{f_\\psi}\\big(f_\\psi^{-1}(z)\\big)\\big|,

trained with the decoder.  The guide's draws are scored through ``f^{-1}``, so the flow needs a
one-pass inverse (``maf``, ``realnvp``); images are sampled through ``f``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_flowvi.flows import build_flow
from pyro_flowvi.lab.commands.vae import ARCHITECTURES
from pyro_flowvi.transforms.base import FlowTransform

__all__ = [
    "ARCHITECTURES",
    "BernoulliVAE",
    "ConvDecoder",
    "ConvEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "build_vae",
]

IMAGE_SHAPE = (1, 28, 28)
X_DIM = 784
MIN_SCALE = 1e-4


def _mlp(sizes: Sequence[int], activation: Callable[[], nn.Module],
         dropout: float = 0.0) -> nn.Sequential:
    """Linear + activation per hidden layer, each followed by dropout when ``dropout > 0``."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), activation()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class _Heads(nn.Module):
    """Gaussian-base and context heads on top of a feature vector."""

    def __init__(self, features: int, latent_dim: int, context_dim: int,
                 activation: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.loc = nn.Linear(features, latent_dim)
        self.scale = nn.Linear(features, latent_dim)
        self.context = (nn.Sequential(nn.Linear(features, context_dim), activation())
                        if context_dim > 0 else None)

    def forward(self, feat: Tensor) -> tuple[Tensor, ...]:
        loc = self.loc(feat)
        scale = F.softplus(self.scale(feat)) + MIN_SCALE
        if self.context is None:
            return loc, scale
        return loc, scale, self.context(feat)


class MLPEncoder(nn.Module):
    """``x (B, 784) -> (loc (B, D), scale (B, D), h (B, C))`` through an MLP.

    ``scale = softplus(.) + 1e-4``; ``h`` is an activated linear head (omitted when
    ``context_dim = 0``: the encoder then returns ``(loc, scale)`` for the Gaussian guide).

    Example:
        >>> enc = MLPEncoder(latent_dim=4, context_dim=8, hidden_dims=[32])
        >>> [t.shape for t in enc(torch.zeros(3, 784))]
        [torch.Size([3, 4]), torch.Size([3, 4]), torch.Size([3, 8])]
    """

    def __init__(self, latent_dim: int, context_dim: int = 0,
                 hidden_dims: Sequence[int] = (512, 256),
                 activation: Callable[[], nn.Module] = nn.ELU, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = _mlp([X_DIM, *hidden_dims], activation, dropout)
        self.heads = _Heads(hidden_dims[-1], latent_dim, context_dim, activation)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.heads(self.body(x))


class MLPDecoder(nn.Module):
    """``z (..., D) -> logits (..., 784)`` through an MLP (hidden sizes mirrored)."""

    def __init__(self, latent_dim: int, hidden_dims: Sequence[int] = (256, 512),
                 activation: Callable[[], nn.Module] = nn.ELU, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = _mlp([latent_dim, *hidden_dims], activation, dropout)
        self.out = nn.Linear(hidden_dims[-1], X_DIM)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.body(z))


class ConvEncoder(nn.Module):
    """Two stride-2 ``5 x 5`` convolutions (32, 64 channels), a dense layer, then the heads."""

    def __init__(self, latent_dim: int, context_dim: int = 0, hidden: int = 512,
                 activation: Callable[[], nn.Module] = nn.ELU) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 5, stride=2, padding=2), activation(),
            nn.Conv2d(32, 64, 5, stride=2, padding=2), activation(),
            nn.Flatten(), nn.Linear(64 * 7 * 7, hidden), activation(),
        )
        self.heads = _Heads(hidden, latent_dim, context_dim, activation)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.heads(self.body(x.reshape(-1, *IMAGE_SHAPE)))


class ConvDecoder(nn.Module):
    """Dense layers to ``64 x 7 x 7``, then two stride-2 transposed convolutions to logits."""

    def __init__(self, latent_dim: int, hidden: int = 512,
                 activation: Callable[[], nn.Module] = nn.ELU) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(latent_dim, hidden), activation(),
            nn.Linear(hidden, 64 * 7 * 7), activation(), nn.Unflatten(-1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 5, stride=2, padding=2, output_padding=1), activation(),
        )
        self.out = nn.ConvTranspose2d(32, 1, 5, stride=2, padding=2, output_padding=1)

    def forward(self, z: Tensor) -> Tensor:
        batch = z.shape[:-1]
        logits = self.out(self.body(z.reshape(-1, z.shape[-1])))
        return logits.reshape(*batch, X_DIM)


class BernoulliVAE(nn.Module):
    """Decoder plus prior: the Pyro model of binarized images (the guide owns the encoder).

    ``model(x, num_data=None, index=None)`` scores a mini-batch ``x`` (float ``(B, 784)`` of 0/1
    values) inside ``pyro.plate("data", num_data, subsample=index)``: with ``num_data = N`` both
    ``log p`` and ``log q`` are scaled by ``N / B``, so the ELBO of a mini-batch estimates the
    full data set's.  ``index`` (default ``arange(B)``) names the batch's rows; no random indices
    are drawn, so the plate costs no host synchronisation.  ``create_plates`` has the model's
    signature and returns the same plate, for the guide.

    Example:
        >>> vae = BernoulliVAE(MLPDecoder(4, hidden_dims=[16]), latent_dim=4)
        >>> tr = pyro.poutine.trace(vae.model).get_trace(torch.zeros(3, 784), num_data=30)
        >>> tr.nodes["z"]["value"].shape, tr.nodes["z"]["scale"]
        (torch.Size([3, 4]), 10.0)

    ``prior_flow`` (a flow transform on ``R^latent_dim`` with an inverse) makes the prior the
    flow's push-forward of ``N(0, I)``; ``None`` keeps the standard normal prior.
    """

    def __init__(self, decoder: nn.Module, latent_dim: int,
                 prior_flow: FlowTransform | None = None) -> None:
        super().__init__()
        self.decoder = decoder
        self.latent_dim = int(latent_dim)
        if prior_flow is not None:
            if prior_flow.dim != self.latent_dim:
                raise ValueError(f"BernoulliVAE: the prior flow acts on dim {prior_flow.dim}, but "
                                 f"the latent has dim {self.latent_dim}")
            if not prior_flow.has_inverse:
                raise ValueError(
                    f"BernoulliVAE: the prior flow {type(prior_flow).__name__} has no inverse, "
                    "so p(z) of the guide's draws cannot be evaluated; use maf or realnvp")
        self.prior_flow = prior_flow

    @staticmethod
    def check_data(x: Tensor) -> None:
        """Raise a clear error unless ``x`` is a float tensor of shape ``(B, 784)``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"BernoulliVAE: expected a tensor of images, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[-1] != X_DIM:
            raise ValueError(
                f"BernoulliVAE: expected binarized MNIST images of shape (batch, {X_DIM}), got "
                f"{tuple(x.shape)}; flatten 28 x 28 images with x.reshape(len(x), -1)")
        if not x.is_floating_point():
            raise TypeError(
                f"BernoulliVAE: expected a floating-point tensor of 0/1 values, got dtype "
                f"{x.dtype}; binarize and convert first (x.float() for 0/1 bytes, "
                "torch.bernoulli(x / 255.0) for raw 0-255 pixels)")

    def create_plates(self, x: Tensor, num_data: int | None = None,
                      index: Tensor | None = None) -> pyro.plate:
        """The data plate for a mini-batch (same signature as :meth:`model`)."""
        batch = x.shape[0]
        if index is None:
            index = torch.arange(batch, device=x.device)
        return pyro.plate("data", batch if num_data is None else int(num_data), subsample=index,
                          dim=-1)

    def model(self, x: Tensor, num_data: int | None = None, index: Tensor | None = None) -> None:
        """``p(z) p(x | z)`` for a mini-batch; ``z`` may carry extra leading sample dims."""
        self.check_data(x)
        pyro.module("decoder", self.decoder)
        if self.prior_flow is not None:
            pyro.module("prior_flow", self.prior_flow)
        with self.create_plates(x, num_data, index):
            z = pyro.sample("z", self.prior(x.new_zeros(x.shape[0], self.latent_dim)))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z), validate_args=False)
                        .to_event(1), obs=x)

    def prior(self, loc: Tensor) -> dist.TorchDistribution:
        """``p(z)`` with batch shape ``loc.shape[:-1]``: ``N(loc, I)``, pushed through the prior
        flow when there is one (``loc`` is zeros in :meth:`model`)."""
        base = dist.Normal(loc, 1.0).to_event(1)
        if self.prior_flow is None:
            return base
        return dist.TransformedDistribution(base, self.prior_flow)

    @torch.no_grad()
    def sample_prior(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """``num`` draws of ``z ~ p(z)``: ``(num, latent_dim)``."""
        param = next(self.decoder.parameters())
        eps = torch.randn(num, self.latent_dim, generator=generator, device=param.device,
                          dtype=param.dtype)
        return eps if self.prior_flow is None else self.prior_flow(eps)

    @torch.no_grad()
    def init_output_bias(self, mean_image: Tensor) -> None:
        """Set the decoder's output bias to ``logit(mean pixel)`` (a fast, standard start)."""
        logit = torch.logit(mean_image.reshape(-1).clamp(1e-3, 1 - 1e-3))
        bias = self.decoder.out.bias
        if bias.numel() == X_DIM:
            bias.copy_(logit.to(bias))
        else:  # conv decoder: one bias per channel
            bias.copy_(logit.mean().to(bias))

    @torch.no_grad()
    def decode_probs(self, z: Tensor) -> Tensor:
        """Pixel probabilities ``sigmoid(dec(z))`` of shape ``(..., 784)``."""
        return torch.sigmoid(self.decoder(z))


def build_vae(
    architecture: str = "mlp",
    latent_dim: int = 32,
    context_dim: int = 0,
    hidden_dims: Sequence[int] = (512, 256),
    activation: Callable[[], nn.Module] = nn.ELU,
    dropout: float = 0.0,
    prior_flow: str | None = None,
    prior_layers: int = 2,
    prior_hidden: Sequence[int] | None = None,
) -> tuple[BernoulliVAE, nn.Module]:
    """A :class:`BernoulliVAE` and its encoder (``context_dim = 0``: no ``h`` head).

    ``prior_flow`` names a registry arch with a one-pass inverse (``"maf"``, ``"realnvp"``) for a
    learned flow prior of ``prior_layers`` layers (conditioner widths ``prior_hidden``, default
    the registry's); ``None`` (default) is the standard normal prior.

    ``hidden_dims`` are the encoder's hidden sizes (the MLP decoder mirrors them); the
    convolutional option uses ``hidden_dims[0]`` for its dense layer.  ``dropout`` (MLP only)
    follows every hidden layer of encoder and decoder during training (a regulariser against
    the decoder memorising the 50k static training images).

    Example:
        >>> vae, enc = build_vae("mlp", latent_dim=8, context_dim=16, hidden_dims=[32])
        >>> vae.decoder(torch.zeros(5, 8)).shape
        torch.Size([5, 784])
        >>> vae, _ = build_vae(latent_dim=8, hidden_dims=[32], prior_flow="maf")
        >>> vae.prior(torch.zeros(3, 8)).log_prob(torch.zeros(3, 8)).shape
        torch.Size([3])
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"build_vae: architecture must be one of {ARCHITECTURES}, got "
                         f"{architecture!r}")
    hidden = [int(h) for h in hidden_dims]
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"build_vae: dropout must be in [0, 1), got {dropout}")
    if dropout > 0 and architecture != "mlp":
        raise ValueError("build_vae: dropout is implemented for the mlp architecture only")
    if not hidden:
        raise ValueError("build_vae: hidden_dims needs at least one size")
    if architecture == "mlp":
        encoder: nn.Module = MLPEncoder(latent_dim, context_dim, hidden, activation, dropout)
        decoder: nn.Module = MLPDecoder(latent_dim, hidden[::-1], activation, dropout)
    else:
        encoder = ConvEncoder(latent_dim, context_dim, hidden[0], activation)
        decoder = ConvDecoder(latent_dim, hidden[0], activation)
    flow = None
    if prior_flow is not None:
        flow = build_flow(prior_flow, latent_dim, num_layers=prior_layers, hidden_dims=prior_hidden)
    return BernoulliVAE(decoder, latent_dim, flow), encoder
