"""Bayesian posteriors: flow guides and stock Pyro guides against a NUTS reference.

For a model from :mod:`pyro_flowvi.models` (``eight_schools``: the centred funnel;
``logistic``: 31-dimensional logistic regression on breast cancer) the run

1. draws a NUTS reference (chains run one after another; cached in ``--out`` as ``.npz``, so a
   rerun with the same NUTS settings skips it) and records its divergences, ESS and R-hat;
2. fits every guide in ``--guides`` with SVI (ClippedAdam, learning rate decayed tenfold);
3. scores each guide on ``--num-draws`` importance samples: per coordinate of the constrained
   latents, the error of the posterior mean and sd in reference-sd units,

   .. math:: e^{\\mathrm{mean}}_i = |m^q_i - m^\\star_i| / s^\\star_i, \\qquad
             e^{\\mathrm{sd}}_i = |s^q_i - s^\\star_i| / s^\\star_i

   (:math:`m, s`: mean and sd; :math:`\\star`: NUTS), the PSIS :math:`\\hat k` of
   :math:`\\log w = \\log p(x, z) - \\log q(z)`, the ELBO, and the
   same errors after PSIS reweighting;
4. writes ``metrics.json``, ``marginals.png``, ``training_curves.png`` and, for eight schools,
   ``funnel.png`` (``log tau`` against ``theta[0]``).

Guide specs: ``normal`` (AutoNormal), ``mvn`` (AutoMultivariateNormal), or a flow architecture
(``iaf``, ``realnvp``, ...) followed by ``+``-separated AutoFlowGuide modifiers: ``full`` (full
Cholesky base), ``map`` / ``laplace`` (warm start), ``stl`` (path-derivative gradient),
``natural`` (iaf/maf: the last layer in the model's site order, ``permutation=
"reverse_last_natural"``), e.g. ``iaf+full+laplace``; and ``fkl``, which trains that guide with
:class:`~pyro_flowvi.MassCoveringELBO` (the ELBO plus a forward-KL term) instead of ``Trace_ELBO``.
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
import torch
from matplotlib.figure import Figure
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from pyro.infer.autoguide.initialization import init_to_median
from pyro.ops.stats import effective_sample_size, split_gelman_rubin
from pyro.optim import ClippedAdam
from pyro.poutine.util import prune_subsample_sites

import pyro_flowvi
from pyro_flowvi import AutoFlowGuide, MassCoveringELBO
from pyro_flowvi.autoguide.training import fit_svi
from pyro_flowvi.experiments.common import (
    add_runtime_arguments,
    config_values,
    report_run,
    torch_threads,
)
from pyro_flowvi.models import BayesianModel, eight_schools_centered, logistic_regression

__all__ = [
    "DEFAULT_GUIDES",
    "HELP",
    "MODELS",
    "PosteriorConfig",
    "add_arguments",
    "build_guide",
    "config_from_args",
    "format_report",
    "nuts_reference",
    "run",
    "run_posterior",
    "uses_covering_objective",
]

HELP = "fit flow and stock guides to a Bayesian posterior; compare with NUTS (k-hat, moments)"
MODELS: dict[str, Callable[[], BayesianModel]] = {
    "eight_schools": eight_schools_centered,
    "logistic": logistic_regression,
}
DEFAULT_GUIDES: dict[str, tuple[str, ...]] = {
    "eight_schools": ("normal", "mvn", "iaf", "realnvp"),
    "logistic": ("normal", "mvn", "iaf", "realnvp", "iaf+full+laplace", "realnvp+full+laplace"),
}
KHAT_BAR, ERROR_BAR = 0.7, 0.1  # ARCHITECTURE.md's quality bar
COVERING_MODIFIER = "fkl"  # ARCH+fkl: train with MassCoveringELBO instead of Trace_ELBO


def uses_covering_objective(spec: str) -> bool:
    """Whether a guide spec asks for :class:`~pyro_flowvi.MassCoveringELBO` (``+fkl``).

    Example:
        >>> uses_covering_objective("iaf+full+fkl"), uses_covering_objective("iaf")
        (True, False)
    """
    return COVERING_MODIFIER in spec.split("+")[1:]
_FLOW_MODIFIERS = {"full": ("base", "full"), "diagonal": ("base", "diagonal"),
                   "map": ("warm_start", "map"), "laplace": ("warm_start", "laplace"),
                   "stl": ("stl", True), "natural": ("permutation", "reverse_last_natural")}


@dataclass
class PosteriorConfig:
    """Settings of a posterior run (CLI flags have the same names, with dashes).

    ``guides = None`` takes the model's :data:`DEFAULT_GUIDES`.  ``num_layers``/``hidden`` are
    passed to every flow guide (``None``: AutoFlowGuide's defaults).
    """

    name: str = "eight_schools"
    guides: list[str] | None = None
    steps: int = 3000
    lr: float = 5e-3
    num_particles: int = 8
    num_layers: int | None = None
    hidden: int | None = None
    init_scale: float | None = None
    num_draws: int = 4000
    num_chains: int = 2
    warmup: int = 1000
    num_samples: int = 2000
    target_accept: float = 0.9
    seed: int = 0
    out: str = "outputs/posterior"
    progress: bool = True
    num_threads: int | None = 1


# -- NUTS reference -----------------------------------------------------------------------------


def _flatten(samples: dict[str, torch.Tensor], sites: list[str]) -> tuple[np.ndarray, list[str]]:
    """``{site: (S, *shape)}`` -> ``(S, D)`` array and coordinate names like ``theta[3]``."""
    cols, names = [], []
    for site in sites:
        value = samples[site].detach().double().cpu()
        flat = value.reshape(value.shape[0], -1)
        shape = value.shape[1:]
        cols.append(flat.numpy())
        names += [site] if len(shape) == 0 else [
            f"{site}[{','.join(map(str, np.unravel_index(i, tuple(shape))))}]"
            for i in range(flat.shape[1])
        ]
    return np.concatenate(cols, axis=1), names


def _latent_sites(bm: BayesianModel) -> list[str]:
    trace = prune_subsample_sites(pyro.poutine.trace(bm.model).get_trace(*bm.args, **bm.kwargs))
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]]


def nuts_reference(bm: BayesianModel, cfg: PosteriorConfig, out: Path) -> dict[str, Any]:
    """NUTS draws ``(chains, samples, D)``, coordinate names, divergences and time; cached."""
    key = f"nuts_{bm.name}_w{cfg.warmup}_s{cfg.num_samples}_c{cfg.num_chains}" \
          f"_a{cfg.target_accept}_seed{cfg.seed}.npz"
    path = out / key
    if path.exists():
        with np.load(path) as f:
            ref = {k: f[k] for k in f.files}
        ref["names"] = [str(n) for n in ref["names"]]
        ref["cached"] = True
        return ref
    sites = _latent_sites(bm)
    chains, divergences, seconds = [], [], 0.0
    for chain in range(cfg.num_chains):
        pyro.set_rng_seed(cfg.seed + 1000 * (chain + 1))
        kernel = NUTS(bm.model, init_strategy=init_to_median,
                      target_accept_prob=cfg.target_accept)
        mcmc = MCMC(kernel, warmup_steps=cfg.warmup, num_samples=cfg.num_samples,
                    disable_progbar=not cfg.progress)
        start = time.perf_counter()
        mcmc.run(*bm.args, **bm.kwargs)
        seconds += time.perf_counter() - start
        draws, names = _flatten(mcmc.get_samples(), sites)
        chains.append(draws)
        divergences.append(len(mcmc.diagnostics()["divergences"]["chain 0"]))
    ref = {"draws": np.stack(chains), "names": names, "divergences": np.array(divergences),
           "seconds": np.array(seconds)}
    np.savez(path, **ref)
    ref["cached"] = False
    return ref


def _reference_summary(ref: dict[str, Any]) -> dict[str, Any]:
    draws = torch.as_tensor(ref["draws"])  # (C, S, D)
    ess = effective_sample_size(draws, chain_dim=0, sample_dim=1).numpy()
    rhat = split_gelman_rubin(draws, chain_dim=0, sample_dim=1).numpy()
    flat = ref["draws"].reshape(-1, ref["draws"].shape[-1])
    return {
        "num_chains": int(ref["draws"].shape[0]), "num_samples": int(ref["draws"].shape[1]),
        "divergences_per_chain": [int(d) for d in ref["divergences"]],
        "divergent_fraction": float(np.sum(ref["divergences"]) / flat.shape[0]),
        "seconds": float(ref["seconds"]), "cached": bool(ref["cached"]),
        "min_ess": float(np.nanmin(ess)), "max_rhat": float(np.nanmax(rhat)),
        "mean_mc_error_floor": float(1.0 / math.sqrt(max(np.nanmin(ess), 1.0))),
        "coords": {n: {"mean": float(m), "sd": float(s), "ess": float(e), "rhat": float(r)}
                   for n, m, s, e, r in zip(ref["names"], flat.mean(0), flat.std(0), ess, rhat,
                                            strict=True)},
    }


# -- guides -------------------------------------------------------------------------------------


def build_guide(spec: str, model: Callable, cfg: PosteriorConfig) -> Callable:
    """A guide from a spec: ``normal``, ``mvn``, or ``ARCH[+full][+map|+laplace][+stl][+fkl]``.

    ``+fkl`` names the objective, not the guide: the guide is trained with
    :class:`~pyro_flowvi.MassCoveringELBO` (see :func:`uses_covering_objective`)."""
    head, *mods = spec.split("+")
    if head in ("normal", "mvn") and COVERING_MODIFIER in mods:
        raise ValueError(f"posterior: {spec!r}: the +{COVERING_MODIFIER} objective "
                         "(MassCoveringELBO) needs a flow guide (an arch), not normal/mvn")
    mods = [m for m in mods if m != COVERING_MODIFIER]
    if head == "normal" and not mods:
        return AutoNormal(model, init_loc_fn=init_to_median, init_scale=0.1)
    if head == "mvn" and not mods:
        return AutoMultivariateNormal(model, init_loc_fn=init_to_median, init_scale=0.1)
    options: dict[str, Any] = {}
    for mod in mods:
        if mod not in _FLOW_MODIFIERS:
            raise ValueError(f"posterior: unknown guide modifier {mod!r} in {spec!r}; one of "
                             f"{sorted(_FLOW_MODIFIERS)}")
        key, value = _FLOW_MODIFIERS[mod]
        options[key] = value
    if cfg.num_layers is not None:
        options["num_layers"] = cfg.num_layers
    if cfg.hidden is not None:
        options["hidden_dims"] = [cfg.hidden, cfg.hidden]
    if cfg.init_scale is not None:
        options["init_scale"] = cfg.init_scale
    return AutoFlowGuide(model, arch=head, **options)  # raises on an unknown arch


def _importance(bm: BayesianModel, guide: Callable, num: int,
                sites: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Log weights ``(N,)`` and constrained draws ``(N, D)`` of ``guide``."""
    try:
        from pyro_flowvi.diagnostics import importance_log_weights
    except ImportError:  # pragma: no cover - the diagnostics module is optional here
        importance_log_weights = None
    with torch.no_grad():
        if importance_log_weights is not None:
            log_w, samples = importance_log_weights(bm.model, guide, *bm.args,
                                                    num_samples=num, batch_size=1000,
                                                    **bm.kwargs)
        else:
            log_ws, parts = [], {s: [] for s in sites}
            for _ in range(num):
                g = pyro.poutine.trace(guide).get_trace(*bm.args, **bm.kwargs)
                m = pyro.poutine.trace(pyro.poutine.replay(bm.model, trace=g)).get_trace(
                    *bm.args, **bm.kwargs)
                log_ws.append(m.log_prob_sum() - g.log_prob_sum())
                for s in sites:
                    parts[s].append(m.nodes[s]["value"])
            log_w = torch.stack(log_ws)
            samples = {s: torch.stack(v) for s, v in parts.items()}
    draws, _ = _flatten(samples, sites)
    return log_w.double().cpu().numpy(), draws


def _psis(log_w: np.ndarray) -> tuple[np.ndarray, float]:
    import arviz

    smoothed, khat = arviz.psislw(log_w.copy(), reff=1.0)
    return np.exp(smoothed - smoothed.max()), float(khat)


def _errors(mean: np.ndarray, sd: np.ndarray, ref_mean: np.ndarray,
            ref_sd: np.ndarray) -> dict[str, Any]:
    e_mean, e_sd = np.abs(mean - ref_mean) / ref_sd, np.abs(sd - ref_sd) / ref_sd
    return {"mean_err_max": float(e_mean.max()), "mean_err_mean": float(e_mean.mean()),
            "sd_err_max": float(e_sd.max()), "sd_err_mean": float(e_sd.mean()),
            "mean_err": e_mean.tolist(), "sd_err": e_sd.tolist()}


def _fit_and_score(spec: str, bm: BayesianModel, cfg: PosteriorConfig, sites: list[str],
                   ref_flat: np.ndarray) -> tuple[dict[str, Any], np.ndarray, list[float]]:
    pyro.clear_param_store()
    pyro.set_rng_seed(cfg.seed)
    guide = build_guide(spec, bm.model, cfg)
    decay = 0.1 ** (1.0 / max(cfg.steps, 1))
    if uses_covering_objective(spec):
        elbo = MassCoveringELBO(num_particles=cfg.num_particles, max_plate_nesting=1)
    else:
        elbo = Trace_ELBO(num_particles=cfg.num_particles, vectorize_particles=True,
                          max_plate_nesting=1)
    svi = SVI(bm.model, guide, ClippedAdam({"lr": cfg.lr, "lrd": decay, "clip_norm": 10.0}),
              elbo)
    start = time.perf_counter()
    losses = fit_svi(svi, *bm.args, num_steps=cfg.steps, progress=cfg.progress, **bm.kwargs)
    vi_seconds = time.perf_counter() - start
    log_w, draws = _importance(bm, guide, cfg.num_draws, sites)
    weights, khat = _psis(log_w)
    ref_mean, ref_sd = ref_flat.mean(0), ref_flat.std(0)
    w = weights / weights.sum()
    is_mean = w @ draws
    is_sd = np.sqrt(np.maximum(w @ (draws - is_mean) ** 2, 0.0))
    result = {
        "guide": spec, "steps": cfg.steps, "vi_seconds": vi_seconds,
        "num_params": int(sum(p.numel() for p in guide.parameters())),
        "elbo": float(log_w.mean()), "elbo_se": float(log_w.std(ddof=1) / math.sqrt(len(log_w))),
        "final_loss": float(np.mean(losses[-min(100, len(losses)):])),
        "khat": khat, "ess_fraction": float(1.0 / (len(w) * np.sum(w**2))),
        **_errors(draws.mean(0), draws.std(0), ref_mean, ref_sd),
        "psis": _errors(is_mean, is_sd, ref_mean, ref_sd),
    }
    result["meets_bar"] = bool(khat < KHAT_BAR and result["mean_err_max"] < ERROR_BAR
                               and result["sd_err_max"] < ERROR_BAR)
    return result, draws, losses


# -- plots --------------------------------------------------------------------------------------

_COLORS = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8"]


def _plot_marginals(ref: np.ndarray, draws: dict[str, np.ndarray], names: list[str],
                    coords: list[int], path: Path) -> Path:
    ncol = min(3, len(coords))
    nrow = math.ceil(len(coords) / ncol)
    fig = Figure(figsize=(4.2 * ncol, 3.2 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, i in zip(axes, coords, strict=False):
        lo, hi = np.quantile(ref[:, i], [0.002, 0.998])
        pad = 0.15 * (hi - lo)
        bins = np.linspace(lo - pad, hi + pad, 50)
        ax.hist(ref[:, i], bins=bins, density=True, color="0.75", label="NUTS")
        for color, (spec, d) in zip(_COLORS, draws.items(), strict=False):
            with np.errstate(invalid="ignore", divide="ignore"):  # no draw inside the bins
                ax.hist(d[:, i], bins=bins, density=True, histtype="step", lw=1.4, color=color,
                        label=spec)
        ax.set_title(names[i])
    for ax in axes[len(coords):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=100)
    return path


def _plot_funnel(ref: np.ndarray, draws: dict[str, np.ndarray], names: list[str],
                 path: Path) -> Path:
    it, ith = names.index("tau"), names.index("theta[0]")
    n = len(draws)
    fig = Figure(figsize=(3.6 * n, 3.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, color, (spec, d) in zip(axes, _COLORS, draws.items(), strict=False):
        ax.scatter(np.log(ref[:, it]), ref[:, ith], s=2, alpha=0.3, color="0.5", label="NUTS")
        ax.scatter(np.log(d[:2000, it]), d[:2000, ith], s=2, alpha=0.3, color=color, label=spec)
        ax.set_title(spec)
        ax.set_xlabel("log tau")
        ax.legend(fontsize=7, markerscale=4)
    axes[0].set_ylabel("theta[0]")
    axes[0].set_xlim(np.quantile(np.log(ref[:, it]), [0.001, 1.0]) + np.array([-1.0, 0.5]))
    fig.savefig(path, dpi=100)
    return path


def _plot_losses(losses: dict[str, list[float]], path: Path) -> Path:
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for color, (spec, loss) in zip(_COLORS, losses.items(), strict=False):
        k = max(1, len(loss) // 100)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k, smooth, color=color, label=spec)
    values = np.concatenate([np.asarray(v[len(v) // 5:]) for v in losses.values()])
    if values.size:
        lo, hi = np.quantile(values, [0.0, 0.95])
        ax.set_ylim(lo - 0.05 * (hi - lo + 1), hi + 0.2 * (hi - lo + 1))
    ax.set_xlabel("SVI step")
    ax.set_ylabel("-ELBO (running mean)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    return path


# -- the run ------------------------------------------------------------------------------------


def run_posterior(config: PosteriorConfig | None = None) -> dict[str, Any]:
    """Run the experiment, write ``metrics.json`` and the figures, and return the metrics."""
    cfg = config or PosteriorConfig()
    if cfg.name not in MODELS:
        raise ValueError(f"posterior: unknown model {cfg.name!r}; one of {sorted(MODELS)}")
    with torch_threads(cfg.num_threads):
        return _run(cfg)


def _run(cfg: PosteriorConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    bm = MODELS[cfg.name]()
    guides = list(cfg.guides or DEFAULT_GUIDES[cfg.name])
    for spec in guides:  # fail fast on a bad spec, before NUTS runs
        build_guide(spec, bm.model, cfg)
    sites = _latent_sites(bm)

    ref = nuts_reference(bm, cfg, out)
    names = ref["names"]
    ref_flat = ref["draws"].reshape(-1, ref["draws"].shape[-1])
    reference = _reference_summary(ref)

    results, all_draws, all_losses = {}, {}, {}
    for spec in guides:
        print(f"posterior[{cfg.name}]: fitting {spec}", file=sys.stderr)
        results[spec], all_draws[spec], all_losses[spec] = _fit_and_score(
            spec, bm, cfg, sites, ref_flat)
        results[spec]["speedup_vs_nuts"] = reference["seconds"] / results[spec]["vi_seconds"]

    coords = list(range(min(6, len(names))))
    files = {
        "marginals": _plot_marginals(ref_flat, all_draws, names, coords, out / "marginals.png"),
        "training_curves": _plot_losses(all_losses, out / "training_curves.png"),
    }
    if cfg.name == "eight_schools":
        files["funnel"] = _plot_funnel(ref_flat, all_draws, names, out / "funnel.png")
    metrics: dict[str, Any] = {
        "model": cfg.name, "description": bm.description, "coords": names,
        "reference": reference, "guides": results,
        "quality_bar": {"khat": KHAT_BAR, "error_ref_sd": ERROR_BAR},
        "versions": {"pyro_flowvi": pyro_flowvi.__version__, "torch": torch.__version__,
                     "pyro": pyro.__version__, "numpy": np.__version__},
        "config": dataclasses.asdict(cfg),
        "runtime_seconds": time.perf_counter() - t_start,
        "files": {k: str(v) for k, v in files.items()},
    }
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    metrics["files"]["metrics"] = str(metrics_path)
    return metrics


def format_report(metrics: dict[str, Any]) -> str:
    """A per-guide table of :func:`run_posterior`'s metrics."""
    ref = metrics["reference"]
    lines = [
        f"{metrics['description']}",
        f"NUTS: {ref['num_chains']} x {ref['num_samples']} draws in {ref['seconds']:.1f} s"
        f"{' (cached)' if ref['cached'] else ''}; divergences {ref['divergences_per_chain']}; "
        f"min ESS {ref['min_ess']:.0f}, max R-hat {ref['max_rhat']:.3f}; MC error floor of the "
        f"mean errors ~ {ref['mean_mc_error_floor']:.3f} ref sd",
        f"{'guide':<22}{'mean err max/avg':>18}{'sd err max/avg':>17}{'k-hat':>8}"
        f"{'ELBO':>11}{'VI s':>8}{'bar':>5}",
    ]
    for spec, r in metrics["guides"].items():
        lines.append(
            f"{spec:<22}{r['mean_err_max']:>9.3f}/{r['mean_err_mean']:<8.3f}"
            f"{r['sd_err_max']:>8.3f}/{r['sd_err_mean']:<8.3f}{r['khat']:>8.2f}"
            f"{r['elbo']:>11.2f}{r['vi_seconds']:>8.1f}{'ok' if r['meets_bar'] else '-':>5}")
    lines += ["files:", *(f"  {p}" for p in metrics["files"].values())]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``posterior`` options (defaults from :class:`PosteriorConfig`) to ``parser``."""
    d = PosteriorConfig()
    a = parser.add_argument
    a("name", choices=sorted(MODELS), help="the model")
    a("--guides", type=lambda s: [g for g in s.split(",") if g], default=None,
      help="comma-separated guide specs: normal, mvn, ARCH[+full][+map|+laplace][+stl][+natural][+fkl] "
      "(default: per model)")
    a("--arch", action="append", default=None, metavar="ARCH",
      help="shorthand: add the flow guide ARCH (repeatable; replaces the default flow guides)")
    a("--steps", type=int, default=d.steps, help="SVI steps per guide (default %(default)s)")
    a("--lr", type=float, default=d.lr, help="initial ClippedAdam learning rate, decayed "
      "tenfold over the run (default %(default)s)")
    a("--num-particles", type=int, default=d.num_particles,
      help="ELBO particles per step (default %(default)s)")
    a("--num-layers", type=int, default=d.num_layers, help="flow layers (default: AutoFlowGuide's)")
    a("--hidden", type=int, default=d.hidden, help="conditioner width, two hidden layers "
      "(default: AutoFlowGuide's)")
    a("--init-scale", type=float, default=d.init_scale,
      help="initial base scale of flow guides (default: AutoFlowGuide's)")
    a("--num-draws", type=int, default=d.num_draws,
      help="guide draws for moments and k-hat (default %(default)s)")
    a("--num-chains", type=int, default=d.num_chains,
      help="NUTS chains, run one after another (default %(default)s)")
    a("--warmup", type=int, default=d.warmup, help="NUTS warmup per chain (default %(default)s)")
    a("--num-samples", type=int, default=d.num_samples,
      help="NUTS draws per chain (default %(default)s)")
    a("--target-accept", type=float, default=d.target_accept,
      help="NUTS target acceptance probability (default %(default)s)")
    a("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    a("--out", default=None, help="output directory (default outputs/posterior/NAME)")
    add_runtime_arguments(parser, d.num_threads)


def config_from_args(args: argparse.Namespace) -> PosteriorConfig:
    """Build a :class:`PosteriorConfig` from parsed :func:`add_arguments` options."""
    values = config_values(PosteriorConfig, args)
    if values.get("out") is None:
        values["out"] = f"{PosteriorConfig.out}/{args.name}"
    arch = getattr(args, "arch", None)
    if arch:
        base = values.get("guides") or [g for g in DEFAULT_GUIDES[args.name]
                                        if g in ("normal", "mvn")]
        values["guides"] = list(base) + [g for g in arch if g not in base]
    return PosteriorConfig(**values)


def run(args: argparse.Namespace) -> int:
    """CLI entry: run, print the report, return the exit status."""
    return report_run(config_from_args(args), run_posterior, format_report)
