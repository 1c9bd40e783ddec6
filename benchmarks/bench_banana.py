"""Banana benchmark: our flow guides against stock Pyro guides, side by side, seeds 0, 1, 2.

Every guide is fitted with the AutoFlowGuide issue's optimiser settings (``Trace_ELBO(
num_particles=8, vectorize_particles=True)``, Adam lr ``5e-3``, 3000 steps; by default the rate
decays geometrically over the second half to ``2.5e-4``, the same schedule for every guide,
``--lr-decay 1`` for a constant rate) on ``Banana(a=1,
sigma=0.5)`` with ``b = 1`` and ``b = 2``; KL(q || p) (log Z = 0) and PSIS k-hat come from
``--num-eval`` fresh draws, and the entropy identity is asserted for our flow guides (see
:mod:`pyro_flowvi.experiments.banana`, whose functions do the work).  The two values of ``b``
run in two worker processes, one torch thread each.  Writes ``bench_banana.json`` and
``bench_banana.md`` (plus each run's ``metrics.json`` and figures) under ``--out`` and prints the
markdown table: median and worst seed per guide, worst k-hat, seconds per 1000 steps and the
ratio of time per step to stock ``AutoIAFNormal`` of the same size as our default ``iaf``.

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

import torch

from pyro_flowvi.experiments.banana import BananaConfig, run_banana

OURS = ["iaf", "realnvp", "sylvester"]
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


def make_table(by_b: dict[float, dict[str, Any]], guides: list[str]) -> str:
    """Markdown table: KL median / worst seed per b, worst k-hat, time per step and its ratio."""
    bs = sorted(by_b)
    ref_time = {b: by_b[b]["guides"][REFERENCE]["seconds_per_1000_steps"]["median"]
                if REFERENCE in by_b[b]["guides"] else float("nan") for b in bs}
    head = ["guide"]
    for b in bs:
        head += [f"KL b={b:g} (median / worst)", f"k-hat b={b:g} (worst)"]
    head += ["s / 1000 steps", f"time / {REFERENCE}", "issue bar met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in guides:
        row = [name]
        secs, ratios, met = [], [], True
        for b in bs:
            res = by_b[b]["guides"].get(name)
            if res is None or "skipped" in res:
                row += ["skipped", "-"]
                met = False
                continue
            row += [_cell(res), f"{res['khat']['worst']:.2f}"]
            sec = res["seconds_per_1000_steps"]["median"]
            secs.append(sec)
            ratios.append(sec / ref_time[b])
            met &= res["kl"]["worst"] < TARGETS.get(b, float("inf"))
            met &= res["khat"]["worst"] < KHAT_BAR
        if secs:
            row += [f"{sum(secs) / len(secs):.2f}", f"{sum(ratios) / len(ratios):.2f}",
                    "yes" if met else "no"]
        else:
            row += ["-", "-", "-"]
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
    parser.add_argument("--guides", nargs="+", default=OURS + STOCK)
    parser.add_argument("--lr-decay", type=float, default=0.05,
                        help="final / initial lr, the same schedule for every guide")
    parser.add_argument("--lr-decay-start", type=float, default=0.5,
                        help="fraction of the steps at the full rate before the decay")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [dict(b=b, guides=list(args.guides), seeds=list(args.seeds), steps=args.steps,
                 lr_decay=args.lr_decay, lr_decay_start=args.lr_decay_start,
                 num_eval=args.num_eval, num_entropy=args.num_eval, out=str(out / f"b{b:g}"),
                 progress=args.progress, num_threads=1) for b in args.bs]
    t0 = time.perf_counter()
    if args.workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(min(args.workers, len(jobs))) as pool:
            results = pool.map(_one, jobs)
    else:
        results = [_one(job) for job in jobs]
    by_b = {r["b"]: r["metrics"] for r in results}
    table = make_table(by_b, list(args.guides))
    summary = {
        "settings": {"steps": args.steps, "seeds": args.seeds, "num_particles": 8, "lr": 5e-3,
                     "lr_decay": args.lr_decay, "lr_decay_start": args.lr_decay_start,
                     "num_eval": args.num_eval, "targets_kl": TARGETS, "khat_bar": KHAT_BAR,
                     "time_reference": REFERENCE},
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
