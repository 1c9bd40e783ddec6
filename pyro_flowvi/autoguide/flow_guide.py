"""AutoFlowGuide: a normalizing-flow posterior over every continuous latent of a Pyro model."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.transforms import AffineTransform, LowerCholeskyAffine
from pyro.infer.autoguide import AutoContinuous
from pyro.nn import PyroParam
from torch import Tensor, nn
from torch.distributions import Transform

from pyro_flowvi.autoguide.laplace import choose_start
from pyro_flowvi.autoguide.stl import PathDerivativePosterior
from pyro_flowvi.autoguide.summaries import FlowGuideSummaries
from pyro_flowvi.flows import arch_spec, build_flow, check_flow_options
from pyro_flowvi.initialization import init_to_median_or_feasible
from pyro_flowvi.nn.packing import PackedParameters

__all__ = ["AutoFlowGuide"]

BASES = ("auto", "diagonal", "full")
WARM_STARTS = (None, "auto", "map", "laplace")
AUTO_FULL_BASE_MAX_DIM = 100
"""``base="auto"`` takes a full-rank (lower-triangular) learnable scale up to this latent size."""


def _solve_lower(matrix: Tensor, vector: Tensor) -> Tensor:
    """``matrix^{-1} vector`` for a lower-triangular matrix, or a diagonal given as a vector."""
    if matrix.dim() == 1:
        return vector / matrix
    return torch.linalg.solve_triangular(matrix, vector[:, None], upper=False)[:, 0]


class AutoFlowGuide(FlowGuideSummaries, AutoContinuous):
    """Normalizing-flow guide over all continuous latents, constrained ones via ``biject_to``.

    The latents are packed into one unconstrained vector :math:`z \\in \\mathbb R^D` and

    .. math::

        \\varepsilon \\sim \\mathcal N(0, I_D),\\quad u = f(\\varepsilon),\\quad z = \\mu + L u,
        \\qquad
        \\log q(z) = \\log\\mathcal N(\\varepsilon) - \\log|\\det J_f(\\varepsilon)| - \\log|\\det L|,

    with ``L`` lower triangular (``base="full"``) or ``L_0`` times a learnable diagonal
    (``base="diagonal"``) and ``f`` a flow from the registry (``arch``), initialised at the
    identity: at step 0 the guide is the Gaussian ``N(mu_0, L_0 L_0^T)``.  Sampling and
    ``log q`` of the guide's own samples take one pass.

    **The start.**  On the first call the guide chooses ``N(mu_0, L_0 L_0^T)``:
    ``warm_start="auto"`` (default) finds the MAP of the unconstrained density by L-BFGS with
    Newton polishing and takes the Laplace Gaussian there when its ELBO beats the
    ``init_loc_fn`` point's with scale ``init_scale`` (``None``: the best of 1, 0.1 and 0.01);
    a density without a mode (a centred funnel) falls back to the latter, with a warning that
    says why the MAP search failed.  The flow then acts on whitened coordinates (``mu =
    mu_0 + L_0 mu'``, ``L = L_0 L'``), so correlations near +-1 and scales 10^4 apart start out
    as ``N(0, I)`` for the conditioners and the optimiser.  ``warm_start_record`` says what was
    chosen and why.  The measurements behind these defaults are in ``BENCHMARKS.md``
    ("Real posteriors") and ``docs/posteriors.rst``.

    Args:
        model: a Pyro model with continuous latents.
        arch: any registered architecture (``"iaf"``, ``"realnvp"``, ``"gaussian"``, ...); its
            :class:`~pyro_flowvi.flows.ArchSpec` gives every default below.
        num_layers: flow depth (default ``spec.num_layers``).
        hidden_dims: conditioner widths (default ``spec.hidden(D)``).
        base: ``"auto"`` (full-rank up to ``D = 100``, else diagonal), ``"full"`` or
            ``"diagonal"``.
        init_loc_fn: per-site initial point (default: the prior median, or the zero
            unconstrained point where the prior cannot be sampled, e.g. a flat prior).
        init_scale: initial scale of a start that is not the Laplace one (see above).
        warm_start: ``"auto"``, ``"laplace"``, ``"map"`` (location only) or ``None``.
        warm_start_steps: L-BFGS iterations of the MAP search.
        stl: use the sticking-the-landing (path-derivative) gradient; needs an invertible arch
            (default ``spec.uses_stl(D)``: iaf/maf up to ``D = 64``).
        base_df: ``None`` for the Gaussian base, or the degrees of freedom of a Student-t base
            (unit variance): tails heavier than the flow's affine and Lipschitz layers can make
            from a Gaussian.
        name: the param-store prefix (default ``"AutoFlowGuide"``); give distinct names to use
            several guides at once.
        flow_options: further :func:`~pyro_flowvi.build_flow` options (``scale``,
            ``permutation``, ``activation``...); an unknown one fails here, listing the valid
            names.  For importance-sampling-grade tails train iaf with
            ``permutation="reverse_last_natural"`` and :class:`~pyro_flowvi.MassCoveringELBO`.

    The flow's parameters live in ONE packed parameter, ``flow_packed`` (see
    :class:`~pyro_flowvi.nn.packing.PackedParameters`; :meth:`flow_parameters` gives named views):
    Pyro's optimisers step, and ``pyro.module`` registers, every parameter tensor separately, a
    fixed cost per tensor and step that dominated small guides.  ``ClippedAdam``'s ``clip_norm``
    therefore bounds the norm of the whole flow's gradient, not each layer's.

    Example:
        >>> import pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        >>> guide = AutoFlowGuide(model, arch="realnvp", num_layers=2, hidden_dims=[8])
        >>> sorted(guide())
        ['s', 'x']
        >>> guide.latent_dim, guide.warm_start_record["warm_start"]
        (2, 'laplace')
    """

    def __init__(
        self,
        model: Callable,
        arch: str = "iaf",
        *,
        num_layers: int | None = None,
        hidden_dims: list[int] | None = None,
        base: str = "auto",
        init_loc_fn: Callable = init_to_median_or_feasible,
        init_scale: float | None = None,
        warm_start: str | None = "auto",
        warm_start_steps: int = 200,
        stl: bool | None = None,
        base_df: float | None = None,
        name: str | None = None,
        **flow_options: Any,
    ) -> None:
        spec = arch_spec(arch)  # an unknown arch, option, depth or width fails here
        check_flow_options(arch, flow_options, caller="AutoFlowGuide", num_layers=num_layers,
                           hidden_dims=hidden_dims)
        if base not in BASES:
            raise ValueError(f"AutoFlowGuide: base must be one of {BASES}, got {base!r}")
        if warm_start not in WARM_STARTS:
            raise ValueError(f"AutoFlowGuide: warm_start must be one of {WARM_STARTS}")
        if init_scale is not None and not init_scale > 0:
            raise ValueError(f"AutoFlowGuide: init_scale must be positive, got {init_scale}")
        self.arch = arch
        self.num_layers = spec.num_layers if num_layers is None else num_layers
        self.hidden_dims = hidden_dims
        self.base = base
        self.init_scale = init_scale
        self.warm_start = warm_start
        self.warm_start_steps = warm_start_steps
        self.stl = stl
        if base_df is not None and not (isinstance(base_df, int | float) and base_df > 2):
            raise ValueError(f"AutoFlowGuide: base_df must be a number > 2 (a finite variance) or "
                             f"None for a Gaussian base, got {base_df!r}")
        self.base_df = None if base_df is None else float(base_df)
        self.flow_options = flow_options
        super().__init__(model, init_loc_fn=init_loc_fn)
        # the user's model, without the InitMessenger that AutoContinuous wraps around it: a
        # density evaluation conditions every latent, so initial values are never needed
        self._user_model = (model,)
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"AutoFlowGuide: name must be a non-empty string, got {name!r}")
            self._pyro_name = name  # the param-store prefix ("NAME.flow_packed", ...)

    # -- construction on first call -------------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        try:
            super()._setup_prototype(*args, **kwargs)
        except RuntimeError as err:
            if "found no latent variables" in str(err):
                raise ValueError(
                    "AutoFlowGuide: the model has no latent (unobserved) sample sites, so there is "
                    "nothing to infer; fit its parameters with an empty guide instead."
                ) from None
            raise
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            for f in site["cond_indep_stack"]:  # one packed vector cannot follow a minibatch
                if f.vectorized and f.full_size not in (None, f.size):
                    raise ValueError(
                        f"AutoFlowGuide: latent site {name!r} lies inside the subsampled plate "
                        f"{f.name!r} ({f.size} of {f.full_size}); a global guide cannot follow "
                        "the minibatch. Guide local latents with AmortizedFlowGuide (or AutoNormal "
                        "with create_plates) in an AutoGuideList, AutoFlowGuide the global ones.")
        dim = self.latent_dim
        if self.base == "auto":
            self.base = "full" if dim <= AUTO_FULL_BASE_MAX_DIM else "diagonal"
        start, self.warm_start_record = choose_start(
            self, self._init_loc().detach(), args, kwargs, warm_start=self.warm_start,
            init_scale=self.init_scale, steps=self.warm_start_steps, warn="AutoFlowGuide")
        loc = start.loc
        if start.name == "laplace":  # whiten with the Laplace Cholesky factor (fixed)
            precond, scale0 = start.scale_tril, start.scale_tril
        else:
            precond, scale0 = torch.ones_like(loc), start.scale_tril.diagonal()
        # Learnable parts are in whitened units: scale = scale0 * factor (diagonal) or
        # L0 @ L' (full), and loc = P @ loc_white with P the Laplace scale when warm-started.
        # Only deterministic quantities are buffers, so param-store save/load round-trips.
        # loc_white and the factor's unconstrained values share ONE parameter, ``affine_white``
        # (row 0: loc_white; the rest: the factor before softplus), because Pyro's optimisers
        # step every parameter tensor separately and that overhead dominates small guides.
        self.register_buffer("precond", precond.detach().clone())
        self.register_buffer("scale0", scale0.detach().clone())
        loc_white = _solve_lower(precond, loc.detach())
        raw_one = math.log(math.expm1(1.0))  # softplus(raw_one) = 1: the factor starts at 1 / I
        raw = torch.full_like(loc, raw_one)[None] if self.base == "diagonal" else \
            raw_one * torch.eye(dim, dtype=loc.dtype, device=loc.device)
        self.affine_white = PyroParam(torch.cat([loc_white[None], raw], 0), constraints.real)
        flow = build_flow(self.arch, dim, num_layers=self.num_layers,
                          hidden_dims=self.hidden_dims, **self.flow_options)
        if self.stl is None:
            self.stl = arch_spec(self.arch).uses_stl(dim)
        if self.stl and not flow.has_inverse:
            raise ValueError(
                f"AutoFlowGuide: stl=True scores samples under a parameter-detached copy of the "
                f"flow, which needs an analytic inverse; arch {self.arch!r} has none. Use an "
                "invertible arch (iaf, maf, realnvp) or stl=False."
            )
        flow = flow.to(device=loc.device, dtype=loc.dtype)
        # Every flow parameter lives in ONE packed param, ``flow_packed``: Pyro's optimisers and
        # ``pyro.module`` pay a fixed cost per parameter tensor and step, which dominates small
        # guides (the default iaf: 13 stepped tensors -> 2).  The flow keeps its buffers.
        self._flow_layout = PackedParameters(flow)
        self.flow = flow
        self.flow_packed = PyroParam(self._flow_layout.initial.clone(), constraints.real)
        stored = self.flow_packed
        if stored.shape != self._flow_layout.initial.shape:
            raise ValueError(
                f"AutoFlowGuide: the param store already holds "
                f"{self._pyro_get_fullname('flow_packed')!r} of shape {tuple(stored.shape)}, but "
                f"this guide's {self.arch!r} flow has {self._flow_layout.numel} parameters: "
                "another guide of the same name filled the store. Call pyro.clear_param_store() "
                "before building a different guide.")

    def _loc_scale(self, packed: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(mu, L)`` of the affine map from the one packed parameter (default: one param-store
        read of ``affine_white``): ``mu = P loc_white``, ``L = s0 * softplus(raw)`` (diagonal)
        or ``L = L0 (tril(raw, -1) + diag(softplus(diag raw)))`` (full)."""
        packed = self.affine_white if packed is None else packed
        loc_white, raw = packed[0], packed[1:]
        precond, scale0 = self.precond, self.scale0
        loc = precond * loc_white if precond.dim() == 1 else precond @ loc_white
        if self.base == "diagonal":  # s0 * s' (vector), or L0 diag(s') (column scaling)
            return loc, scale0 * F.softplus(raw[0])
        factor = raw.tril(-1) + torch.diag_embed(F.softplus(raw.diagonal()))
        return loc, (scale0[:, None] * factor if scale0.dim() == 1 else scale0 @ factor)

    @torch.no_grad()
    def set_affine(self, loc: Tensor | None = None, scale: Tensor | None = None) -> None:
        """Set the affine map's location ``mu`` and/or scale ``L`` (a positive vector for
        ``base="diagonal"``, a lower-triangular matrix with positive diagonal for ``"full"``),
        e.g. to start from a known posterior approximation.  Call the guide once first."""
        packed = self.affine_white.detach().clone()
        if loc is not None:
            loc = torch.as_tensor(loc, dtype=packed.dtype, device=packed.device)
            packed[0] = _solve_lower(self.precond, loc)
        if scale is not None:
            scale = torch.as_tensor(scale, dtype=packed.dtype, device=packed.device)
            if self.base == "diagonal" and self.scale0.dim() == 1:
                factor = scale / self.scale0
            else:
                s0 = self.scale0 if self.scale0.dim() == 2 else torch.diag(self.scale0)
                full = scale if scale.dim() == 2 else torch.diag(scale)
                factor = torch.linalg.solve_triangular(s0, full, upper=False)
                if self.base == "diagonal":
                    if not torch.allclose(factor, torch.diag(factor.diagonal()), atol=1e-6):
                        raise ValueError(
                            "AutoFlowGuide.set_affine: with base='diagonal' the scale must be "
                            "L0 diag(s) for the guide's fixed L0 (scale0); use base='full' to "
                            "set any lower-triangular scale")
                    factor = factor.diagonal()
            if not bool((factor.diagonal() if factor.dim() == 2 else factor).gt(0).all()):
                raise ValueError("AutoFlowGuide.set_affine: the scale must have a positive "
                                 f"diagonal (relative to scale0), got {scale.tolist()}")
            inv_softplus = lambda v: v + torch.log(-torch.expm1(-v))  # noqa: E731
            if self.base == "diagonal":
                packed[1] = inv_softplus(factor)
            else:
                raw = factor.tril(-1) + torch.diag_embed(inv_softplus(factor.diagonal()))
                packed[1:] = raw
        self.affine_white = packed

    @property
    def loc(self) -> Tensor:
        """Location of the affine map: ``P @ loc_white``."""
        return self._loc_scale()[0]

    @property
    def scale(self) -> Tensor:
        """Diagonal scale (``base="diagonal"``) or lower-triangular scale (``base="full"``)."""
        return self._loc_scale()[1]

    def _live_flow(self, flat: Tensor | list[Tensor] | None = None) -> nn.Module:
        """The flow with views of ``flat`` (default: the current ``flow_packed``, read through
        the param store, so a loaded store takes effect and SVI sees the parameter) installed as
        its parameters; or a list of tensors, one per parameter (``PackedParameters.install``)."""
        flow = self._modules["flow"]
        self._flow_layout.install(flow, self.flow_packed if flat is None else flat)
        return flow

    def flow_parameters(self) -> dict[str, Tensor]:
        """The flow's parameters by name: views of the one packed parameter ``flow_packed``
        (write to them under ``torch.no_grad()`` to change the flow)."""
        return self._flow_layout.named_views(self.flow_packed)

    # -- the posterior ---------------------------------------------------------------------------
    def get_base_dist(self) -> dist.TorchDistribution:
        """``N(0, I_D)``, or with ``base_df`` independent Student-t(``base_df``) coordinates of
        unit variance, on the guide's device and dtype (built once, then reused)."""
        key = (self.latent_dim, self.scale0.device, self.scale0.dtype, self.base_df)
        cached = self.__dict__.get("_base_dist_cache")
        if cached is None or cached[0] != key:
            zeros = self.scale0.new_zeros(self.latent_dim)
            if self.base_df is None:
                base = dist.Normal(zeros, torch.ones_like(zeros))
            else:  # scale sqrt((df - 2) / df): unit variance, so the Laplace scale still fits
                df = self.base_df
                base = dist.StudentT(torch.full_like(zeros, df), zeros,
                                     torch.full_like(zeros, math.sqrt((df - 2) / df)))
            cached = (key, base.to_event(1))
            self.__dict__["_base_dist_cache"] = cached
        return cached[1]

    def _affine(self, loc: Tensor | None = None, scale: Tensor | None = None) -> Transform:
        """The affine map ``z = loc + L u`` (defaults: the live ``self.loc``, ``self.scale``)."""
        if loc is None or scale is None:
            loc, scale = self._loc_scale()
        if scale.dim() == 1:
            return AffineTransform(loc, scale, event_dim=1, cache_size=1)
        return LowerCholeskyAffine(loc, scale).with_cache(1)

    def get_transform(self, *args: Any, **kwargs: Any) -> Transform:
        return torch.distributions.ComposeTransform([self._live_flow(), self._affine()])

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.TorchDistribution:
        return dist.TransformedDistribution(self.get_base_dist(),
                                            [self._live_flow(), self._affine()])

    def _frozen_flow(self, flat: Tensor | None = None) -> nn.Module:
        """A structural copy of the flow that computes with *detached* views of ``flat``
        (default: the current ``flow_packed``): the STL scoring flow.

        The views share storage with ``flat``, so optimiser steps (and ActNorm's in-place data
        init) reach the copy with no work per step; they are re-installed only when the packed
        tensor is replaced (a param-store load) or under JIT tracing.  The copy shares the live
        flow's buffers; ``_apply`` (``.to()``, ``.double()``) drops it."""
        flat = self.flow_packed if flat is None else flat
        cache = self.__dict__.get("_frozen_flow_cache")  # deliberately not a registered submodule
        if cache is None:
            flow = self._modules["flow"]
            self._flow_layout.install(flow, flat.detach())  # a deep copy needs leaf tensors
            twin = copy.deepcopy(flow)
            for twin_mod, live_mod in zip(twin.modules(), flow.modules(), strict=True):
                for name, buf in live_mod._buffers.items():
                    twin_mod._buffers[name] = buf
            cache = self.__dict__["_frozen_flow_cache"] = {"twin": twin, "flat": None}
        if cache["flat"] is not flat or torch.jit.is_tracing():
            self._flow_layout.install(cache["twin"], flat.detach())
            cache["flat"] = flat
        return cache["twin"]

    def __getstate__(self) -> dict[str, Any]:
        # Copying or pickling (deepcopy, torch.save): the flow holds views of ``flow_packed``
        # that carry autograd history, which neither allows.  Install detached views (the
        # next call re-installs live ones) and leave out the STL copy, a cache.
        flat = self._parameters.get("flow_packed_unconstrained")
        if flat is not None and "_flow_layout" in self.__dict__:
            self._flow_layout.install(self._modules["flow"], flat.detach())
        state = dict(super().__getstate__())
        state.pop("_frozen_flow_cache", None)
        return state

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> AutoFlowGuide:
        self.__dict__.pop("_frozen_flow_cache", None)  # its buffers are about to be replaced
        self.__dict__.pop("_base_dist_cache", None)
        return super()._apply(fn, *args, **kwargs)

    def sample_latent(self, *args: Any, **kwargs: Any) -> Tensor:
        flat = self.flow_packed
        frozen = self._frozen_flow(flat) if self.stl and torch.is_grad_enabled() else None
        flow = self._live_flow(flat)
        loc, scale = self._loc_scale()
        base = self.get_base_dist()
        posterior = dist.TransformedDistribution(base, [flow, self._affine(loc, scale)])
        if frozen is not None:

            def frozen_log_prob(z: Tensor) -> Tensor:
                # log q(z) = log p0(f^-1(u)) - log|det J_f| - log|det L|, u = L^-1 (z - mu),
                # every parameter detached: only the path through z keeps its gradient.
                affine = self._affine(loc.detach(), scale.detach())
                u = affine.inv(z)
                eps, flow_ladj = frozen.inverse_and_ladj(u)
                return base.log_prob(eps) - flow_ladj - affine.log_abs_det_jacobian(u, z)

            posterior = PathDerivativePosterior(posterior, frozen_log_prob)
        return pyro.sample(f"_{self._pyro_name}_latent", posterior, infer={"is_auxiliary": True})
