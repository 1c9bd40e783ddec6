"""Tails benchmark: flow guides with and without a learned tail layer on heavy-tailed targets.

Targets with log Z = 0, so KL(q || p) = -ELBO: a product of ``D`` Student-t(3) (``student-t3``)
and Neal's 10-d funnel (``funnel``: v ~ N(0, 3), x_i ~ N(0, exp(v/2)), i < 9; the sd of v is 3).
Each guide is trained by :func:`pyro_flowvi.fit` (the measured recipe) on seeds 0, 1, 2 and
diagnosed on ``--num-samples`` draws: KL, PSIS k-hat, the guide's sd of the first coordinate
(v for the funnel), steps and seconds.  Guides are ``ARCH`` or ``ARCH+tails`` (``tails="tukey"``:
a final :class:`~pyro_flowvi.transforms.TukeyTails` layer), run one after the other in one
process, one torch thread.

    python benchmarks/bench_tails.py --out /tmp/bench_tails
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyro_flowvi import fit
from pyro_flowvi.autoguide.training import NonFiniteLossError

TARGETS = ("student-t3", "funnel")
GUIDES = ("iaf", "iaf+tails", "realnvp", "realnvp+tails", "nsf-coupling", "nsf-coupling+tails")


def student_t3(dim: int = 5) -> None:
    pyro.sample("x", dist.StudentT(3.0, torch.zeros(dim), 1.0).to_event(1))


def funnel(dim: int = 10) -> None:
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    pyro.sample("x", dist.Normal(torch.zeros(dim - 1), torch.exp(v / 2)).to_event(1))


def run_one(target: str, guide: str, seed: int, num_samples: int) -> dict[str, float]:
    arch, _, extra = guide.partition("+")
    options = {"tails": "tukey"} if extra == "tails" else {}
    model = student_t3 if target == "student-t3" else funnel
    pyro.clear_param_store()
    t0 = time.perf_counter()
    try:
        result = fit(model, arch=arch, guide_options=options, seed=seed, progress=False,
                     num_diagnostic_samples=num_samples)
    except NonFiniteLossError as err:  # recorded as a failed fit, not a crashed benchmark
        print(f"{target} {guide} seed {seed}: {str(err)[:200]}", flush=True)
        return {"kl": math.nan, "khat": math.nan, "sd_first": math.nan, "steps": 0,
                "seconds": time.perf_counter() - t0, "ms_per_step": math.nan, "failed": 1.0}
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        draws = result.guide.get_posterior().sample((num_samples,))
    return {"kl": -result.report.elbo, "khat": result.report.psis_khat,
            "sd_first": float(draws[:, 0].std()), "steps": result.num_steps,
            "seconds": seconds, "ms_per_step": 1000 * result.seconds / max(result.num_steps, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/bench_tails")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--guides", nargs="+", default=list(GUIDES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-samples", type=int, default=20_000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for target in args.targets:
        for guide in args.guides:
            runs = [run_one(target, guide, s, args.num_samples) for s in args.seeds]
            results.setdefault(target, {})[guide] = runs
            print(target, guide, json.dumps(runs), flush=True)
            (out / "bench_tails.json").write_text(json.dumps(
                {"machine": platform.platform(), "date": time.strftime("%Y-%m-%d"),
                 "results": results}, indent=1))
    lines = ["| target | guide | KL median / worst | k-hat median / worst | sd of x_1 (median) "
             "| ms / step |", "|---|---|---|---|---|---|"]
    for target, by_guide in results.items():
        for guide, runs in by_guide.items():
            ok = [r for r in runs if not r.get("failed")]
            failed = f" ({len(runs) - len(ok)} of {len(runs)} diverged)" if len(ok) < len(runs) else ""
            if not ok:
                lines.append(f"| {target} | {guide}{failed} | - | - | - | - |")
                continue
            kl = [r["kl"] for r in ok]
            kh = [r["khat"] for r in ok]
            sd = float(np.median([r["sd_first"] for r in ok]))
            ms = float(np.median([r["ms_per_step"] for r in ok]))
            lines.append(f"| {target} | {guide}{failed} | {np.median(kl):.3f} / {max(kl):.3f} | "
                         f"{np.median(kh):.2f} / {max(kh):.2f} | {sd:.2f} | {ms:.1f} |")
    table = "\n".join(lines)
    (out / "bench_tails.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
