"""Banana benchmark: stock Pyro guides against flow guides on a target with known log Z = 0.

The model is one 2-D site ``z ~ Banana(a, b, sigma)`` (:class:`~pyro_flowvi.lab.targets.Banana`),
a normalised density, so for every guide ``q``

.. math::

    \\mathrm{KL}(q \\,\\|\\, p) = \\mathbb E_q[\\log q(z) - \\log p(z)] = -\\mathrm{ELBO},

estimated on ``--num-eval`` fresh draws, with the PSIS :math:`\\hat k` of the same importance
weights.  Each guide is trained by :func:`pyro_flowvi.autoguide.fit_svi` with
``Trace_ELBO(num_particles=8, vectorize_particles=True)`` and Adam for ``--steps`` steps on each
seed: lr ``5e-3`` for the first half, then a geometric decay to ``2.5e-4`` (:func:`lr_factor`;
the same schedule for every guide, stock ones included; ``--lr-decay 1`` gives the constant
rate).  Guides are specs of :func:`pyro_flowvi.lab.guides.parse_spec`; one named ``ARCH+fkl``
(``iaf+fkl`` is in the default list) is trained with :class:`~pyro_flowvi.MassCoveringELBO`
instead (8 ELBO particles plus ``--forward-particles`` forward-KL draws, weight
``--forward-weight``), so the two objectives sit side by side.  Stock guides keep Pyro's own
defaults, except ``AutoIAFNormal``, which is sized like our default ``iaf``.  For every flow
guide (a ``TransformedDistribution`` posterior) the run also *asserts* the entropy sign-flip
identity (:func:`~pyro_flowvi.lab.experiments.entropy.entropy_sign_check`).  ``metrics.json``
(rewritten as each guide finishes), ``samples.png`` and ``elbo_traces.png`` are written to
``--out``.  Measured tables: ``docs/autoguide.rst`` ("Banana") and ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoGuide, AutoIAFNormal
from pyro.optim import Adam, LambdaLR, PyroLRScheduler, PyroOptim
from torch import Tensor
from torch.distributions import TransformedDistribution

from pyro_flowvi import AutoFlowGuide, MassCoveringELBO
from pyro_flowvi.autoguide import fit_svi
from pyro_flowvi.diagnostics import importance_log_weights, psis_khat
from pyro_flowvi.flows import arch_spec
from pyro_flowvi.lab.commands.banana import (
    COVERING_SUFFIX,
    DEFAULT_GUIDES,
    FLOW_GUIDES,
    HELP,
    MEASURED_GUIDE_OPTIONS,
    BananaConfig,
    add_arguments,
    config_from_args,
)
from pyro_flowvi.lab.common import UsageError, torch_threads, versions, write_metrics
from pyro_flowvi.lab.experiments.entropy import EntropyIdentityError, entropy_sign_check
from pyro_flowvi.lab.guides import STOCK_GUIDES, build_guide, parse_spec
from pyro_flowvi.lab.plots import plot_banana_samples, plot_elbo_traces
from pyro_flowvi.lab.targets import Banana

__all__ = [
    "COVERING_SUFFIX",
    "DEFAULT_GUIDES",
    "FLOW_GUIDES",
    "HELP",
    "BananaConfig",
    "EntropyIdentityError",
    "add_arguments",
    "banana_model",
    "check_guides",
    "config_from_args",
    "entropy_sign_check",
    "evaluate_guide",
    "fit_guide",
    "format_report",
    "lr_factor",
    "make_guide",
    "make_optimizer",
    "run",
    "run_banana",
    "stock_iaf_equal_size",
]

LATENT_DIM = 2


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


def stock_iaf_equal_size(model: Callable) -> AutoGuide:
    """``AutoIAFNormal`` with the depth and widths of ``AutoFlowGuide(model, "iaf")`` on the
    banana (what the benchmark calls ``AutoIAFNormal``)."""
    spec = arch_spec("iaf")
    return AutoIAFNormal(model, hidden_dim=spec.hidden(LATENT_DIM), num_transforms=spec.num_layers)


def make_guide(spec: str, model: Callable, **guide_options: Any) -> AutoGuide:
    """The guide a spec names (:func:`pyro_flowvi.lab.guides.parse_spec`): a stock Pyro guide
    with Pyro's own defaults (``AutoIAFNormal``: :func:`stock_iaf_equal_size`), or an
    :class:`~pyro_flowvi.AutoFlowGuide` with ``guide_options`` and the spec's modifiers.

    Example:
        >>> type(make_guide("AutoIAFNormal-2x32", banana_model())).__name__
        'AutoIAFNormal'
    """
    parsed = parse_spec(spec)
    if parsed.is_flow:
        return build_guide(parsed, model, **guide_options)
    if parsed.head == "iafnormal":
        return stock_iaf_equal_size(model)
    return STOCK_GUIDES[parsed.head](model)


def check_guides(specs: list[str]) -> None:
    """Raise :class:`~pyro_flowvi.lab.common.UsageError` naming every spec that does not parse
    (run before any training, so a misspelt guide costs nothing)."""
    problems = []
    for spec in specs:
        try:
            parse_spec(spec)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise UsageError("; ".join(problems))


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
    """Adam at ``cfg.lr``, under the schedule :func:`lr_factor` when ``cfg.lr_decay < 1`` (a
    :class:`pyro.optim.PyroLRScheduler`, stepped by ``fit_svi`` after each SVI step).

    Example:
        >>> type(make_optimizer(BananaConfig(lr_decay=0.1))).__name__
        'PyroLRScheduler'
    """
    if not 0.0 < cfg.lr_decay <= 1.0:
        raise UsageError(f"banana: lr_decay must be in (0, 1], got {cfg.lr_decay}")
    if not 0.0 <= cfg.lr_decay_start < 1.0:
        raise UsageError(f"banana: lr_decay_start must be in [0, 1), got {cfg.lr_decay_start}")
    if cfg.lr_decay == 1.0:
        return Adam({"lr": cfg.lr})
    return LambdaLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": cfg.lr},
                     "lr_lambda": lambda step: lr_factor(step, cfg)})


def fit_guide(name: str, cfg: BananaConfig, seed: int, *,
              guide_options: dict[str, Any] | None = None
              ) -> tuple[Callable, AutoGuide, np.ndarray, float]:
    """Train guide ``name`` on seed ``seed``: returns ``(model, guide, losses, seconds)``.

    ``losses`` are the per-step negative ELBO estimates; ``seconds`` is the wall time of steps
    ``2..steps`` (the first builds the guide), per step.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = banana_model(cfg.a, cfg.b, cfg.sigma)
    options = cfg.guide_options if guide_options is None else guide_options
    measured = dict(MEASURED_GUIDE_OPTIONS)
    if parse_spec(name).head in ("realnvp", "gaussian"):
        measured["stl"] = False  # their STL default came later; the figures are without it
    guide = make_guide(name, model, **{**measured, **options})
    if parse_spec(name).objective == "mass_covering":
        elbo = MassCoveringELBO(num_particles=cfg.num_particles,
                                forward_particles=cfg.forward_particles,
                                forward_weight=cfg.forward_weight, max_plate_nesting=0)
    else:
        elbo = Trace_ELBO(num_particles=cfg.num_particles, vectorize_particles=True,
                          max_plate_nesting=0)
    optim = make_optimizer(cfg)
    svi = SVI(model, guide, optim, elbo)
    scheduler = optim if isinstance(optim, PyroLRScheduler) else None
    run = dict(progress=cfg.progress, scheduler=scheduler)
    losses = fit_svi(svi, num_steps=min(cfg.steps, 1), **run)  # builds the guide
    t0 = time.perf_counter()
    losses += fit_svi(svi, num_steps=max(cfg.steps - 1, 0), check_data=False, **run)
    seconds_per_step = (time.perf_counter() - t0) / max(cfg.steps - 1, 1)
    return model, guide, np.asarray(losses, dtype=np.float64), seconds_per_step


