"""Check every posteriordb port (and our own two posteriors) against its reference with Pyro NUTS.

Per posterior: 4 seeded NUTS chains run one after another (chain ``c`` seeded ``seed + c``),
1000 warmup + 1000 draws each, ``jit_compile=True``, dense mass-matrix adaptation, one torch
thread.  Initialisation: chain ``c`` starts at reference draw ``c * 250`` (``init_to_value``) for
every posterior.  Reason: ten of the models have ``ImproperUniform`` priors (flat Stan priors),
which cannot be sampled, so ``init_to_median`` / ``init_to_sample`` / ``init_to_feasible`` all
fail on them; starting in the typical set is also harmless for a check of the *density* (a wrong
port drifts away from the reference during 1000 warmup iterations anyway).  ``target_accept_prob``
is posteriordb's ``adapt_delta`` for that posterior (0.8 except 0.9 for ``hmm_drive_0`` and 0.95
for ``mesquite``; 0.95 for our funnel, 0.9 for our GLM, as in its reference run).

Reported per posterior: wall seconds of the whole 4 x (warmup + draws) run including JIT
compilation (``wall s``: the NUTS time budget reference), post-warmup divergences, max
rank-normalised R-hat, min bulk ESS, ``max z`` = max over coordinates of
``|NUTS mean - ref mean| / ref sd``, the Monte Carlo floor ``1 / sqrt(min bulk ESS)``, and
``max z/se``.  Pass criterion, per coordinate i:

    z_i <= 4 * se_i,   se_i = sqrt((sd_nuts_i / sd_ref_i)^2 / ESS_mean_i + 1 / ESS_ref)

(``ESS_mean_i``: ArviZ ESS of the mean of the NUTS chains; ``ESS_ref``: the reference's min bulk
ESS, about 10,000 for posteriordb, that of the NUTS reference for our GLM, infinite for the
exact funnel), i.e. the mean error is within 4 Monte Carlo standard errors of the two
estimates combined; a port passes when every coordinate does.  Results go to
``<out>/<posterior>.json`` one by one (so runs over subsets accumulate) and the table of all
JSONs present to ``<out>/check_ports.md``.

``--timing`` instead times one log-joint evaluation (``Posterior.log_joint`` with the
log-Jacobian, i.e. the model's share of an SVI step) for a batch of ``--particles`` reference
draws under an outer particle plate: median milliseconds of forward and forward+backward over
``--repeats`` calls (and the minimum, steadier on a shared machine), one thread; written to
``<out>/timing.md``.

    OMP_NUM_THREADS=1 python benchmarks/check_ports.py --out outputs/check_ports
    OMP_NUM_THREADS=1 python benchmarks/check_ports.py --posteriors arma-arma11 --out outputs/check_ports
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyro
import torch

from pyro_flowvi.lab.posteriordb import load_posterior
from pyro_flowvi.lab.posteriordb.nuts import run_nuts

# cheap regressions first, HMMs last
DEFAULT_ORDER = [
    "sblri-blr", "sblrc-blr", "earnings-earn_height", "earnings-logearn_interaction",
    "earnings-logearn_interaction_z", "kidiq-kidscore_interaction", "mesquite-mesquite",
    "mesquite-logmesquite_logvas", "funnel-centered_hierarchical", "glm-hierarchical_poisson",
    "arma-arma11", "hmm_example-hmm_example", "bball_drive_event_1-hmm_drive_1",
    "bball_drive_event_0-hmm_drive_0",
]
TARGET_ACCEPT = {"funnel-centered_hierarchical": 0.95, "glm-hierarchical_poisson": 0.9}
MAX_Z_OVER_SE = 4.0


def check(name: str, args: argparse.Namespace) -> dict:
    post = load_posterior(name, data_dir=args.data_dir)
    ref = post.reference
    control = ref.method.get("control") or {}
    accept = TARGET_ACCEPT.get(name, control.get("adapt_delta", 0.8))
    res = run_nuts(post, num_chains=args.chains, warmup=args.warmup, num_draws=args.draws,
                   seed=args.seed, init="reference", jit_compile=not args.no_jit,
                   full_mass=not args.diag_mass, target_accept_prob=accept)
    flat = res.draws.reshape(-1, res.draws.shape[-1])
    mean, sd = flat.mean(0), flat.std(0, ddof=1)
    z = np.abs(mean - ref.mean) / ref.sd
    ess_ref = ref.method.get("min_ess_bulk") or math.inf
    se = np.sqrt((sd / ref.sd) ** 2 / res.ess_mean + 1.0 / ess_ref)
    return {
        "posterior": name, "dim": post.dim, "chains": args.chains, "warmup": args.warmup,
        "draws": args.draws, "seed": args.seed, "target_accept_prob": accept,
        "mass_matrix": "diag" if args.diag_mass else "dense", "jit": not args.no_jit,
        **res.summary(),
        "max_z": float(z.max()), "argmax_z": ref.names[int(z.argmax())],
        "mc_floor": float(1 / math.sqrt(res.ess_bulk.min())), "ess_ref": ess_ref,
        "max_z_over_se": float((z / se).max()),
        "max_abs_log_sd_ratio": float(np.abs(np.log(sd / ref.sd)).max()),
        "passed": bool((z <= MAX_Z_OVER_SE * se).all()),
        "z": z.tolist(), "se": se.tolist(), "names": ref.names,
    }


def time_log_joint(name: str, args: argparse.Namespace) -> dict:
    post = load_posterior(name, data_dir=args.data_dir)
    ref = post.reference
    rows = ref.mean[None].repeat(args.particles, 0) if ref.draws is None else ref.draws[:args.particles]
    vals = {k: torch.as_tensor(v).requires_grad_() for k, v in post.unflatten(rows).items()}
    timings = {}
    for label, backward in (("fwd_ms", False), ("fwd_bwd_ms", True)):
        times = []
        for i in range(args.repeats + 5):
            start = time.perf_counter()
            lp = post.log_joint(vals, jacobian=True)
            if backward:
                lp.sum().backward()
            if i >= 5:  # warm-up calls not counted
                times.append(time.perf_counter() - start)
        timings[label] = 1e3 * float(np.median(times))
        timings[label.replace("_ms", "_min_ms")] = 1e3 * float(np.min(times))
    return {"posterior": name, "dim": post.dim, "particles": args.particles, **timings}


def markdown(results: list[dict]) -> str:
    head = ("| posterior | dim | chains x (warmup + draws) | wall s | div. | max R-hat | min ESS "
            "| max mean err (ref sd) | MC floor 1/sqrt(ESS) | max z/se | max abs log sd ratio | pass |\n"
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    rows = []
    for r in results:
        rows.append(
            f"| `{r['posterior']}` | {r['dim']} | {r['chains']} x ({r['warmup']} + {r['draws']}) "
            f"| {r['wall_s']:.0f} | {r['divergences']} | {r['max_rhat']:.3f} | {r['min_ess_bulk']:.0f} "
            f"| {r['max_z']:.3f} (`{r['argmax_z']}`) | {r['mc_floor']:.3f} | {r['max_z_over_se']:.2f} "
            f"| {r['max_abs_log_sd_ratio']:.3f} | {'pass' if r['passed'] else '**FAIL**'} |")
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posteriors", nargs="+", default=DEFAULT_ORDER)
    parser.add_argument("--out", type=Path, default=Path("outputs/check_ports"),
                        help="folder for <posterior>.json and check_ports.md")
    parser.add_argument("--data-dir", default=None,
                        help="posteriordb folder (default: see resolve_data_dir)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diag-mass", action="store_true", help="diagonal instead of dense mass matrix")
    parser.add_argument("--no-jit", action="store_true", help="never JIT (default: JIT everywhere)")
    parser.add_argument("--timing", action="store_true", help="only time batched log-joint calls")
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.timing:
        table = (f"| posterior | dim | log joint, {args.particles} particles: forward ms, median (min) "
                 "| forward + backward ms, median (min) |\n|---|---:|---:|---:|\n")
        for name in args.posteriors:
            t = time_log_joint(name, args)
            table += (f"| `{name}` | {t['dim']} | {t['fwd_ms']:.2f} ({t['fwd_min_ms']:.2f}) "
                      f"| {t['fwd_bwd_ms']:.2f} ({t['fwd_bwd_min_ms']:.2f}) |\n")
        (args.out / "timing.md").write_text(table)
        print(table)
        return 0
    for name in args.posteriors:
        start = time.perf_counter()
        result = check(name, args)
        result.update(date=datetime.now().isoformat(timespec="seconds"), machine=platform.platform(),
                      torch=torch.__version__, pyro=pyro.__version__, threads=torch.get_num_threads(),
                      command=" ".join(sys.argv))
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"{name}: {result['wall_s']:.0f} s, div {result['divergences']}, "
              f"R-hat {result['max_rhat']:.3f}, ESS {result['min_ess_bulk']:.0f}, "
              f"max z {result['max_z']:.3f}"
              f" (z/se {result['max_z_over_se']:.2f}) -> {'pass' if result['passed'] else 'FAIL'}"
              f" [{time.perf_counter() - start:.0f} s]", flush=True)
    order = {n: i for i, n in enumerate(DEFAULT_ORDER)}
    results = [json.loads(p.read_text()) for p in args.out.glob("*.json")]
    results.sort(key=lambda r: order.get(r["posterior"], len(order)))
    table = markdown(results)
    (args.out / "check_ports.md").write_text(table)
    print(table)
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
