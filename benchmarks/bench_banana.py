"""Banana benchmark: our flow guides against stock Pyro guides, side by side, seeds 0, 1, 2.

Every guide is fitted with the AutoFlowGuide issue's optimiser settings (``Trace_ELBO(
num_particles=8, vectorize_particles=True)``, Adam lr ``5e-3``, 3000 steps; by default the rate
decays geometrically over the second half to ``2.5e-4``, the same schedule for every guide,
``--lr-decay 1`` for a constant rate) on ``Banana(a=1,
sigma=0.5)`` with ``b = 1`` and ``b = 2``; KL(q || p) (log Z = 0) and PSIS k-hat come from
``--num-eval`` fresh draws, and the entropy identity is asserted for our flow guides (see
:mod:`pyro_flowvi.lab.experiments.banana`, whose functions do the work).  The two values of ``b``
run in two worker processes, one torch thread each.  Writes ``bench_banana.json`` and
``bench_banana.md`` (plus each run's ``metrics.json`` and figures) under ``--out`` and prints the
markdown table: median and worst seed per guide, worst k-hat (on ``--num-eval`` and on
``--num-khat`` draws), seconds per 1000 steps during the fits, and the time per step relative
to stock ``AutoIAFNormal`` of the same size as our default ``iaf``, measured separately
*interleaved*: every guide is built once on ``b = 1`` and the guides take turns of
``--time-steps`` SVI steps for ``--time-rounds`` rounds in one process, so machine noise is
shared; the medians over rounds are reported (the fits' own timings run in parallel workers and
are noisier).

    python benchmarks/bench_banana.py --out /tmp/bench_banana
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_flowvi import MassCoveringELBO
from pyro_flowvi.lab.common import key_value_option
from pyro_flowvi.lab.experiments.banana import BananaConfig, banana_model, make_guide, run_banana
from pyro_flowvi.lab.guides import parse_spec

OURS = ["iaf", "realnvp", "sylvester", "iaf+fkl", "realnvp+fkl"]  # +fkl: MassCoveringELBO
STOCK = [
    "AutoNormal",
    "AutoMultivariateNormal",
    "AutoIAFNormal",
    "AutoIAFNormal-default",
    "AutoIAFNormal-2x32",
    "AutoNormalizingFlow-coupling",
]
REFERENCE = "AutoIAFNormal"  # equal size to our default iaf
TARGETS = {1.0: 0.02, 2.0: 0.05}  # the KL bars, on every seed
KHAT_BAR = 0.5


def _one(job: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg = BananaConfig(**job)
    metrics = run_banana(cfg)
    return {"b": cfg.b, "metrics": metrics}


def _cell(res: dict[str, Any]) -> str:
    kl = res["kl"]
    return f"{kl['median']:.4f} / {kl['worst']:.4f}"


def time_steps(guides: list[str], rounds: int = 15, steps: int = 100, b: float = 1.0
               ) -> dict[str, dict[str, float]]:
    """Interleaved per-step times: ``{guide: {"ms_per_step": median, "rounds": [...]}}``.

    Each guide is built (default options, 8 vectorised particles, Adam 5e-3; ``+fkl`` guides with
    ``MassCoveringELBO(num_particles=8)``, 256 forward draws) and stepped 20
    times to warm up; then, ``rounds`` times, each guide runs ``steps`` SVI steps in turn.  Each
    guide keeps its own param-store state (guides of one class share parameter names), swapped
    in for its turn.
    """
    torch.set_num_threads(1)
    store = pyro.get_param_store()
    svis, states = {}, {}
    for name in guides:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = banana_model(b=b)
        guide = make_guide(name, model)
        if parse_spec(name).objective == "mass_covering":
            elbo = MassCoveringELBO(num_particles=8, max_plate_nesting=0)
        else:
            elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=0)
        svis[name] = SVI(model, guide, Adam({"lr": 5e-3}), elbo)
        for _ in range(20):
            svis[name].step()
        states[name] = store.get_state()
    times: dict[str, list[float]] = {name: [] for name in svis}
    for _ in range(rounds):
        for name, svi in svis.items():
            store.clear()
            store.set_state(states[name])
            t0 = time.perf_counter()
            for _ in range(steps):
                svi.step()
            times[name].append(1000.0 * (time.perf_counter() - t0) / steps)
    return {name: {"ms_per_step": float(np.median(t)), "rounds": t} for name, t in times.items()}


def make_table(by_b: dict[float, dict[str, Any]], guides: list[str],
               step_times: dict[str, dict[str, float]]) -> str:
    """Markdown table: KL median / worst seed per b, worst k-hat (20k / large-S draws), the
    fits' s / 1000 steps, and the interleaved time per step relative to the reference."""
    bs = sorted(by_b)
    ref = step_times.get(REFERENCE, {}).get("ms_per_step", float("nan"))
    head = ["guide"]
    for b in bs:
        head += [f"KL b={b:g} (median / worst)", f"k-hat b={b:g} worst (20k / 200k)"]
    head += ["s / 1000 steps (fits)", "ms / step (interleaved)", f"time / {REFERENCE}",
             "KL bars met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in guides:
        row = [name]
        secs, met = [], True
        for b in bs:
            res = by_b[b]["guides"].get(name)
            if res is None or "skipped" in res:
                row += ["skipped", "-"]
                met = False
                continue
            large = res.get("khat_large", {}).get("worst", float("nan"))
            row += [_cell(res), f"{res['khat']['worst']:.2f} / {large:.2f}"]
            secs.append(res["seconds_per_1000_steps"]["median"])
            met &= res["kl"]["worst"] < TARGETS.get(b, float("inf"))
        ms = step_times.get(name, {}).get("ms_per_step", float("nan"))
        row += [f"{sum(secs) / len(secs):.2f}" if secs else "-", f"{ms:.2f}",
                f"{ms / ref:.2f}", "yes" if met and secs else "no"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/bench_banana")
    parser.add_argument("--bs", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--num-eval", type=int, default=20_000)
    parser.add_argument("--num-khat", type=int, default=200_000)
    parser.add_argument("--time-rounds", type=int, default=15)
    parser.add_argument("--time-steps", type=int, default=100)
    parser.add_argument("--guides", nargs="+", default=OURS + STOCK)
    parser.add_argument("--lr-decay", type=float, default=0.05,
                        help="final / initial lr, the same schedule for every guide")
    parser.add_argument("--lr-decay-start", type=float, default=0.5,
                        help="fraction of the steps at the full rate before the decay")
    parser.add_argument("--forward-particles", type=int, default=256,
                        help="forward-KL draws of MassCoveringELBO (the +fkl guides)")
    parser.add_argument("--forward-weight", type=float, default=2.0,
                        help="weight of its forward-KL term (the +fkl guides)")
    parser.add_argument("--guide-option", dest="guide_options", action="append",
                        type=key_value_option, default=[], metavar="KEY=VALUE",
                        help="AutoFlowGuide keyword for every flow guide of the run, e.g. "
                        "permutation=reverse_last_natural (repeatable)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--time-only", action="store_true",
                        help="only the interleaved time per step of --guides (no fits)")
    args = parser.parse_args(argv)
    if args.time_only:
        step_times = time_steps(list(args.guides), args.time_rounds, args.time_steps)
        first = step_times[args.guides[0]]["ms_per_step"]
        print(f"| guide | ms / step | vs {args.guides[0]} |\n|---|---|---|")
        for name, res in step_times.items():
            print(f"| {name} | {res['ms_per_step']:.2f} | {res['ms_per_step'] / first:.2f}x |")
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [dict(b=b, guides=list(args.guides), seeds=list(args.seeds), steps=args.steps,
                 lr_decay=args.lr_decay, lr_decay_start=args.lr_decay_start,
                 num_eval=args.num_eval, num_khat=args.num_khat, num_entropy=args.num_eval,
                 forward_particles=args.forward_particles, forward_weight=args.forward_weight,
                 guide_options=dict(args.guide_options),
                 out=str(out / f"b{b:g}"),
                 progress=args.progress, num_threads=1) for b in args.bs]
    t0 = time.perf_counter()
    if args.workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(min(args.workers, len(jobs))) as pool:
            results = pool.map(_one, jobs)
    else:
        results = [_one(job) for job in jobs]
    by_b = {r["b"]: r["metrics"] for r in results}
    step_times = time_steps(list(args.guides), args.time_rounds, args.time_steps)
    table = make_table(by_b, list(args.guides), step_times)
    summary = {
        "settings": {"steps": args.steps, "seeds": args.seeds, "num_particles": 8, "lr": 5e-3,
                     "lr_decay": args.lr_decay, "lr_decay_start": args.lr_decay_start,
                     "num_eval": args.num_eval, "targets_kl": TARGETS, "khat_bar": KHAT_BAR,
                     "num_khat": args.num_khat, "time_reference": REFERENCE,
                     "time_rounds": args.time_rounds, "time_steps": args.time_steps},
        "step_times": step_times,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch_threads_per_worker": 1, "workers": args.workers},
        "wall_seconds": time.perf_counter() - t0,
        "results": {f"b={b:g}": {name: {k: v for k, v in res.items() if k != "per_seed"}
                                 | {"per_seed": res.get("per_seed")}
                                 for name, res in m["guides"].items()}
                    for b, m in by_b.items()},
        "table_markdown": table,
    }
    (out / "bench_banana.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "bench_banana.md").write_text(table + "\n")
    print(table)
    print(f"\nwall time {summary['wall_seconds']:.0f} s; JSON: {out / 'bench_banana.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