def evaluate_guide(
    model: Callable, guide: AutoGuide, num_samples: int = 20_000, num_khat: int = 0
) -> tuple[dict[str, float], Tensor]:
    """KL(q || p) = -E_q[log w] (log Z = 0), ELBO and PSIS k-hat on ``num_samples`` fresh draws,
    and (when ``num_khat > num_samples``) k-hat again on ``num_khat`` draws (``khat_large``).

    PSIS fits the tail of the largest ``3 sqrt(S)`` weights.  For a guide that is nearly exact
    in the bulk with slightly light tails, those weights at ``S = 20000`` mix flat bulk weights
    with a few large ones, which reads as a heavier tail than a larger ``S`` shows, so both are
    reported (``docs/autoguide.rst`` has a measured example).

    Returns the metrics and the first ``num_samples`` draws ``z`` (shape ``(num_samples, 2)``).
    """
    log_w, samples = importance_log_weights(model, guide, num_samples=num_samples,
                                            max_plate_nesting=0)
    log_w = log_w.double()
    se = float(log_w.std() / math.sqrt(log_w.numel()))
    metrics = {"kl": float(-log_w.mean()), "kl_se": se, "elbo": float(log_w.mean()),
               "elbo_se": se, "khat": psis_khat(log_w), "num_samples": int(log_w.numel())}
    if num_khat > num_samples:
        large, _ = importance_log_weights(model, guide, num_samples=num_khat,
                                          max_plate_nesting=0, batch_size=50_000)
        metrics["khat_large"] = psis_khat(large.double())
        metrics["num_khat"] = int(num_khat)
    return metrics, samples["z"]


def _summary(values: list[float], ses: list[float] | None = None) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) > 1:
        se = float(arr.std(ddof=1) / math.sqrt(len(arr)))
    else:
        se = float(ses[0]) if ses else float("nan")
    return {"mean": float(arr.mean()), "se": se, "median": float(np.median(arr)),
            "worst": float(arr.max()), "per_seed": [float(v) for v in arr]}


