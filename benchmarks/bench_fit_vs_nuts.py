"""Wall time of ``pyro_flowvi.fit`` against a 4 x 1000-draw Pyro NUTS run, side by side.

Per posterior, in one process and one torch thread, interleaved: ``fit(model, *args)`` with its
default recipe (the whole call: warm start, training, the 4000-draw diagnosis), then NUTS as
``benchmarks/check_ports.py`` runs it (4 chains one after another, 1000 warmup + 1000 draws
each, JIT, dense mass matrix, started at reference draws), then ``fit`` again; the table
reports the median fit time, the NUTS time and their ratio (target: fit under 1/5 of NUTS),
with fit's k-hat and moment errors.

    OMP_NUM_THREADS=1 python benchmarks/bench_fit_vs_nuts.py \\
        --posteriors earnings-logearn_interaction_z,sblri-blr --out outputs/fit_vs_nuts
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from datetime import datetime
from pathlib import Path

import pyro
import torch

from pyro_flowvi import fit
from pyro_flowvi.lab.experiments.posteriordb import score_guide
from pyro_flowvi.lab.posteriordb import load_posterior
from pyro_flowvi.lab.posteriordb.nuts import run_nuts


def _fit(post, seed: int) -> tuple[float, dict]:
    pyro.clear_param_store()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(post.model, *post.args, seed=seed, progress=False, **post.kwargs)
    seconds = time.perf_counter() - start
    score = score_guide(post, result.guide, 4000)
    return seconds, {"khat": score["khat"], "mean_err_max": score["mean_err_max"],
                     "log_sd_ratio_max": score["log_sd_ratio_max"], "steps": result.num_steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posteriors", required=True, help="comma-separated names")
    parser.add_argument("--out", default="outputs/fit_vs_nuts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.posteriors.split(","):
        post = load_posterior(name)
        torch.set_default_dtype(post.dtype)
        fit_a, score = _fit(post, 0)
        nuts = run_nuts(post, num_chains=4, warmup=1000, num_draws=1000, seed=0)
        fit_b, _ = _fit(post, 1)
        fit_s = statistics.median([fit_a, fit_b])
        row = {"posterior": name, "fit_s": [fit_a, fit_b], "nuts_s": nuts.wall_s,
               "ratio": nuts.wall_s / fit_s, **score}
        rows.append(row)
        print(f"{name}: fit {fit_a:.1f} / {fit_b:.1f} s, NUTS {nuts.wall_s:.1f} s, "
              f"NUTS/fit {row['ratio']:.1f}", flush=True)
        (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [f"{datetime.now():%Y-%m-%d}, {platform.machine()} {platform.processor() or ''}, "
             "1 torch thread", "",
             "| posterior | fit s (2 runs) | NUTS 4x1000 s | NUTS / fit | fit steps | k-hat | "
             "mean err | abs log sd ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['posterior']} | {r['fit_s'][0]:.1f} / {r['fit_s'][1]:.1f} | "
                     f"{r['nuts_s']:.0f} | {r['ratio']:.1f} | {r['steps']} | {r['khat']:.2f} | "
                     f"{r['mean_err_max']:.3f} | {r['log_sd_ratio_max']:.3f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
