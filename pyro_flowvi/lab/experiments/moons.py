"""2-moons density estimation: fit a flow by maximum likelihood and measure KL to the truth.

The model is ``x = f(u)``, ``u ~ N(0, I_2)``, with ``f`` a registry flow (default a 6-layer
affine-coupling RealNVP).  Its density at a data point is evaluated through the inverse,

.. math::

    \\log q(x) = \\log \\mathcal N(u; 0, I) - \\log\\left|\\det J_f(u)\\right|,
    \\qquad u = f^{-1}(x),

(``flow.inverse_and_ladj(x)`` returns ``u`` and the *forward* log-det at ``u``, hence the minus),
and training minimises the minibatch NLL ``-mean log q(x)`` with Adam.  Because the 2-moons
density ``p`` is known exactly (:mod:`pyro_flowvi.lab.data.moons`), the held-out NLL can be
compared with the entropy: ``E_p[-log q] - H[p] = KL(p || q) >= 0``.  The run writes ``metrics.json`` and
five PNGs to ``--out``.
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
import torch
from torch import Tensor
from tqdm.auto import tqdm

from pyro_flowvi import build_flow
from pyro_flowvi.lab.commands.moons import HELP, MoonsConfig, add_arguments, config_from_args
from pyro_flowvi.lab.common import (
    UsageError,
    resolve_device,
    torch_threads,
    versions,
    write_metrics,
)
from pyro_flowvi.lab.data.moons import make_moons, moons_entropy, moons_log_density
from pyro_flowvi.lab.plots import (
    plot_density,
    plot_grid_deformation,
    plot_latent_qq,
    plot_samples,
    plot_training_curve,
)
from pyro_flowvi.transforms.base import FlowTransform

__all__ = [
    "HELP",
    "MoonsConfig",
    "add_arguments",
    "config_from_args",
    "flow_log_prob",
    "format_report",
    "run",
    "run_moons",
]

TARGET_GAP = 0.5  # nats: the quality bar for KL(data || model)


def flow_log_prob(flow: FlowTransform, x: Tensor) -> Tensor:
    """``log q(x)`` of the pushforward of ``N(0, I)`` by ``flow``, through the inverse map.

    Example:
        >>> flow = build_flow("realnvp", 2, num_layers=2, hidden_dims=[8])
        >>> x = torch.randn(5, 2)
        >>> base = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
        >>> torch.allclose(flow_log_prob(flow, x), base)   # identity at initialisation
        True
    """
    u, ladj = flow.inverse_and_ladj(x)
    log_base = -0.5 * (u**2).sum(-1) - 0.5 * u.shape[-1] * math.log(2.0 * math.pi)
    return log_base - ladj


def _mean_se(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "se": float(values.std(ddof=1) / math.sqrt(len(values)))}


@torch.no_grad()
def _log_prob_np(flow: FlowTransform, x: Tensor, chunk: int = 8192) -> np.ndarray:
    parts = [flow_log_prob(flow, x[i : i + chunk]) for i in range(0, len(x), chunk)]
    return torch.cat(parts).double().cpu().numpy()


def _train(
    flow: FlowTransform, train: Tensor | None, valid: Tensor, cfg: MoonsConfig, device: torch.device
) -> tuple[Tensor, list[int], list[float]]:
    """Adam on the minibatch NLL; returns per-step losses and periodic held-out NLLs."""
    optim = torch.optim.Adam(flow.parameters(), lr=cfg.lr)
    if cfg.lr_schedule == "cosine":
        sched: torch.optim.lr_scheduler.LRScheduler | None = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(cfg.steps, 1))
        )
    elif cfg.lr_schedule == "constant":
        sched = None
    else:
        raise UsageError(f"moons: unknown lr_schedule {cfg.lr_schedule!r}: 'cosine' or 'constant'")
    gen = np.random.default_rng(np.random.SeedSequence([cfg.seed, 3]))
    losses = torch.zeros(cfg.steps, device=device)
    eval_steps: list[int] = []
    eval_nll: list[float] = []
    log_every = 50
    bar = tqdm(range(cfg.steps), desc="moons", disable=not cfg.progress, file=sys.stderr)
    for step in bar:
        if train is None:
            batch = torch.as_tensor(make_moons(cfg.batch_size, cfg.noise, gen), device=device,
                                    dtype=valid.dtype)
        else:
            batch = train[torch.randint(len(train), (cfg.batch_size,), device=device)]
        loss = -flow_log_prob(flow, batch).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if sched is not None:
            sched.step()
        losses[step] = loss.detach()
        last = step + 1 == cfg.steps
        if (step + 1) % log_every == 0 or last:
            running = losses[max(0, step + 1 - log_every) : step + 1].mean().item()
            if not math.isfinite(running):
                raise RuntimeError(
                    f"moons: the training NLL became {running} at step {step + 1}; lower --lr "
                    "or --max-log-scale"
                )
            bar.set_postfix(nll=f"{running:.3f}", refresh=False)
        if cfg.eval_every > 0 and ((step + 1) % cfg.eval_every == 0 or last):
            eval_steps.append(step + 1)
            eval_nll.append(float(-_log_prob_np(flow, valid).mean()))
    bar.close()
    return losses.cpu(), eval_steps, eval_nll


def run_moons(config: MoonsConfig | None = None) -> dict[str, Any]:
    """Run the experiment, write ``metrics.json`` and the figures, and return the metrics."""
    cfg = config or MoonsConfig()
    device = resolve_device(cfg.device)
    with torch_threads(cfg.num_threads if device.type == "cpu" else None):
        return _run(cfg, device)


def _run(cfg: MoonsConfig, device: torch.device) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train_seq, test_seq, entropy_seq = np.random.SeedSequence(cfg.seed).spawn(3)
    torch.manual_seed(cfg.seed)

    options: dict[str, Any] = dict(cfg.flow_options)
    if cfg.actnorm:
        options["actnorm"] = True
    if cfg.max_log_scale is not None:
        options["max_log_scale"] = cfg.max_log_scale
    try:
        flow = build_flow(cfg.arch, 2, num_layers=cfg.num_layers,
                          hidden_dims=[cfg.hidden] * cfg.hidden_layers, **options)
    except (TypeError, ValueError) as err:  # an unknown architecture, or an option it refuses
        hint = (f"; drop the options it does not take ({sorted(options)}; for ActNorm: "
                "--no-actnorm)" if "option" in str(err) else "")
        raise UsageError(f"moons: {err}{hint}") from err
    if not flow.has_inverse:
        raise UsageError(
            f"moons: architecture {cfg.arch!r} has no analytic inverse, so it cannot evaluate "
            "the density of data points; use e.g. realnvp, maf or iaf"
        )
    dtype = torch.get_default_dtype()  # float32 unless the caller changed it
    flow = flow.to(device=device, dtype=dtype)
    num_params = sum(p.numel() for p in flow.parameters())

    def to_torch(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a, dtype=dtype, device=device)

    x_train_np = make_moons(cfg.num_train, cfg.noise, np.random.default_rng(train_seq))
    x_test_np = make_moons(cfg.num_test, cfg.noise, np.random.default_rng(test_seq))
    x_train, x_test = to_torch(x_train_np), to_torch(x_test_np)
    valid = x_test[: min(5000, cfg.num_test)]

    t_train = time.perf_counter()
    losses, eval_steps, eval_nll = _train(
        flow, x_train if cfg.num_train > 0 else None, valid, cfg, device
    )
    train_seconds = time.perf_counter() - t_train

    flow.eval()
    log_q_test = _log_prob_np(flow, x_test)
    log_p_test = moons_log_density(x_test.double().cpu().numpy(), cfg.noise)
    h_mean, h_se = moons_entropy(cfg.noise, cfg.num_entropy, np.random.default_rng(entropy_seq))
    test = _mean_se(-log_q_test)
    metrics: dict[str, Any] = {
        "train_nll": _mean_se(-_log_prob_np(flow, x_train)) if cfg.num_train > 1 else None,
        "test_nll": test,
        "entropy": {"mean": h_mean, "se": h_se},
        "gap": {"mean": test["mean"] - h_mean, "se": math.hypot(test["se"], h_se)},
        "kl_paired": _mean_se(log_p_test - log_q_test),
        "target_gap": TARGET_GAP,
        "target_met": test["mean"] - h_mean < TARGET_GAP,
        "final_minibatch_nll": float(losses[-min(50, cfg.steps) :].mean()) if cfg.steps else None,
        "eval_curve": {"step": eval_steps, "nll": eval_nll},
        "num_params": num_params,
        "device": str(device),
        "num_threads": torch.get_num_threads(),
        "train_seconds": train_seconds,
        "versions": versions(),
        "config": dataclasses.asdict(cfg),
    }

    @torch.no_grad()
    def learned(x: Tensor) -> Tensor:
        return flow_log_prob(flow, x.to(device=device, dtype=dtype))

    @torch.no_grad()
    def forward(u: Tensor) -> Tensor:
        return flow.call_and_ladj(u.to(device=device, dtype=dtype))[0]

    def truth(x: Tensor) -> np.ndarray:
        return moons_log_density(x.double().numpy(), cfg.noise)

    shown = x_test_np[: cfg.num_plot]
    with torch.no_grad():
        samples = forward(torch.randn(len(shown), 2))
        latents = flow.inverse_and_ladj(x_test[: cfg.num_plot])[0]
    lims = ((-2.0, 3.0), (-1.5, 2.0))
    files = {
        "samples": plot_samples(shown, samples, out / "samples.png", lims=lims),
        "density": plot_density({"true density": truth, "learned density": learned},
                                out / "density.png", xlim=lims[0], ylim=lims[1]),
        "grid_deformation": plot_grid_deformation(forward, out / "grid_deformation.png",
                                                  data=shown),
        "latent_qq": plot_latent_qq(latents, out / "latent_qq.png"),
        "training_curve": plot_training_curve(
            losses, out / "training_curve.png", label="minibatch NLL", ylabel="NLL (nats)",
            curves={f"held-out NLL ({len(valid)} pts)": (eval_steps, eval_nll)},
            reference=h_mean, reference_label="true entropy H[p]"),
    }
    metrics["runtime_seconds"] = time.perf_counter() - t_start
    metrics["files"] = {k: str(v) for k, v in files.items()}
    metrics["files"]["metrics"] = str(write_metrics(out / "metrics.json", metrics))
    return metrics


def format_report(metrics: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`run_moons`'s metrics."""
    cfg = metrics["config"]

    def fmt(entry: dict[str, float] | None) -> str:
        return "n/a" if entry is None else f"{entry['mean']:.4f} +- {entry['se']:.4f}"

    verdict = "met" if metrics["target_met"] else "NOT met"
    lines = [
        f"2-moons: {cfg['arch']} x{cfg['num_layers']} (hidden {cfg['hidden_layers']}x"
        f"{cfg['hidden']}, {metrics['num_params']} params), {cfg['steps']} steps on "
        f"{metrics['device']} in {metrics['train_seconds']:.1f} s "
        f"(total {metrics['runtime_seconds']:.1f} s)",
        f"  train NLL          {fmt(metrics['train_nll'])} nats",
        f"  test NLL           {fmt(metrics['test_nll'])} nats",
        f"  true entropy H[p]  {fmt(metrics['entropy'])} nats",
        f"  gap = KL(p || q)   {fmt(metrics['gap'])} nats (paired: "
        f"{fmt(metrics['kl_paired'])}); target < {metrics['target_gap']} {verdict}",
        "  files:",
        *(f"    {path}" for path in metrics["files"].values()),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """CLI entry: run, print the report, return the exit status."""
    print(format_report(run_moons(config_from_args(args))))
    return 0