def _seed_record(name: str, cfg: BananaConfig, seed: int) -> tuple[dict[str, Any], np.ndarray,
                                                                   Tensor]:
    model, guide, losses, sec = fit_guide(name, cfg, seed)
    metrics, z = evaluate_guide(model, guide, cfg.num_eval, cfg.num_khat)
    record: dict[str, Any] = {"seed": seed, **metrics, "seconds_per_1000_steps": 1000.0 * sec,
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
    return record, -losses, z[: cfg.num_plot].cpu()


def _run_guide(name: str, cfg: BananaConfig) -> dict[str, Any]:
    runs = [_seed_record(name, cfg, seed) for seed in cfg.seeds]
    per_seed = [r for r, _, _ in runs]

    def summary(key: str, se_key: str | None = None) -> dict[str, Any]:
        return _summary([r[key] for r in per_seed], se_key and [r[se_key] for r in per_seed])

    checked = "entropy_check" in per_seed[0]
    return {
        "kl": summary("kl", "kl_se"), "elbo": summary("elbo", "elbo_se"),
        "khat": summary("khat"),
        **({"khat_large": summary("khat_large")} if "khat_large" in per_seed[0] else {}),
        "seconds_per_1000_steps": summary("seconds_per_1000_steps"),
        "entropy_check_passed": all("failed" not in r.get("entropy_check", {})
                                    for r in per_seed) if checked else None,
        "per_seed": per_seed, "_traces": [t for _, t, _ in runs], "_draws": runs[0][2],
    }


def run_banana(config: BananaConfig | None = None) -> dict[str, Any]:
    """Run every guide on every seed, write ``metrics.json`` (after each guide) and the figures,
    return the metrics.  A guide spec that does not parse stops the run before any training."""
    cfg = config or BananaConfig()
    check_guides(cfg.guides)
    make_optimizer(cfg)  # checks the schedule
    with torch_threads(cfg.num_threads):
        return _run(cfg)


def _run(cfg: BananaConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(cfg.out)
    path = out / "metrics.json"
    traces: dict[str, list[np.ndarray]] = {}
    draws: dict[str, Tensor] = {}
    metrics: dict[str, Any] = {
        "target": {"a": cfg.a, "b": cfg.b, "sigma": cfg.sigma, "log_Z": 0.0}, "guides": {},
        "complete": False, "versions": versions(), "num_threads": torch.get_num_threads(),
        "config": dataclasses.asdict(cfg),
    }
    for name in cfg.guides:
        res = _run_guide(name, cfg)
        traces[name], draws[name] = res.pop("_traces"), res.pop("_draws")
        metrics["guides"][name] = res
        write_metrics(path, metrics)  # a later failure loses nothing
    files: dict[str, str] = {}
    if cfg.plots and draws:
        title = (f"Banana(a={cfg.a:g}, b={cfg.b:g}, sigma={cfg.sigma:g}): target contours and "
                 f"{cfg.num_plot} guide draws (seed {cfg.seeds[0]})")
        files["samples"] = str(plot_banana_samples(Banana(cfg.a, cfg.b, cfg.sigma), draws,
                                                   out / "samples.png", title=title))
        files["elbo_traces"] = str(plot_elbo_traces(traces, out / "elbo_traces.png"))
    metrics.update(complete=True, runtime_seconds=time.perf_counter() - t_start, files=files)
    write_metrics(path, metrics)
    metrics["files"]["metrics"] = str(path)
    return metrics


LEGEND = (
    "KL: KL(q || p) = -ELBO in nats (log Z = 0), mean over seeds +- its standard error; worst: "
    "the largest over seeds;\nELBO: its mean; k-hat: the largest PSIS k-hat over seeds on the "
    "KL draws (below 0.7 is usable, below 0.5 good), and on the larger sample (--num-khat);\n"
    "s/1000: seconds per 1000 SVI steps; entropy identity: the check H[q] = H[N(0, I)] + "
    "E[log|det J|] (asserted for our flow guides)")


def format_report(metrics: dict[str, Any]) -> str:
    """A fixed-width table of :func:`run_banana`'s metrics, with a legend of its columns."""
    t = metrics["target"]
    lines = [
        f"Banana(a={t['a']:g}, b={t['b']:g}, sigma={t['sigma']:g}), log Z = 0; "
        f"{metrics['config']['steps']} steps, seeds {metrics['config']['seeds']}",
        f"  {'guide':<30} {'KL (nats)':>18} {'worst KL':>9} {'ELBO':>9} {'max k-hat':>9} "
        f"{'(large S)':>9} {'s/1000 steps':>12}  entropy identity",
    ]
    for name, res in metrics["guides"].items():
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
            f"{res['seconds_per_1000_steps']['mean']:>12.2f}  {ent_text}")
    lines += [*(f"  {line}" for line in LEGEND.splitlines()),
              "  files:", *(f"    {p}" for p in metrics["files"].values())]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """CLI entry: run, print the report, return the exit status."""
    print(format_report(run_banana(config_from_args(args))))
    return 0
