"""AmortizedFlowGuide: an encoder plus a conditional flow over each data point's local latents."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoGuide
from pyro.poutine.indep_messenger import CondIndepStackFrame
from torch import Tensor, nn
from torch.distributions import biject_to

from pyro_flowvi.flows import arch_spec, build_flow, check_flow_options
from pyro_flowvi.transforms.base import ConditionalFlowTransform

__all__ = ["AmortizedFlowGuide", "EncoderOutput", "LocalSite"]

"""``arch`` values (besides ``None``) meaning no flow: the plain amortized Gaussian."""


class EncoderOutput(NamedTuple):
    """What an encoder returns for a batch of ``B`` data points (validated by the guide)."""

    loc: Tensor  #: ``(B, D)`` base location
    scale: Tensor  #: ``(B, D)`` base scale (positive)
    context: Tensor | None  #: ``(B, C)`` the flow's context ``h`` (``None``: Gaussian guide)


class LocalSite(NamedTuple):
    """A local latent site of the model and its slice of the packed unconstrained vector."""

    name: str
    event_shape: torch.Size  #: constrained event shape (as the model samples it)
    unconstrained_shape: torch.Size  #: event shape in the unconstrained space
    support: constraints.Constraint
    start: int
    stop: int


def _is_real(support: constraints.Constraint) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return type(support) is type(constraints.real)


class AmortizedFlowGuide(AutoGuide):
    """Amortized normalizing-flow guide: ``q(z | x)`` for the local latents of each data point.

    An encoder maps a batch of data to a Gaussian base and a context vector ``h``; a conditional
    flow from the registry, conditioned on ``h``, pushes the base sample forward:

    .. math::

        (\\mu, \\sigma, h) = \\mathrm{enc}_\\phi(x),\\qquad
        \\varepsilon \\sim \\mathcal N(0, I_D),\\quad z_0 = \\mu + \\sigma \\odot \\varepsilon,
        \\quad z = f_K(\\cdots f_1(z_0; h) \\cdots; h),

        \\log q_\\phi(z \\mid x) = \\sum_{i=1}^D \\log \\mathcal N(z_{0,i}; \\mu_i, \\sigma_i^2)
        - \\sum_{k=1}^K \\log\\left|\\det J_{f_k}(z_{k-1}; h)\\right|.

    Sampling and ``log q`` of the sample take one pass (the log-det is cached): the IAF use case
    of Kingma et al. (2016), where ``h`` enters every MADE.  With ``arch="sylvester"`` every
    parameter of each Sylvester layer (``Q, R, R~, b``) is a function of ``h`` (the amortized
    Sylvester flow of van den Berg et al. 2018: the encoder's context emits the flow's
    parameters through a hypernetwork head).  ``arch=None`` (or ``"gaussian"``) is the plain
    amortized diagonal Gaussian (``K = 0``), the usual VAE encoder.

    The guide finds the model's local latents by tracing it once: every unobserved sample site
    must sit inside one plate (the data plate), whose subsample the encoder's input is.  Several
    local sites (or constrained ones) are packed into one vector ``z``, sampled as an auxiliary
    site and unpacked through ``biject_to(support)`` as ``Delta`` sites; a single unconstrained
    site with event shape ``(D,)`` is sampled directly under its own name.  The guide samples
    inside a plate of the same name, size and subsample size, so Pyro scales both ``log p`` and
    ``log q`` by ``N / B``.  Plate size: taken from ``create_plates`` when given (the Pyro
    convention), else from the model's first trace: a subsampled plate keeps its full size
    ``N`` with the current batch as subsample; a plate without subsampling takes the batch size.
    Global latents (outside the plate) belong to another guide: see the example with
    ``AutoGuideList`` in the docs.

    Both the encoder and the flow are registered with ``pyro.module`` on every call, so the
    param store (and ``state_dict``) saves and restores them.

    References:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling, "Improving Variational Inference
        with Inverse Autoregressive Flow", NeurIPS 2016, arXiv:1606.04934.
        van den Berg, Hasenclever, Tomczak, Welling, "Sylvester Normalizing Flows for Variational
        Inference", UAI 2018, arXiv:1803.05649.

    Args:
        model: a Pyro model whose latents are all local (inside one plate).
        encoder: an ``nn.Module``; ``encoder(x)`` returns ``(loc, scale, h)`` with shapes
            ``(B, D)``, ``(B, D)``, ``(B, context_dim)`` (``(loc, scale)`` for the Gaussian guide).
        arch: a registered flow architecture with a conditional form (``"iaf"``, ``"realnvp"``,
            ``"maf"``, ``"sylvester"``, ...) or ``None`` / ``"gaussian"`` for no flow.
        num_layers: number of flow layers ``K`` (default the arch's ``spec.num_layers``; ``0``
            also means no flow).  ``num_flows`` is its deprecated old name.
        context_dim: size of ``h``; ``None`` infers it from the encoder's first output.
        hidden_dims: conditioner hidden sizes of every flow layer (default the arch's
            ``spec.hidden(D)``, as everywhere: see :func:`~pyro_flowvi.flows.arch_spec`).
        plate_name: the data plate's name; ``None`` takes the plate of the local sites.
        data_fn: maps the model's ``(*args, **kwargs)`` to the encoder's input; default the first
            positional argument.
        create_plates: as in Pyro's ``AutoGuide``: ``create_plates(*args, **kwargs)`` returns the
            data plate (for a plate size that changes between calls).
        flow_options: passed to :func:`~pyro_flowvi.build_flow` (``scale="sigmoid"``, ...).

    Example:
        >>> import pyro.distributions as dist
        >>> class Encoder(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = torch.nn.Linear(5, 2 + 2 + 8)
        ...     def forward(self, x):
        ...         loc, raw, h = self.net(x).split([2, 2, 8], -1)
        ...         return loc, torch.nn.functional.softplus(raw), h
        >>> def model(x):
        ...     with pyro.plate("data", 1000, subsample_size=len(x)):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        ...         pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)
        >>> guide = AmortizedFlowGuide(model, Encoder(), arch="iaf", num_layers=2)
        >>> x = torch.randn(10, 5)
        >>> guide(x)["z"].shape
        torch.Size([10, 2])
        >>> guide.latent_dim, guide.context_dim, guide.plate_frame.full_size
        (2, 8, 1000)
    """

    def __init__(
        self,
        model: Callable,
        encoder: nn.Module,
        arch: str | None = "iaf",
        num_layers: int | None = None,
        context_dim: int | None = None,
        hidden_dims: list[int] | None = None,
        *,
        plate_name: str | None = None,
        data_fn: Callable[..., Tensor] | None = None,
        create_plates: Callable | None = None,
        num_flows: int | None = None,
        **flow_options: Any,
    ) -> None:
        if not isinstance(encoder, nn.Module):
            raise TypeError(
                f"AmortizedFlowGuide: encoder must be a torch.nn.Module, got {type(encoder).__name__}")
        if num_flows is not None:  # the old name of num_layers
            warnings.warn("AmortizedFlowGuide: num_flows is now num_layers (one name across the "
                          "library); num_flows will be removed", DeprecationWarning, stacklevel=2)
            if num_layers is not None and num_layers != num_flows:
                raise ValueError("AmortizedFlowGuide: give num_layers or num_flows, not both")
            num_layers = num_flows
        arch = "gaussian" if arch is None else arch
        spec = arch_spec(arch)  # an unknown arch, option, depth or width fails here
        check_flow_options(arch, flow_options, caller="AmortizedFlowGuide",
                           num_layers=num_layers, hidden_dims=hidden_dims)
        if context_dim is not None and (isinstance(context_dim, bool) or not isinstance(
                context_dim, int) or context_dim < 1):
            raise ValueError(
                f"AmortizedFlowGuide: context_dim must be a positive integer, got {context_dim!r}")
        super().__init__(model, create_plates=create_plates)
        self.encoder = encoder
        layers = spec.num_layers if num_layers is None or spec.num_layers == 0 else num_layers
        self.arch = arch if layers > 0 else None  # None: the Gaussian guide, no flow
        self.num_layers = layers if self.arch is not None else 0
        self.context_dim = None if context_dim is None else int(context_dim)
        self.hidden_dims = None if hidden_dims is None else [int(h) for h in hidden_dims]
        self.plate_name = plate_name
        self.data_fn = data_fn
        self.flow_options = flow_options
        self.flow: ConditionalFlowTransform | None = None
        self.sites: list[LocalSite] = []
        self.latent_dim = 0
        self.plate_frame: CondIndepStackFrame | None = None

    # -- structure of the model -------------------------------------------------------------------
    def _encoder_input(self, *args: Any, **kwargs: Any) -> Tensor:
        if self.data_fn is not None:
            return self.data_fn(*args, **kwargs)
        if not args or not isinstance(args[0], Tensor):
            raise ValueError(
                "AmortizedFlowGuide: the encoder's input is the model's first positional "
                "argument by default, but the model was called without a tensor there; pass "
                "data_fn=lambda *args, **kwargs: ... to pick the data.")
        return args[0]

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        trace = self.prototype_trace
        latents = [(name, site) for name, site in trace.iter_stochastic_nodes()
                   if not site["infer"].get("is_auxiliary")]
        if not latents:
            raise ValueError(
                "AmortizedFlowGuide: the model has no latent (unobserved) sample sites, so there "
                "is nothing to infer.")
        frame: CondIndepStackFrame | None = None
        for name, site in latents:
            frames = [f for f in site["cond_indep_stack"] if f.vectorized]
            if self.plate_name is not None:
                frames = [f for f in frames if f.name == self.plate_name]
            if not frames:
                where = f"plate {self.plate_name!r}" if self.plate_name else "any plate"
                raise ValueError(
                    f"AmortizedFlowGuide: latent site {name!r} is outside {where}; this guide "
                    "handles local latents only (one per data point, inside the data plate). "
                    "Give global latents their own guide and combine the two: guide = "
                    "AutoGuideList(model); guide.append(AutoFlowGuide(poutine.block(model, "
                    f"hide=[<local sites>]))); guide.append(AmortizedFlowGuide("
                    f"poutine.block(model, expose=[<local sites>]), encoder)).")
            if len(frames) > 1:
                raise ValueError(
                    f"AmortizedFlowGuide: latent site {name!r} is inside nested plates "
                    f"{[f.name for f in frames]}; pass plate_name=... to say which one is the "
                    "data plate (the others must be part of the site's event shape).")
            if frame is not None and frames[0].name != frame.name:
                raise ValueError(
                    f"AmortizedFlowGuide: local latents sit in different plates ({frame.name!r} "
                    f"and {frames[0].name!r}); pass plate_name=... for the data plate.")
            frame = frames[0]
            fn = site["fn"]
            if fn.support.is_discrete:
                raise ValueError(
                    f"AmortizedFlowGuide: latent site {name!r} is discrete ({type(fn).__name__}); "
                    "a flow guide needs continuous latents (enumerate or marginalise it out).")
        assert frame is not None
        self.plate_frame = frame
        offset, self.sites = 0, []
        for name, site in latents:
            fn, value = site["fn"], site["value"]
            batch_ndim = value.dim() - len(fn.event_shape)
            if batch_ndim != -frame.dim or value.shape[frame.dim - len(fn.event_shape)] != frame.size:
                raise ValueError(
                    f"AmortizedFlowGuide: latent site {name!r} has batch shape "
                    f"{tuple(value.shape[:batch_ndim])}; expected the data plate's size "
                    f"{frame.size} at dim {frame.dim} and nothing else (move other dimensions "
                    "into the event with .to_event()).")
            unconstrained = biject_to(fn.support).inv(value)
            ushape = unconstrained.shape[batch_ndim:]
            size = ushape.numel()
            self.sites.append(LocalSite(name, fn.event_shape, ushape, fn.support, offset,
                                        offset + size))
            offset += size
        self.latent_dim = offset
        self._direct = (len(self.sites) == 1 and _is_real(self.sites[0].support)
                        and len(self.sites[0].event_shape) == 1)
        out = self._encode(self._encoder_input(*args, **kwargs))
        if self.arch is not None:
            dim = self.latent_dim
            flow = build_flow(self.arch, dim, context_dim=self.context_dim,
                              num_layers=self.num_layers, hidden_dims=self.hidden_dims,
                              **self.flow_options)
            self.flow = flow.to(device=out.loc.device, dtype=out.loc.dtype)

    def _encode(self, x: Tensor) -> EncoderOutput:
        """Run the encoder and check its output against ``(B, D), (B, D), (B, context_dim)``."""
        batch = x.shape[0] if x.dim() else None
        out = self.encoder(x)
        if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
            raise ValueError(
                "AmortizedFlowGuide: the encoder must return a tuple (loc, scale, h) (or "
                f"(loc, scale) for the Gaussian guide), got {type(out).__name__}"
                + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
        loc, scale = out[0], out[1]
        h = out[2] if len(out) == 3 else None
        expected = (batch, self.latent_dim)
        for label, value in (("loc", loc), ("scale", scale)):
            if not isinstance(value, Tensor) or tuple(value.shape) != expected:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(
                    f"AmortizedFlowGuide: encoder output {label} has shape {got}; expected "
                    f"{expected} = (batch size of the input, latent dim "
                    f"{'+'.join(str(s.stop - s.start) for s in self.sites)} of sites "
                    f"{[s.name for s in self.sites]}).")
        if self.arch is not None:
            if h is None:
                raise ValueError(
                    f"AmortizedFlowGuide: arch {self.arch!r} needs a context: the encoder must "
                    "return (loc, scale, h), it returned (loc, scale).")
            if self.context_dim is None:
                if not isinstance(h, Tensor) or h.dim() != 2:
                    raise ValueError(
                        "AmortizedFlowGuide: the encoder's context h must have shape "
                        f"(batch, context_dim), got {getattr(h, 'shape', type(h).__name__)}")
                self.context_dim = int(h.shape[-1])
            if not isinstance(h, Tensor) or tuple(h.shape) != (batch, self.context_dim):
                got = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
                raise ValueError(
                    f"AmortizedFlowGuide: encoder output h has shape {got}; expected "
                    f"{(batch, self.context_dim)} = (batch size, context_dim).")
        return EncoderOutput(loc, scale, h)

    # -- the posterior ----------------------------------------------------------------------------
    def posterior(self, x: Tensor) -> dist.TorchDistribution:
        """``q(z | x)`` over the packed latent vector: batch shape ``(B,)``, event shape ``(D,)``.

        A ``TransformedDistribution`` of ``Normal(loc, scale)`` by the flow conditioned on ``h``
        (or the Normal itself for the Gaussian guide).  Its ``rsample`` followed by ``log_prob``
        of that sample reuses the cached log-dets (no inversion).
        """
        if self.prototype_trace is None:
            raise RuntimeError("AmortizedFlowGuide: call the guide once before posterior()")
        loc, scale, h = self._encode(x)
        assert self.plate_frame is not None
        if self.plate_frame.dim != -1:  # put the data dimension where the plate expects it
            view = (x.shape[0],) + (1,) * (-self.plate_frame.dim - 1)
            loc, scale = loc.reshape(view + (-1,)), scale.reshape(view + (-1,))
            h = None if h is None else h.reshape(view + (-1,))
        base = dist.Normal(loc, scale).to_event(1)
        if self.flow is None:
            return base
        return dist.TransformedDistribution(base, [self.flow.condition(h)])

    def _plate(self, batch: int, *args: Any, **kwargs: Any) -> pyro.plate:
        frame = self.plate_frame
        assert frame is not None
        if self.master is not None or self.create_plates is not None:
            plates = self._create_plates(*args, **kwargs)
            if frame.name in plates:
                return plates[frame.name]
        subsampled = frame.full_size is not None and frame.full_size != frame.size
        full = frame.full_size if subsampled else batch
        return pyro.plate(frame.name, full, subsample_size=batch, dim=frame.dim)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        pyro.module(self._pyro_get_fullname("encoder"), self.encoder, update_module_params=True)
        if self.flow is not None:
            pyro.module(self._pyro_get_fullname("flow"), self.flow, update_module_params=True)
        x = self._encoder_input(*args, **kwargs)
        posterior = self.posterior(x)
        batch = x.shape[0]
        result: dict[str, Tensor] = {}
        with self._plate(batch, *args, **kwargs):
            if self._direct:
                site = self.sites[0]
                result[site.name] = pyro.sample(site.name, posterior)
                return result
            packed = pyro.sample(f"_{self._pyro_name}_latent", posterior,
                                 infer={"is_auxiliary": True})
            batch_shape = packed.shape[:-1]
            for site in self.sites:
                u = packed[..., site.start:site.stop].reshape(batch_shape + site.unconstrained_shape)
                transform = biject_to(site.support)
                value = transform(u)
                log_density = transform.inv.log_abs_det_jacobian(value, u)
                extra = log_density.dim() - len(batch_shape)
                if extra > 0:
                    log_density = log_density.sum(list(range(-extra, 0)))
                result[site.name] = pyro.sample(
                    site.name,
                    dist.Delta(value, log_density=log_density, event_dim=len(site.event_shape)))
        return result

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, num_layers={self.num_layers}, latent_dim={self.latent_dim}, "
                f"context_dim={self.context_dim}")

