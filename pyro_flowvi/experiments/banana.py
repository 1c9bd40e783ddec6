"""Banana benchmark: stock Pyro guides against flow guides on a target with known log Z = 0.

The model is one 2-D site ``z ~ Banana(a, b, sigma)`` (:class:`~pyro_flowvi.targets.Banana`), a
normalised density, so for every guide ``q``

.. math::

    \\mathrm{KL}(q \\,\\|\\, p) = \\mathbb E_q[\\log q(z) - \\log p(z)] = -\\mathrm{ELBO},

estimated on ``--num-eval`` fresh draws, with the PSIS :math:`\\hat k` of the same importance
weights.  Each guide is trained with ``Trace_ELBO(num_particles=8, vectorize_particles=True)`` and
Adam for ``--steps`` steps on each seed: lr ``5e-3`` for the first half, then a geometric decay to
``2.5e-4`` (:func:`lr_factor`; the same schedule for every guide, stock ones included;
``--lr-decay 1`` gives the constant rate).  A flow guide named ``ARCH+fkl`` (``iaf+fkl`` is
in the default list) is trained with :class:`~pyro_flowvi.MassCoveringELBO` instead (8 ELBO
particles plus ``--forward-particles`` forward-KL draws, weight ``--forward-weight``), so the
two objectives sit side by side.  For every flow guide (a
``TransformedDistribution`` posterior) the run also *asserts* the entropy sign-flip identity
(:func:`entropy_sign_check`).  ``metrics.json``, ``samples.png`` (target contours with each
guide's draws) and ``elbo_traces.png`` are written to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions.transforms as T
import torch
from matplotlib.figure import Figure
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import (
    AutoGuide,
    AutoIAFNormal,
    AutoMultivariateNormal,
    AutoNormal,
    AutoNormalizingFlow,
)
from pyro.optim import Adam, LambdaLR, PyroLRScheduler, PyroOptim
from torch import Tensor
from torch.distributions import TransformedDistribution
from tqdm.auto import tqdm

import pyro_flowvi
from pyro_flowvi import AutoFlowGuide, MassCoveringELBO
from pyro_flowvi.diagnostics import importance_log_weights, psis_khat
from pyro_flowvi.experiments.common import (
    add_runtime_arguments,
    config_values,
    key_value_option,
    report_run,
    torch_threads,
)
from pyro_flowvi.flows import arch_spec, available_archs
from pyro_flowvi.targets import Banana

__all__ = [
    "DEFAULT_GUIDES",
    "FLOW_GUIDES",
    "lr_factor",
    "make_optimizer",
    "HELP",
    "STOCK_GUIDES",
    "COVERING_SUFFIX",
    "BananaConfig",
    "EntropyIdentityError",
    "add_arguments",
    "banana_model",
    "config_from_args",
    "entropy_sign_check",
    "evaluate_guide",
    "fit_guide",
    "format_report",
    "make_guide",
    "run",
    "run_banana",
    "split_objective",
]

HELP = "fit stock and flow guides to a banana (log Z = 0); report KL, k-hat and entropy checks"
LATENT_DIM = 2

FLOW_GUIDES = ("iaf", "realnvp", "sylvester", "flowified")
"""Our guides: :class:`~pyro_flowvi.AutoFlowGuide` with this ``arch`` (skipped if unregistered)."""

COVERING_SUFFIX = "+fkl"
"""A flow guide name ending in this (e.g. ``"iaf+fkl"``) is trained with
:class:`~pyro_flowvi.MassCoveringELBO` (``forward_particles``, ``forward_weight`` from the config)
instead of ``Trace_ELBO``: the same guide, the mass-covering objective, side by side."""


def split_objective(name: str) -> tuple[str, bool]:
    """``(guide name, trained with the mass-covering objective)`` for a banana guide name.

    Example:
        >>> split_objective("iaf+fkl"), split_objective("AutoNormal")
        (('iaf', True), ('AutoNormal', False))
    """
    if name.endswith(COVERING_SUFFIX):
        return name[: -len(COVERING_SUFFIX)], True
    return name, False


def _stock_iaf_equal_size(model: Callable) -> AutoGuide:
    """``AutoIAFNormal`` with the depth and widths of ``AutoFlowGuide(model, "iaf")``."""
    spec = arch_spec("iaf")
    return AutoIAFNormal(model, hidden_dim=spec.hidden(LATENT_DIM), num_transforms=spec.num_layers)


def _stock_coupling(model: Callable, num_layers: int = 4, hidden: int = 64) -> AutoGuide:
    """``AutoNormalizingFlow`` of Pyro affine couplings, reversing the coordinates in between."""

    def init(dim: int) -> T.ComposeTransformModule:
        parts: list[torch.distributions.Transform] = []
        for k in range(num_layers):
            if k:
                parts.append(T.Permute(torch.arange(dim - 1, -1, -1)))
            parts.append(T.affine_coupling(dim, hidden_dims=[hidden, hidden]))
        return T.ComposeTransformModule(parts)

    return AutoNormalizingFlow(model, init)


STOCK_GUIDES: dict[str, Callable[[Callable], AutoGuide]] = {
    "AutoNormal": AutoNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoIAFNormal": _stock_iaf_equal_size,
    "AutoIAFNormal-default": AutoIAFNormal,
    "AutoIAFNormal-2x32": lambda m: AutoIAFNormal(m, hidden_dim=[32, 32], num_transforms=2),
    "AutoNormalizingFlow-coupling": _stock_coupling,
}
"""Stock Pyro guides by name.  ``AutoIAFNormal`` has the size of our default ``iaf`` guide."""

DEFAULT_GUIDES = ("AutoNormal", "AutoMultivariateNormal", "AutoIAFNormal", *FLOW_GUIDES,
                  "iaf" + COVERING_SUFFIX)


class EntropyIdentityError(AssertionError):
    """A flow guide violates ``log q = log N(eps) - sum log|det J|`` or its entropy form."""


@dataclass
class BananaConfig:
    """Settings of a banana run (the CLI flags have the same names, with dashes).

    ``guides`` names stock guides (:data:`STOCK_GUIDES`) or flow archs (:data:`FLOW_GUIDES`, or
    any registered arch); ``guide_options`` are extra ``AutoFlowGuide`` keyword arguments for the
    flow guides (the defaults are ``AutoFlowGuide``'s).  The optimiser settings are those of the
    AutoFlowGuide issue (8 vectorised particles, Adam lr ``5e-3``, 3000 steps) plus a decay over
    the second half to ``lr * lr_decay``: with a constant rate, Adam's parameter jitter sets the
    KL floor (iaf worst seed 0.038 / 0.043 nats on b = 1 / 2 against 0.010 / 0.030 with it).
    """

    b: float = 1.0
    a: float = 1.0
    sigma: float = 0.5
    guides: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_GUIDES))
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    steps: int = 3000
    num_particles: int = 8
    forward_particles: int = 256
    forward_weight: float = 2.0
    lr: float = 5e-3
    lr_decay: float = 0.05
    lr_decay_start: float = 0.5
    guide_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_eval: int = 20_000
    num_khat: int = 200_000
    num_entropy: int = 20_000
    entropy_tolerance_se: float = 4.0
    num_plot: int = 2000
    out: str = "outputs/banana"
    progress: bool = True
    plots: bool = True
    num_threads: int | None = 1


def banana_model(a: float = 1.0, b: float = 1.0, sigma: float = 0.5) -> Callable[[], None]:
    """A Pyro model with the single latent site ``z ~ Banana(a, b, sigma)``.

    Example:
        >>> model = banana_model(b=2.0)
        >>> pyro.poutine.trace(model).get_trace().nodes["z"]["value"].shape
        torch.Size([2])
    """
    target = Banana(a, b, sigma)

    def model() -> None:
        pyro.sample("z", target)

    return model


def make_guide(name: str, model: Callable, **guide_options: Any) -> AutoGuide | None:
    """The guide called ``name``: a stock Pyro guide, or ``AutoFlowGuide(model, arch=name)``.

    Returns ``None`` for a flow arch that is not registered (e.g. ``"flowified"`` before it
    lands), so callers can skip it.  ``guide_options`` go to ``AutoFlowGuide`` only.  A
    ``"+fkl"`` suffix (:data:`COVERING_SUFFIX`) names the objective, not the guide: it is dropped.
    """
    name, covering = split_objective(name)
    if covering and name in STOCK_GUIDES:
        raise ValueError(f"banana: {name + COVERING_SUFFIX!r}: the mass-covering objective needs "
                         "an AutoFlowGuide (a flow arch), not a stock guide")
    if name in STOCK_GUIDES:
        return STOCK_GUIDES[name](model)
    if name.lower() not in available_archs():
        if name in FLOW_GUIDES:
            return None
        raise ValueError(
            f"banana: unknown guide {name!r}; use one of {sorted(STOCK_GUIDES)} or a registered "
            f"arch ({', '.join(available_archs())})"
        )
    return AutoFlowGuide(model, arch=name, **guide_options)


def lr_factor(step: int, cfg: BananaConfig) -> float:
    """Learning-rate multiplier at ``step``: ``1`` until ``lr_decay_start * steps``, then a
    geometric decay reaching ``lr_decay`` at the last step (the same for every guide):

    .. math:: \\eta_t = \\eta_0\\, \\rho^{\\max(0,\\, t - t_0) / (T - t_0)}.

    Example:
        >>> cfg = BananaConfig(steps=100, lr_decay=0.1, lr_decay_start=0.5)
        >>> [round(lr_factor(t, cfg), 3) for t in (0, 50, 75, 100)]
        [1.0, 1.0, 0.316, 0.1]
    """
    start = cfg.lr_decay_start * cfg.steps
    if step <= start:
        return 1.0
    return cfg.lr_decay ** ((step - start) / max(cfg.steps - start, 1))


def make_optimizer(cfg: BananaConfig) -> PyroOptim:
    """Adam at ``cfg.lr``, under the schedule :func:`lr_factor` when ``cfg.lr_decay < 1``
    (call ``.step()`` on the returned scheduler after each SVI step).

    Example:
        >>> type(make_optimizer(BananaConfig(lr_decay=0.1))).__name__
        'PyroLRScheduler'
    """
    if not 0.0 < cfg.lr_decay <= 1.0:
        raise ValueError(f"banana: lr_decay must be in (0, 1], got {cfg.lr_decay}")
    if not 0.0 <= cfg.lr_decay_start < 1.0:
        raise ValueError(f"banana: lr_decay_start must be in [0, 1), got {cfg.lr_decay_start}")
    if cfg.lr_decay == 1.0:
        return Adam({"lr": cfg.lr})
    return LambdaLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": cfg.lr},
                     "lr_lambda": lambda step: lr_factor(step, cfg)})


def fit_guide(
    name: str,
    cfg: BananaConfig,
    seed: int,
    *,
    guide_options: dict[str, Any] | None = None,
) -> tuple[Callable, AutoGuide, np.ndarray, float] | None:
    """Train guide ``name`` on seed ``seed``: returns ``(model, guide, losses, seconds)``.

    ``losses`` are the per-step negative ELBO estimates; ``seconds`` is the wall time of steps
    ``2..steps`` (the first builds the guide), per step.  ``None`` if the guide is unavailable.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = banana_model(cfg.a, cfg.b, cfg.sigma)
    options = cfg.guide_options if guide_options is None else guide_options
    guide = make_guide(name, model, **options)
    if guide is None:
        return None
    if split_objective(name)[1]:
        elbo = MassCoveringELBO(num_particles=cfg.num_particles,
                                forward_particles=cfg.forward_particles,
                                forward_weight=cfg.forward_weight, max_plate_nesting=0)
    else:
        elbo = Trace_ELBO(num_particles=cfg.num_particles, vectorize_particles=True,
                          max_plate_nesting=0)
    optim = make_optimizer(cfg)
    svi = SVI(model, guide, optim, elbo)
    losses = np.empty(cfg.steps)
    bar = tqdm(range(cfg.steps), desc=f"b={cfg.b:g} {name} seed {seed}", leave=False,
               disable=not cfg.progress, file=sys.stderr)
    t0 = time.perf_counter()
    for step in bar:
        if step == 1:
            t0 = time.perf_counter()
        losses[step] = svi.step()
        if isinstance(optim, PyroLRScheduler):
            optim.step()
        if not math.isfinite(losses[step]):
            raise RuntimeError(f"banana: {name} seed {seed}: the loss became {losses[step]} at "
                               f"step {step}")
        if (step + 1) % 100 == 0:
            bar.set_postfix(elbo=f"{-losses[step - 99 : step + 1].mean():.3f}", refresh=False)
    seconds_per_step = (time.perf_counter() - t0) / max(cfg.steps - 1, 1)
    bar.close()
    return model, guide, losses, seconds_per_step


def evaluate_guide(
    model: Callable, guide: AutoGuide, num_samples: int = 20_000, num_khat: int = 0
) -> tuple[dict[str, float], Tensor]:
    """KL(q || p) = -E_q[log w] (log Z = 0), ELBO and PSIS k-hat on ``num_samples`` fresh draws,
    and (when ``num_khat > num_samples``) k-hat again on ``num_khat`` draws (``khat_large``).

    PSIS fits the tail of the largest ``3 sqrt(S)`` weights.  For a guide that is nearly exact
    in the bulk with slightly light tails, those weights at ``S = 20000`` mix flat bulk weights
    with a few large ones, which reads as a heavier tail than the larger ``S`` shows (one iaf
    fit: 1.03 on 20,000 draws, 0.46 on 200,000), so both are reported.

    Returns the metrics and the first ``num_samples`` draws ``z`` (shape ``(num_samples, 2)``).
    """
    log_w, samples = importance_log_weights(model, guide, num_samples=num_samples,
                                            max_plate_nesting=0)
    log_w = log_w.double()
    se = float(log_w.std() / math.sqrt(log_w.numel()))
    metrics = {
        "kl": float(-log_w.mean()),
        "kl_se": se,
        "elbo": float(log_w.mean()),
        "elbo_se": se,
        "khat": psis_khat(log_w),
        "num_samples": int(log_w.numel()),
    }
    if num_khat > num_samples:
        large, _ = importance_log_weights(model, guide, num_samples=num_khat,
                                          max_plate_nesting=0, batch_size=50_000)
        metrics["khat_large"] = psis_khat(large.double())
        metrics["num_khat"] = int(num_khat)
    return metrics, samples["z"]


@torch.no_grad()
def entropy_sign_check(
    posterior: TransformedDistribution,
    num_samples: int = 20_000,
    *,
    tolerance_se: float = 4.0,
    atol: float = 1e-5,
) -> dict[str, Any]:
    """Assert the change-of-variables bookkeeping of a flow posterior (raise if it fails).

    With :math:`\\varepsilon \\sim \\mathcal N(0, I_D)` (``posterior.base_dist``) pushed through
    *all* of ``posterior.transforms`` (for :class:`~pyro_flowvi.AutoFlowGuide`: the affine base,
    then the flow stack), and :math:`L = \\sum_k \\log|\\det J_k|` accumulated along the way,

    1. per draw, ``posterior.log_prob(z) == base.log_prob(eps) - L`` to ``atol`` (the log-det
       enters ``log q`` with a minus sign; the same draws with ``+ L`` are reported as
       ``wrong_sign_max_abs_error`` to show that the check can tell the two apart);
    2. in expectation, the Monte Carlo entropy :math:`-\\mathbb E[\\log q]` equals
       :math:`H[\\mathcal N(0, I_D)] + \\mathbb E[L]`, :math:`H[\\mathcal N(0, I_D)] = \\frac D2
       (1 + \\log 2\\pi)` in closed form, within ``tolerance_se`` standard errors of the per-draw
       residual :math:`-\\log q - L - H[\\mathcal N]`.

    Raises:
        EntropyIdentityError: if either check fails.
    """
    base = posterior.base_dist
    eps = base.sample((num_samples,))
    log_base = base.log_prob(eps)
    x, ladj = eps, torch.zeros_like(log_base)
    per_transform = []
    for t in posterior.transforms:
        y = t(x)
        term = t.log_abs_det_jacobian(x, y)
        if term.dim() > log_base.dim():  # an elementwise transform with event_dim 0
            term = term.reshape(*log_base.shape, -1).sum(-1)
        per_transform.append(float(term.double().mean()))
        ladj = ladj + term
        x = y
    log_q = posterior.log_prob(x)
    dim = eps.shape[-1]
    h_base = 0.5 * dim * (1.0 + math.log(2.0 * math.pi))
    err = (log_base - ladj - log_q).abs().max().item()
    wrong = (log_base + ladj - log_q).abs().max().item()
    residual = (-log_q - ladj).double() - h_base
    res_mean = float(residual.mean())
    res_se = float(residual.std() / math.sqrt(num_samples))
    entropy_mc = float(-log_q.double().mean())
    out = {
        "entropy_mc": entropy_mc,
        "entropy_mc_se": float(log_q.double().std() / math.sqrt(num_samples)),
        "entropy_base": h_base,
        "logdet_mean": float(ladj.double().mean()),
        "logdet_per_transform": per_transform,
        "entropy_identity": h_base + float(ladj.double().mean()),
        "residual": res_mean,
        "residual_se": res_se,
        "identity_max_abs_error": err,
        "wrong_sign_max_abs_error": wrong,
        "num_samples": num_samples,
    }
    if not err <= atol:
        raise EntropyIdentityError(
            f"log q(z) != log N(eps) - sum log|det J| on the same draws: max error {err:.3g} > "
            f"{atol:g} (with the opposite sign the error would be {wrong:.3g})"
        )
    if not abs(res_mean) <= tolerance_se * res_se:
        raise EntropyIdentityError(
            f"MC entropy {entropy_mc:.4f} != H[N(0,I)] {h_base:.4f} + E[log|det J|] "
            f"{out['logdet_mean']:.4f}: residual {res_mean:.4g} exceeds {tolerance_se:g} s.e. "
            f"({res_se:.3g})"
        )
    return out


def _summary(values: list[float], ses: list[float] | None = None) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) > 1:
        se = float(arr.std(ddof=1) / math.sqrt(len(arr)))
    else:
        se = float(ses[0]) if ses else float("nan")
    return {"mean": float(arr.mean()), "se": se, "median": float(np.median(arr)),
            "worst": float(arr.max()), "per_seed": [float(v) for v in arr]}


