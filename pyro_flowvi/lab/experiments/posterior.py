"""Bayesian posteriors: flow guides and stock Pyro guides against a NUTS reference.

For a model from :mod:`pyro_flowvi.lab.models.bayesian` (``eight_schools``: the centred funnel;
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

Guides are specs of :func:`pyro_flowvi.lab.guides.parse_spec`: ``normal`` (AutoNormal), ``mvn``
(AutoMultivariateNormal), both started at the prior median, or a flow architecture (``iaf``,
``realnvp``, ...) followed by ``+``-separated AutoFlowGuide modifiers (``full``, ``laplace``,
``stl``, ``natural``, ...), e.g. ``iaf+full+laplace``; ``+fkl`` trains that guide with
:class:`~pyro_flowvi.MassCoveringELBO` (the ELBO plus a forward-KL term) instead of
``Trace_ELBO``.  ``metrics.json`` is rewritten as each guide finishes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide.initialization import init_to_median
from pyro.ops.stats import effective_sample_size, split_gelman_rubin
from pyro.optim import ClippedAdam
from pyro.poutine.util import prune_subsample_sites

from pyro_flowvi import MassCoveringELBO
from pyro_flowvi.autoguide import fit_svi
from pyro_flowvi.diagnostics import importance_log_weights
from pyro_flowvi.lab import guides as specs
from pyro_flowvi.lab.commands.posterior import (
    DEFAULT_GUIDES,
    HELP,
    MODEL_NAMES,
    PosteriorConfig,
    add_arguments,
    config_from_args,
)
from pyro_flowvi.lab.common import UsageError, torch_threads, versions, write_metrics
from pyro_flowvi.lab.models.bayesian import (
    BayesianModel,
    eight_schools_centered,
    logistic_regression,
)
from pyro_flowvi.lab.plots import plot_funnel, plot_loss_curves, plot_marginals

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
]

MODELS: dict[str, Callable[[], BayesianModel]] = {
    "eight_schools": eight_schools_centered,
    "logistic": logistic_regression,
}
assert tuple(MODELS) == MODEL_NAMES  # the command line's choices
KHAT_BAR, ERROR_BAR = 0.7, 0.1  # ARCHITECTURE.md's quality bar


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


def build_guide(spec: str | specs.GuideSpec, model: Callable, cfg: PosteriorConfig) -> Callable:
    """The guide a spec names (:func:`pyro_flowvi.lab.guides.parse_spec`): a stock guide started
    at the prior median, or an ``AutoFlowGuide`` with ``cfg``'s ``num_layers``, ``hidden`` and
    ``init_scale`` and the spec's modifiers.  ``+fkl`` names the objective, not the guide."""
    parsed = specs.parse_spec(spec) if isinstance(spec, str) else spec
    if not parsed.is_flow:
        return specs.STOCK_GUIDES[parsed.head](model, init_loc_fn=init_to_median)
    options: dict[str, Any] = {}
    if cfg.num_layers is not None:
        options["num_layers"] = cfg.num_layers
    if cfg.hidden is not None:
        options["hidden_dims"] = [cfg.hidden, cfg.hidden]
    if cfg.init_scale is not None:
        options["init_scale"] = cfg.init_scale
    return specs.build_guide(parsed, model, **options)


def _importance(bm: BayesianModel, guide: Callable, num: int,
                sites: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Log weights ``(N,)`` and constrained draws ``(N, D)`` of ``guide``."""
    with torch.no_grad():
        log_w, samples = importance_log_weights(bm.model, guide, *bm.args, num_samples=num,
                                                batch_size=1000, **bm.kwargs)
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
    parsed = specs.parse_spec(spec)
    guide = build_guide(parsed, bm.model, cfg)
    decay = 0.1 ** (1.0 / max(cfg.steps, 1))
    if parsed.objective == "mass_covering":
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


# -- the run ------------------------------------------------------------------------------------


def run_posterior(config: PosteriorConfig | None = None) -> dict[str, Any]:
    """Run the experiment, write ``metrics.json`` (after each guide) and the figures, and return
    the metrics.  A guide spec that does not parse stops the run before NUTS."""
    cfg = config or PosteriorConfig()
    if cfg.name not in MODELS:
        raise UsageError(f"posterior: unknown model {cfg.name!r}; one of {sorted(MODELS)}")
    problems = []
    for spec in cfg.guides or ():
        try:
            specs.parse_spec(spec)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise UsageError("; ".join(problems))
    with torch_threads(cfg.num_threads):
        return _run(cfg)


def _run(cfg: PosteriorConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    bm = MODELS[cfg.name]()
    guides = list(cfg.guides or DEFAULT_GUIDES[cfg.name])
    sites = _latent_sites(bm)

    ref = nuts_reference(bm, cfg, out)
    names = ref["names"]
    ref_flat = ref["draws"].reshape(-1, ref["draws"].shape[-1])
    reference = _reference_summary(ref)
    metrics: dict[str, Any] = {
        "model": cfg.name, "description": bm.description, "coords": names,
        "reference": reference, "guides": {}, "complete": False,
        "quality_bar": {"khat": KHAT_BAR, "error_ref_sd": ERROR_BAR},
        "versions": versions(), "config": dataclasses.asdict(cfg),
    }
    metrics_path = out / "metrics.json"
    all_draws, all_losses = {}, {}
    for spec in guides:
        print(f"posterior[{cfg.name}]: fitting {spec}", file=sys.stderr)
        result, all_draws[spec], all_losses[spec] = _fit_and_score(spec, bm, cfg, sites,
                                                                    ref_flat)
        result["speedup_vs_nuts"] = reference["seconds"] / result["vi_seconds"]
        metrics["guides"][spec] = result
        write_metrics(metrics_path, metrics)  # a later failure loses nothing

    coords = list(range(min(6, len(names))))
    files = {
        "marginals": plot_marginals(ref_flat, all_draws, names, coords, out / "marginals.png"),
        "training_curves": plot_loss_curves(all_losses, out / "training_curves.png"),
    }
    if cfg.name == "eight_schools":
        files["funnel"] = plot_funnel(ref_flat, all_draws, names, out / "funnel.png")
    metrics.update(complete=True, runtime_seconds=time.perf_counter() - t_start,
                   files={k: str(v) for k, v in files.items()})
    write_metrics(metrics_path, metrics)
    metrics["files"]["metrics"] = str(metrics_path)
    return metrics


LEGEND = (
    "mean err / sd err: |guide - NUTS| of each coordinate's posterior mean / sd, in NUTS sd, the "
    "largest and the average over coordinates;\nk-hat: PSIS k-hat of the guide's importance "
    "weights (below 0.7 usable); ELBO: mean log weight; VI s: fitting time in seconds;\nbar: "
    "'ok' when k-hat < 0.7 and both largest errors < 0.1 (ARCHITECTURE.md's quality bar)")


def format_report(metrics: dict[str, Any]) -> str:
    """A per-guide table of :func:`run_posterior`'s metrics, with a legend of its columns."""
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
    lines += [*LEGEND.splitlines(), "files:", *(f"  {p}" for p in metrics["files"].values())]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """CLI entry: run, print the report, return the exit status."""
    print(format_report(run_posterior(config_from_args(args))))
    return 0
