"""Time per SVI step and time to converge: our eager and captured steps against stock Pyro and
NumPyro autoguides, side by side in one process.

Targets: ``banana`` (D = 2), ``eight_schools`` (centred, D = 10), ``funnel`` (Neal's, D = 10),
``hier_logistic`` (a hierarchical logistic regression, D = 100), ``gauss1000`` (a correlated
Gaussian, AR(1) with rho = 0.9, D = 1000) and ``gauss10000`` (independent, scales from 0.01 to
100, D = 10,000; for GPU rows).  ``--device cuda`` runs the torch guides on the GPU.  Guides:

* ``flow-eager``: ``AutoFlowGuide(model)`` (its defaults) with Pyro's ``Trace_ELBO``;
* ``flow-graph`` / ``flow-script`` / ``flow-inductor``: the same guide with
  :class:`~pyro_flowvi.autoguide.compiled.CompiledSVI` (the traced step run from Python, by
  TorchScript, or compiled by ``torch.compile``); a name ending in ``-stl`` or ``-nostl``
  (e.g. ``flow-script-nostl``, not in the default list) trains with or without sticking the
  landing (the guide's default: on for iaf up to D = 64), for the cost of STL; the
  environment variable ``BENCH_SPEED_ARCH`` (default ``iaf``) picks another arch for the
  ``flow-*`` rows;
* ``pyro-normal`` / ``pyro-iaf``: Pyro's ``AutoNormal`` / ``AutoIAFNormal(num_transforms=2)``
  with ``Trace_ELBO``;
* ``numpyro-normal`` / ``numpyro-iaf`` / ``numpyro-bnaf``: NumPyro's ``AutoNormal``,
  ``AutoIAFNormal(num_flows=2)`` and ``AutoBNAFNormal``, ``svi.update`` under ``jax.jit`` (only
  when ``numpyro`` is installed: ``pip install -e ".[bench]"``).

Every guide takes 8 vectorised particles per step and Adam at ``--lr``.  The per-step time is
the median over ``--rounds`` interleaved rounds of ``--steps`` steps each, one thread (torch and
XLA), set-up (warm start, tracing, compiling, JIT) excluded and reported apart.  Then each guide
trains from scratch (seed 0) for ``--converge-steps`` steps: time to converge is the wall time
(set-up included) until the 50-step running mean of the loss first comes within 0.05 nats of
the mean of the last 200 steps, which is also reported (the final -ELBO: lower is better).

    OMP_NUM_THREADS=1 python benchmarks/bench_speed.py --out outputs/bench_speed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoNormal

from pyro_flowvi import AutoFlowGuide
from pyro_flowvi.autoguide.compiled import CompiledSVI

TARGETS = ("banana", "eight_schools", "funnel", "hier_logistic", "gauss1000", "gauss10000")
GUIDES = ("flow-eager", "flow-graph", "flow-script", "flow-inductor", "pyro-normal", "pyro-iaf",
          "numpyro-normal", "numpyro-iaf", "numpyro-bnaf")
PARTICLES = 8


# -- the targets, in Pyro (data from one fixed numpy generator) --------------------------------
def _data(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if name == "eight_schools":
        return {"y": np.array([28.0, 8, -3, 7, -1, 1, 18, 12]),
                "sigma": np.array([15.0, 10, 16, 11, 9, 11, 10, 18])}
    if name == "hier_logistic":
        groups, features, n = 10, 9, 1000
        g = rng.integers(0, groups, n)
        x = rng.normal(size=(n, features))
        beta = rng.normal(0.5, 0.5, size=(groups, features))
        y = (rng.random(n) < 1 / (1 + np.exp(-(x * beta[g]).sum(-1)))).astype(float)
        return {"x": x, "g": g, "y": y}
    if name == "gauss1000":
        d, rho = 1000, 0.9
        idx = np.arange(d)
        return {"cov": rho ** np.abs(idx[:, None] - idx[None, :])}
    return {}


def pyro_model(name: str) -> tuple[Callable, tuple, int]:
    """(model, args, max_plate_nesting)"""
    device = torch.get_default_device()
    data = {k: torch.as_tensor(v, device=device) for k, v in _data(name).items()}
    if name == "banana":
        def model() -> None:
            x1 = pyro.sample("x1", dist.Normal(0.0, 1.0))
            pyro.sample("x2", dist.Normal(x1**2 - 1.0, 0.5))
        return model, (), 0
    if name == "eight_schools":
        def model(y: torch.Tensor, sigma: torch.Tensor) -> None:
            mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
            tau = pyro.sample("tau", dist.HalfCauchy(5.0))
            with pyro.plate("J", 8):
                theta = pyro.sample("theta", dist.Normal(mu, tau))
                pyro.sample("obs", dist.Normal(theta, sigma), obs=y)
        return model, (data["y"].float(), data["sigma"].float()), 1
    if name == "funnel":
        def model() -> None:
            v = pyro.sample("v", dist.Normal(0.0, 3.0))
            scale = torch.exp(v / 2)[..., None].expand(v.shape + (9,))
            pyro.sample("x", dist.Normal(torch.zeros(9), scale).to_event(1))
        return model, (), 0
    if name == "hier_logistic":
        x, g, y = data["x"].float(), data["g"].long(), data["y"].float()

        def model(x: torch.Tensor, g: torch.Tensor, y: torch.Tensor) -> None:
            mu = pyro.sample("mu", dist.Normal(torch.zeros(9), 1.0).to_event(1))
            tau = pyro.sample("tau", dist.HalfNormal(1.0))
            with pyro.plate("groups", 10, dim=-1):
                beta = pyro.sample("beta", dist.Normal(mu, tau[..., None]).to_event(1))
            logits = (x * beta[..., g, :]).sum(-1)
            with pyro.plate("data", len(y), dim=-1):
                pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)
        return model, (x, g, y), 1
    if name == "gauss10000":
        scales = torch.logspace(-2, 2, 10_000)

        def model() -> None:
            pyro.sample("z", dist.Normal(torch.zeros(10_000), scales).to_event(1))
        return model, (), 0
    cov = data["cov"].float()
    scale_tril = torch.linalg.cholesky(cov)

    def model() -> None:
        pyro.sample("z", dist.MultivariateNormal(torch.zeros(len(cov)), scale_tril=scale_tril))
    return model, (), 0


# -- runners: set up once, then step ------------------------------------------------------------
class Runner:
    name: str
    setup_seconds: float = 0.0

    def step(self) -> float:
        raise NotImplementedError


class PyroRunner(Runner):
    def __init__(self, name: str, target: str, lr: float) -> None:
        self.name = name  # guides of one target share the param store under distinct names
        model, self.args, nesting = pyro_model(target)
        prefix = f"{name}_{target}"
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name.startswith("flow"):
                stl = {"-nostl": False, "-stl": True}.get("-" + name.rsplit("-", 1)[-1])
                guide = AutoFlowGuide(model, name=prefix.replace("-", "_"),
                                      arch=os.environ.get("BENCH_SPEED_ARCH", "iaf"),
                                      **({} if stl is None else {"stl": stl}))
            elif name == "pyro-normal":
                guide = AutoNormal(model)
            else:
                guide = AutoIAFNormal(model, num_transforms=2)
            with torch.no_grad():
                guide(*self.args)
            if name.startswith("flow-") and name.split("-")[1] != "eager":
                self.svi: Any = CompiledSVI(guide, num_particles=PARTICLES, lr=lr, clip_norm=None,
                                            backend=name.split("-")[1])
                self.svi.capture(*self.args)
            else:
                self.svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO(
                    num_particles=PARTICLES, vectorize_particles=True, max_plate_nesting=nesting))
                self.svi.step(*self.args)  # lazily built parameters
        self.setup_seconds = time.perf_counter() - start

    def step(self) -> float:
        return float(self.svi.step(*self.args))  # a float: one device synchronisation


class NumPyroRunner(Runner):
    def __init__(self, name: str, target: str, lr: float) -> None:
        import jax
        import numpyro
        import numpyro.distributions as nd
        from numpyro.infer import SVI as NSVI
        from numpyro.infer import Trace_ELBO as NTrace
        from numpyro.infer.autoguide import AutoBNAFNormal, AutoIAFNormal, AutoNormal
        from numpyro.optim import Adam

        self.name = name
        model, args = numpyro_model(target, numpyro, nd)
        guide = {"numpyro-normal": lambda m: AutoNormal(m),
                 "numpyro-iaf": lambda m: AutoIAFNormal(m, num_flows=2),
                 "numpyro-bnaf": lambda m: AutoBNAFNormal(m)}[name](model)
        svi = NSVI(model, guide, Adam(lr), NTrace(num_particles=PARTICLES,
                                                   vectorize_particles=True))
        start = time.perf_counter()
        self.state = svi.init(jax.random.PRNGKey(0), *args)
        self.update = jax.jit(lambda state: svi.update(state, *args))
        self.state, loss = self.update(self.state)
        loss.block_until_ready()
        self.setup_seconds = time.perf_counter() - start

    def step(self) -> float:
        self.state, loss = self.update(self.state)
        return float(loss)


def numpyro_model(name: str, numpyro: Any, nd: Any) -> tuple[Callable, tuple]:
    import jax.numpy as jnp

    data = {k: jnp.asarray(v) for k, v in _data(name).items()}
    if name == "banana":
        def model() -> None:
            x1 = numpyro.sample("x1", nd.Normal(0.0, 1.0))
            numpyro.sample("x2", nd.Normal(x1**2 - 1.0, 0.5))
        return model, ()
    if name == "eight_schools":
        def model(y: Any, sigma: Any) -> None:
            mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
            tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
            with numpyro.plate("J", 8):
                theta = numpyro.sample("theta", nd.Normal(mu, tau))
                numpyro.sample("obs", nd.Normal(theta, sigma), obs=y)
        return model, (data["y"], data["sigma"])
    if name == "funnel":
        def model() -> None:
            v = numpyro.sample("v", nd.Normal(0.0, 3.0))
            numpyro.sample("x", nd.Normal(jnp.zeros(9), jnp.exp(v / 2)).to_event(1))
        return model, ()
    if name == "hier_logistic":
        def model(x: Any, g: Any, y: Any) -> None:
            mu = numpyro.sample("mu", nd.Normal(jnp.zeros(9), 1.0).to_event(1))
            tau = numpyro.sample("tau", nd.HalfNormal(1.0))
            with numpyro.plate("groups", 10):
                beta = numpyro.sample("beta", nd.Normal(mu, tau).to_event(1))
            with numpyro.plate("data", len(y)):
                numpyro.sample("y", nd.Bernoulli(logits=(x * beta[g]).sum(-1)), obs=y)
        return model, (data["x"], data["g"], data["y"])
    if name == "gauss10000":
        scales = jnp.logspace(-2, 2, 10_000)

        def model() -> None:
            numpyro.sample("z", nd.Normal(jnp.zeros(10_000), scales).to_event(1))
        return model, ()
    scale_tril = jnp.linalg.cholesky(data["cov"])

    def model() -> None:
        numpyro.sample("z", nd.MultivariateNormal(jnp.zeros(len(scale_tril)),
                                                  scale_tril=scale_tril))
    return model, ()


def make_runner(name: str, target: str, lr: float) -> Runner:
    if name.startswith("numpyro"):
        return NumPyroRunner(name, target, lr)
    return PyroRunner(name, target, lr)


# -- measurements -------------------------------------------------------------------------------
def per_step(runners: list[Runner], rounds: int, steps: int) -> dict[str, float]:
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    for _ in range(rounds):
        for runner in runners:
            start = time.perf_counter()
            for _ in range(steps):
                runner.step()
            times[runner.name].append((time.perf_counter() - start) / steps * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def converge(name: str, target: str, lr: float, steps: int) -> dict[str, float]:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)  # the torch guides of one architecture start and draw alike
    start = time.perf_counter()
    runner = make_runner(name, target, lr)
    stamps, losses = [], []
    for _ in range(steps):
        losses.append(runner.step())
        stamps.append(time.perf_counter() - start)
    arr = np.asarray(losses, dtype=float)
    arr = np.where(np.isfinite(arr), arr, np.nan)
    final = float(np.nanmean(arr[-200:]))
    running = np.convolve(np.nan_to_num(arr, nan=np.inf), np.ones(50) / 50, mode="valid")
    within = np.nonzero(np.abs(running - final) < 0.05)[0]
    reached = stamps[int(within[0]) + 49] if within.size else math.nan
    return {"final_loss": final, "seconds_to_converge": reached, "total_seconds": stamps[-1],
            "setup_seconds": runner.setup_seconds}


def peak_rss_mb(name: str, target: str, lr: float, steps: int = 200) -> tuple[float, float]:
    """Peak resident memory (MB) of a fresh process that sets ``name`` up on ``target``, after
    the set-up and after ``steps`` more steps (``ru_maxrss``: the whole process, Python and
    torch included; equal values mean the steps never rose above the set-up's peak)."""
    import subprocess
    import sys

    code = (f"import resource, sys; sys.argv = ['x']; import torch; torch.set_num_threads(1); "
            f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_speed as b; "
            f"r = b.make_runner({name!r}, {target!r}, {lr!r}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); "
            f"[r.step() for _ in range({steps})]; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    setup, after = out.stdout.strip().splitlines()[-2:]
    return int(setup) / 1024, int(after) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/bench_speed")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--guides", nargs="+", default=list(GUIDES),
                        help=f"of {GUIDES}; a flow-<backend> name may end in -stl or -nostl")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--converge-steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--device", default="cpu", help="the torch guides' device (cpu, cuda)")
    parser.add_argument("--memory", action="store_true",
                        help="also the peak RSS of each torch guide, one fresh process each")
    args = parser.parse_args(argv)
    unknown = [g for g in args.guides if g not in GUIDES and not (
        g.startswith("flow-") and g.rsplit("-", 1)[0] in GUIDES and g.endswith("stl"))]
    if unknown:
        parser.error(f"unknown guides {unknown}: choose from {GUIDES} (flow ones may end in "
                     "-stl or -nostl)")
    torch.set_num_threads(1)
    torch.set_default_device(args.device)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                          "intra_op_parallelism_threads=1")
    guides = list(args.guides)
    try:
        import numpyro  # noqa: F401
    except ImportError:
        dropped = [g for g in guides if g.startswith("numpyro")]
        if dropped:
            print(f"numpyro is not installed: skipping {dropped} (pip install -e '.[bench]')")
        guides = [g for g in guides if not g.startswith("numpyro")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
        "processor": platform.processor(), "torch": torch.__version__, "pyro": pyro.__version__,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "settings": vars(args), "targets": {}}
    for target in args.targets:
        pyro.clear_param_store()
        runners = []
        for name in guides:
            try:
                runners.append(make_runner(name, target, args.lr))
            except Exception as err:  # noqa: BLE001 - a guide that fails here is reported
                print(f"{target} {name}: set-up failed: {type(err).__name__}: {err}"[:300])
        ms = per_step(runners, args.rounds, args.steps)
        rows = {}
        for runner in runners:
            rows[runner.name] = {"ms_per_step": ms[runner.name],
                                 "setup_seconds": runner.setup_seconds}
        for name in list(rows):
            if args.converge_steps:
                rows[name].update(converge(name, target, args.lr, args.converge_steps))
            if args.memory and not name.startswith("numpyro"):
                rows[name]["setup_peak_rss_mb"], rows[name]["peak_rss_mb"] = peak_rss_mb(
                    name, target, args.lr)
        results["targets"][target] = rows
        print(format_target(target, rows), flush=True)
        (out / "bench_speed.json").write_text(json.dumps(results, indent=1))
    (out / "bench_speed.md").write_text(
        "\n\n".join(format_target(t, r) for t, r in results["targets"].items()) + "\n")
    return 0


def format_target(target: str, rows: dict[str, dict[str, float]]) -> str:
    base = rows.get("flow-eager", {}).get("ms_per_step")
    iaf = rows.get("numpyro-iaf", {}).get("ms_per_step")
    lines = [f"**{target}**", "",
             "| guide | ms / step | speed-up vs flow-eager | time vs numpyro-iaf | set-up s | "
             "s to converge | final -ELBO | peak RSS MB (after set-up) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        ms = row["ms_per_step"]
        lines.append(f"| {name} | {ms:.3g} | " + (f"{base / ms:.2f}x | " if base else "- | "))
        lines[-1] += (f"{ms / iaf:.2f}x | " if iaf else "- | ") + (
            f"{row['setup_seconds']:.1f} | {row.get('seconds_to_converge', math.nan):.1f} | "
            f"{row.get('final_loss', math.nan):.2f} | {row.get('peak_rss_mb', math.nan):.0f} "
            f"({row.get('setup_peak_rss_mb', math.nan):.0f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