def _run_guide(name: str, cfg: BananaConfig) -> dict[str, Any]:
    per_seed: list[dict[str, Any]] = []
    traces: list[np.ndarray] = []
    draws: Tensor | None = None
    for seed in cfg.seeds:
        fitted = fit_guide(name, cfg, seed)
        if fitted is None:
            return {"skipped": f"arch {name!r} is not registered"}
        model, guide, losses, sec = fitted
        metrics, z = evaluate_guide(model, guide, cfg.num_eval, cfg.num_khat)
        record: dict[str, Any] = {"seed": seed, **metrics,
                                  "seconds_per_1000_steps": 1000.0 * sec,
                                  "final_elbo_100": float(-losses[-100:].mean())}
        with torch.no_grad():
            posterior = guide.get_posterior() if hasattr(guide, "get_posterior") else None
        if isinstance(posterior, TransformedDistribution):
            try:
                record["entropy_check"] = entropy_sign_check(
                    posterior, cfg.num_entropy, tolerance_se=cfg.entropy_tolerance_se)
            except EntropyIdentityError as err:
                if isinstance(guide, AutoFlowGuide):
                    raise EntropyIdentityError(f"{name} seed {seed}: {err}") from None
                record["entropy_check"] = {"failed": str(err)}  # recorded, not ours to assert
        per_seed.append(record)
        traces.append(-losses)
        if draws is None:
            draws = z[: cfg.num_plot].cpu()
    kls = [r["kl"] for r in per_seed]
    return {
        "kl": _summary(kls, [r["kl_se"] for r in per_seed]),
        "elbo": _summary([r["elbo"] for r in per_seed], [r["elbo_se"] for r in per_seed]),
        "khat": _summary([r["khat"] for r in per_seed]),
        **({"khat_large": _summary([r["khat_large"] for r in per_seed])}
           if "khat_large" in per_seed[0] else {}),
        "seconds_per_1000_steps": _summary([r["seconds_per_1000_steps"] for r in per_seed]),
        "entropy_check_passed": all("failed" not in r.get("entropy_check", {})
                                    for r in per_seed) if "entropy_check" in per_seed[0] else None,
        "per_seed": per_seed,
        "_traces": traces,
        "_draws": draws,
    }


