"""Real posteriors as the referee: every guide on the posteriordb set, scored against reference draws.

For each posterior (:mod:`pyro_flowvi.lab.posteriordb`), guide spec and seed the run

1. fits the guide with the chosen recipe:

   * ``user``: what a Pyro user writes, ``SVI(model, guide, ClippedAdam(lr 1e-2 decaying
     geometrically to 1e-3, clip_norm 10), Trace_ELBO())``, one particle, ``steps`` steps;
   * ``fit``: :func:`pyro_flowvi.fit` for flow guides (its own recipe and stopping rule); stock
     guides keep the user recipe;

2. scores it on ``num_draws`` importance samples :math:`\\log w = \\log p(x, z) - \\log q(z)`:
   the ELBO (mean log weight) +- s.e., PSIS k-hat, and, on the constrained scale of the Stan
   parameters, the largest mean error in reference sd, :math:`\\max_i |m^q_i - m^\\star_i| /
   s^\\star_i`, and the largest :math:`|\\log(s^q_i / s^\\star_i)|`;
3. appends the row to ``results.json`` as soon as it is done (an error later loses nothing),
   and at the end writes ``table.md`` (per posterior and guide, the worst seed) and one PNG
   per posterior (each guide's marginals over the reference histograms, and the most
   correlated pair).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyro_flowvi import Recipe, fit
from pyro_flowvi.autoguide import NonFiniteLossError, fit_svi
from pyro_flowvi.diagnostics import elbo_estimate, psis_khat
from pyro_flowvi.importance import importance_log_weights
from pyro_flowvi.lab.commands.posteriordb import (
    DEFAULT_GUIDES,
    HELP,
    PosteriordbConfig,
    add_arguments,
    config_from_args,
)
from pyro_flowvi.lab.common import write_metrics
from pyro_flowvi.lab.guides import build_guide, parse_spec
from pyro_flowvi.lab.posteriordb import Posterior, available_posteriors, load_posterior

__all__ = ["DEFAULT_GUIDES", "HELP", "PosteriordbConfig", "add_arguments", "config_from_args",
           "format_table", "run", "run_posteriordb", "score_guide"]


def score_guide(post: Posterior, guide: Any, num_draws: int) -> dict[str, Any]:
    """ELBO +- s.e., k-hat and the moment errors of a fitted guide against the reference."""
    with torch.no_grad():
        log_w, samples = importance_log_weights(post.model, guide, *post.args,
                                                num_samples=num_draws, batch_size=1000,
                                                **post.kwargs)
    draws = post.flatten(samples)
    ref = post.reference
    finite = bool(torch.isfinite(log_w).all()) and bool(np.isfinite(draws).all())
    elbo, elbo_se = elbo_estimate(log_w) if finite else (math.nan, math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_err = np.abs(draws.mean(0) - ref.mean) / ref.sd
        sd_ratio = np.abs(np.log(draws.std(0, ddof=1) / ref.sd))
    return {
        "elbo": elbo, "elbo_se": elbo_se, "khat": psis_khat(log_w) if finite else math.inf,
        "mean_err_max": float(np.max(mean_err)), "mean_err": mean_err.tolist(),
        "log_sd_ratio_max": float(np.max(sd_ratio)), "log_sd_ratio": sd_ratio.tolist(),
        "finite": finite, "_draws": draws,
    }


def _fit_user(post: Posterior, guide: Any, cfg: PosteriordbConfig) -> list[float]:
    decay = (cfg.lr_final / cfg.lr) ** (1.0 / cfg.steps)
    svi = SVI(post.model, guide, ClippedAdam({"lr": cfg.lr, "lrd": decay, "clip_norm": 10.0}),
              Trace_ELBO())
    return fit_svi(svi, *post.args, num_steps=cfg.steps, progress=cfg.progress, **post.kwargs)


def _fit_one(post: Posterior, spec: str, seed: int, cfg: PosteriordbConfig) -> dict[str, Any]:
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(post.dtype)  # flat priors' initial values take the default dtype
    try:
        return _fit_and_score(post, spec, seed, cfg)
    finally:
        torch.set_default_dtype(default_dtype)


def _fit_and_score(post: Posterior, spec: str, seed: int, cfg: PosteriordbConfig
                   ) -> dict[str, Any]:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    parsed = parse_spec(spec)
    row: dict[str, Any] = {"posterior": post.name, "guide": spec, "seed": seed,
                           "recipe": cfg.recipe if parsed.is_flow else "user", "error": None}
    start = time.perf_counter()
    try:
        if cfg.recipe == "fit" and parsed.is_flow:
            result = fit(post.model, *post.args, arch=parsed.head, guide_options=parsed.options,
                         recipe=Recipe(**{"objective": parsed.objective,
                                                 **cfg.recipe_options}),
                         progress=cfg.progress,
                         num_diagnostic_samples=256, **post.kwargs)
            guide, losses = result.guide, result.losses
            row["warm_start"] = result.warm_start.get("warm_start")
        else:
            if parsed.objective != "elbo":
                raise ValueError(f"{spec!r}: +fkl needs --recipe fit")
            guide = build_guide(parsed, post.model)
            losses = _fit_user(post, guide, cfg)
    except NonFiniteLossError as err:
        row.update(error=f"diverged: {str(err)[:300]}", finite=False, seconds=
                   time.perf_counter() - start)
        return row
    row["seconds"] = time.perf_counter() - start
    row["steps"] = len(losses)
    row.update(score_guide(post, guide, cfg.num_draws))
    return row


def run_posteriordb(config: PosteriordbConfig | None = None) -> dict[str, Any]:
    """Run the benchmark; write ``results.json``, ``table.md`` and the plots; return them."""
    cfg = config or PosteriordbConfig()
    if cfg.recipe not in ("user", "fit"):
        raise ValueError(f"posteriordb: recipe must be 'user' or 'fit', got {cfg.recipe!r}")
    for spec in cfg.guides:  # fail fast on a bad spec, before any fit
        parse_spec(spec)
    names = cfg.posteriors or available_posteriors(cfg.data_dir)
    posts = [load_posterior(n, cfg.data_dir) for n in names]  # fail fast on a bad name
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    previous = torch.get_num_threads()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    try:
        for post in posts:
            draws: dict[str, np.ndarray] = {}
            for spec in cfg.guides:
                for seed in range(cfg.seeds):
                    print(f"posteriordb: {post.name} {spec} seed {seed}", file=sys.stderr)
                    row = _fit_one(post, spec, seed, cfg)
                    if seed == 0 and "_draws" in row:
                        draws[spec] = row["_draws"]
                    row.pop("_draws", None)
                    rows.append(row)
                    write_metrics(out / "results.json", {"config": dataclasses.asdict(cfg),
                                                         "rows": rows})
            if draws:
                _plot(post, draws, out / f"{post.name}.png")
    finally:
        torch.set_num_threads(previous)
    table = format_table(rows)
    (out / "table.md").write_text(table + "\n")
    return {"rows": rows, "table": table, "out": str(out)}


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per posterior x guide, worst over seeds; ``vs mvn`` is the smallest
    per-seed ELBO difference to AutoMultivariateNormal (negative: worse)."""
    lines = ["| posterior | guide | recipe | seeds | ELBO (worst) | vs mvn | k-hat (max) | "
             "mean err (max, ref sd) | abs log sd ratio (max) | s (median) | failures |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault((r["posterior"], r["guide"]), []).append(r)
    mvn = {(r["posterior"], r["seed"]): r.get("elbo") for r in rows if r["guide"] == "mvn"}
    for (post, guide), group in by_key.items():
        ok = [r for r in group if r.get("finite")]
        bad = len(group) - len(ok)
        gaps = [r["elbo"] - mvn[(post, r["seed"])] for r in ok
                if mvn.get((post, r["seed"])) is not None and guide != "mvn"]
        cell = lambda f, xs: f.format(xs) if xs is not None else "-"  # noqa: E731
        lines.append(
            f"| {post} | {guide} | {group[0]['recipe']} | {len(group)} | "
            f"{cell('{:.2f}', min((r['elbo'] for r in ok), default=None))} | "
            f"{cell('{:+.2f}', min(gaps, default=None))} | "
            f"{cell('{:.2f}', max((r['khat'] for r in ok), default=None))} | "
            f"{cell('{:.3f}', max((r['mean_err_max'] for r in ok), default=None))} | "
            f"{cell('{:.3f}', max((r['log_sd_ratio_max'] for r in ok), default=None))} | "
            f"{np.median([r['seconds'] for r in group]):.1f} | {bad or ''} |")
    return "\n".join(lines)


def _plot(post: Posterior, draws: dict[str, np.ndarray], path: Path) -> None:
    from matplotlib.figure import Figure

    ref = post.reference
    names = ref.names[:8]
    pair = None
    if ref.draws is not None and ref.draws.shape[1] > 1:
        corr = np.corrcoef(ref.draws.T)
        np.fill_diagonal(corr, 0.0)
        i, j = np.unravel_index(np.nanargmax(np.abs(corr)), corr.shape)
        pair = (int(i), int(j), float(corr[i, j]))
    panels = len(names) + (pair is not None)
    ncol = min(4, panels)
    nrow = math.ceil(panels / ncol)
    fig = Figure(figsize=(3.4 * ncol, 2.8 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for k, name in enumerate(names):
        ax = axes[k]
        lo = ref.mean[k] - 4.5 * ref.sd[k]
        hi = ref.mean[k] + 4.5 * ref.sd[k]
        bins = np.linspace(lo, hi, 50)
        if ref.draws is not None:
            ax.hist(ref.draws[:, k], bins=bins, density=True, color="0.8", label="reference")
        for c, (spec, d) in enumerate(draws.items()):
            ax.hist(np.clip(d[:, k], lo, hi), bins=bins, density=True, histtype="step",
                    color=f"C{c}", label=spec)
        ax.set_title(name, fontsize=9)
    if pair is not None:
        ax = axes[len(names)]
        i, j, rho = pair
        ax.scatter(ref.draws[:, i], ref.draws[:, j], s=2, color="0.6", label="reference")
        for c, (spec, d) in enumerate(draws.items()):
            ax.scatter(d[:500, i], d[:500, j], s=2, color=f"C{c}", alpha=0.5, label=spec)
        ax.set_xlim(ref.mean[i] - 5 * ref.sd[i], ref.mean[i] + 5 * ref.sd[i])
        ax.set_ylim(ref.mean[j] - 5 * ref.sd[j], ref.mean[j] + 5 * ref.sd[j])
        ax.set_title(f"{ref.names[i]} vs {ref.names[j]} (corr {rho:+.3f})", fontsize=9)
    for ax in axes[panels:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=6)
    fig.suptitle(post.name, fontsize=10)
    fig.savefig(path, dpi=90)


def run(args: argparse.Namespace) -> int:
    """CLI entry: run and print the table."""
    print(run_posteriordb(config_from_args(args))["table"])
    return 0