def _versions() -> dict[str, str]:
    return {"pyro_flowvi": pyro_flowvi.__version__, "torch": torch.__version__,
            "pyro": pyro.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}


def _plot_samples(cfg: BananaConfig, draws: dict[str, Tensor], path: Path) -> Path:
    target = Banana(cfg.a, cfg.b, cfg.sigma)
    half = 3.2 * cfg.a
    lo = cfg.b * (-cfg.a**2) - 3.5 * cfg.sigma - 0.5 * abs(cfg.b)
    hi = cfg.b * (half**2 - cfg.a**2) + 3.0 * cfg.sigma
    if cfg.b < 0:
        lo, hi = cfg.b * (half**2 - cfg.a**2) - 3.0 * cfg.sigma, -cfg.b * cfg.a**2 + 3.5 * cfg.sigma
    xs, ys = np.linspace(-half, half, 240), np.linspace(lo, hi, 240)
    grid = torch.as_tensor(np.stack(np.meshgrid(xs, ys), -1), dtype=torch.float64)
    dens = target.log_prob(grid).exp().numpy()
    n = len(draws)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols, 3.4 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax, (name, z) in zip(axes, draws.items(), strict=False):
        ax.contour(xs, ys, dens, levels=6, colors="0.3", linewidths=0.8)
        zz = z.detach().double().numpy()
        ax.scatter(zz[:, 0], zz[:, 1], s=2, alpha=0.35, color="tab:orange", linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-half, half)
        ax.set_ylim(lo, hi)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Banana(a={cfg.a:g}, b={cfg.b:g}, sigma={cfg.sigma:g}): target contours and "
                 f"{cfg.num_plot} guide draws (seed {cfg.seeds[0]})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _plot_traces(traces: dict[str, list[np.ndarray]], path: Path, smooth: int = 50) -> Path:
    fig = Figure(figsize=(8, 4.6), layout="constrained")
    ax = fig.subplots()
    lows = []
    for name, runs in traces.items():
        y = np.mean(runs, axis=0)
        if len(y) >= smooth > 1:
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
            x = np.arange(smooth, len(runs[0]) + 1)
        else:
            x = np.arange(1, len(y) + 1)
        ax.plot(x, y, lw=1.1, label=f"{name} (mean of {len(runs)} seed(s))")
        lows.append(float(np.quantile(y[len(y) // 10 :], 0.02)) if len(y) > 10 else float(y.min()))
    ax.axhline(0.0, color="black", ls="--", lw=1, label="log Z = 0")
    if lows:
        ax.set_ylim(max(min(lows) - 0.2, -5.0), 0.15)
    ax.set_xlabel("step")
    ax.set_ylabel(f"ELBO ({smooth}-step running mean)")
    ax.legend(fontsize=8, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def run_banana(config: BananaConfig | None = None) -> dict[str, Any]:
    """Run every guide on every seed, write ``metrics.json`` and the figures, return metrics."""
    cfg = config or BananaConfig()
    with torch_threads(cfg.num_threads):
        return _run(cfg)


def _run(cfg: BananaConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    traces: dict[str, list[np.ndarray]] = {}
    draws: dict[str, Tensor] = {}
    for name in tqdm(cfg.guides, desc=f"banana b={cfg.b:g}", disable=not cfg.progress,
                     file=sys.stderr):
        res = _run_guide(name, cfg)
        if "skipped" not in res:
            traces[name] = res.pop("_traces")
            draws[name] = res.pop("_draws")
        results[name] = res
    metrics: dict[str, Any] = {
        "target": {"a": cfg.a, "b": cfg.b, "sigma": cfg.sigma, "log_Z": 0.0},
        "guides": results,
        "versions": _versions(),
        "num_threads": torch.get_num_threads(),
        "config": dataclasses.asdict(cfg),
    }
    files: dict[str, str] = {}
    if cfg.plots and draws:
        files["samples"] = str(_plot_samples(cfg, draws, out / "samples.png"))
        files["elbo_traces"] = str(_plot_traces(traces, out / "elbo_traces.png"))
    metrics["runtime_seconds"] = time.perf_counter() - t_start
    metrics["files"] = files
    path = out / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    metrics["files"]["metrics"] = str(path)
    return metrics


def _json_default(obj: Any) -> Any:
    if isinstance(obj, type):
        return obj.__name__
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return repr(obj)


def format_report(metrics: dict[str, Any]) -> str:
    """A fixed-width table of :func:`run_banana`'s metrics."""
    t = metrics["target"]
    seeds = metrics["config"]["seeds"]
    lines = [
        f"Banana(a={t['a']:g}, b={t['b']:g}, sigma={t['sigma']:g}), log Z = 0; "
        f"{metrics['config']['steps']} steps, seeds {seeds}",
        f"  {'guide':<30} {'KL (nats)':>18} {'worst KL':>9} {'ELBO':>9} {'max k-hat':>9} "
        f"{'(large S)':>9} {'s/1000 steps':>12}  entropy identity",
    ]
    for name, res in metrics["guides"].items():
        if "skipped" in res:
            lines.append(f"  {name:<30} skipped: {res['skipped']}")
            continue
        ent = res["entropy_check_passed"]
        ent_text = "n/a" if ent is None else "asserted" if ent else "FAILED (stock guide)"
        if ent:
            first = res["per_seed"][0]["entropy_check"]
            ent_text += (f" (H={first['entropy_mc']:.3f} = {first['entropy_base']:.3f} + "
                         f"{first['logdet_mean']:.3f}; max err "
                         f"{first['identity_max_abs_error']:.1e}, wrong sign "
                         f"{first['wrong_sign_max_abs_error']:.2f})")
        kl = res["kl"]
        lines.append(
            f"  {name:<30} {kl['mean']:>9.4f} +- {kl['se']:<6.4f} {kl['worst']:>9.4f} "
            f"{res['elbo']['mean']:>9.4f} {res['khat']['worst']:>9.3f} "
            f"{res.get('khat_large', {}).get('worst', float('nan')):>9.3f} "
            f"{res['seconds_per_1000_steps']['mean']:>12.2f}  {ent_text}"
        )
    lines += ["  files:", *(f"    {p}" for p in metrics["files"].values())]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``banana`` options (defaults from :class:`BananaConfig`) to ``parser``."""
    d = BananaConfig()
    a = parser.add_argument
    a("--b", type=float, default=d.b, help="banana curvature b (default %(default)s)")
    a("--a", type=float, default=d.a, help="scale of z_1 (default %(default)s)")
    a("--sigma", type=float, default=d.sigma, help="conditional sd of z_2 (default %(default)s)")
    a("--guides", nargs="+", default=d.guides, metavar="GUIDE",
      help=f"stock guides {sorted(STOCK_GUIDES)} and/or flow archs (default: %(default)s)")
    a("--seeds", type=int, nargs="+", default=d.seeds, help="random seeds (default %(default)s)")
    a("--steps", type=int, default=d.steps, help="Adam steps (default %(default)s)")
    a("--num-particles", type=int, default=d.num_particles,
      help="vectorised ELBO particles (default %(default)s)")
    a("--forward-particles", type=int, default=d.forward_particles,
      help="forward-KL draws of the mass-covering objective, used by guides named ARCH+fkl "
      "(default %(default)s)")
    a("--forward-weight", type=float, default=d.forward_weight,
      help="weight of its forward-KL term (default %(default)s)")
    a("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    a("--lr-decay", type=float, default=d.lr_decay, help="final / initial learning rate, a "
      "geometric decay applied to every guide alike (default %(default)s: constant)")
    a("--lr-decay-start", type=float, default=d.lr_decay_start, help="fraction of the steps "
      "run at the full rate before the decay starts (default %(default)s)")
    a("--guide-option", dest="guide_options", action="append", type=key_value_option, default=[],
      metavar="KEY=VALUE", help="extra AutoFlowGuide keyword for the flow guides, VALUE parsed "
      "as JSON if it can be (e.g. num_layers=2, scale=softplus); repeatable")
    a("--num-eval", type=int, default=d.num_eval,
      help="fresh draws for KL and k-hat (default %(default)s)")
    a("--num-khat", type=int, default=d.num_khat, help="draws for a second, larger-sample PSIS "
      "k-hat (0 = off; default %(default)s)")
    a("--num-entropy", type=int, default=d.num_entropy,
      help="draws for the entropy identity check (default %(default)s)")
    a("--num-plot", type=int, default=d.num_plot, help="draws per panel (default %(default)s)")
    a("--out", default=d.out, help="output directory (default %(default)s)")
    a("--no-plots", dest="plots", action="store_false", help="skip the figures")
    add_runtime_arguments(parser, d.num_threads)


def config_from_args(args: argparse.Namespace) -> BananaConfig:
    """Build a :class:`BananaConfig` from parsed :func:`add_arguments` options."""
    return BananaConfig(**config_values(BananaConfig, args, ("guide_options",)))


def run(args: argparse.Namespace) -> int:
    """CLI entry: run, print the report, return the exit status."""
    return report_run(config_from_args(args), run_banana, format_report)
