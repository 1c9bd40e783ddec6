"""Flowified MLP vs RealNVP: 2-moons (test NLL, gap to the true entropy), MNIST bits/dim, banana KL.

* 2-moons: ``pyro-flowvi moons`` defaults (3000 Adam steps, batch 256, ActNorm, two hidden layers of
  64 per conditioner) for ``--arch realnvp`` (6 couplings) and ``--arch flowified`` (6 exact
  ``D -> D -> 1`` flowified blocks); both about 27k parameters.
* MNIST: ``pyro-flowvi flowified-mnist`` for the flowified MLP ``784-256-64-16-8`` (exact) and a
  RealNVP of 4 couplings x [224] (about 1.06M parameters each), the same epochs, batch, optimiser
  and dequantisation; test bits/dim on the 10,000 test images.
* Banana (``b = 1``, seed 0, the banana job's optimiser): ``AutoFlowGuide(arch="flowified")``
  beside ``realnvp`` and ``iaf``.

Usage: ``python benchmarks/bench_flowified.py [--quick] [--mnist-epochs 2] [--out DIR]``; writes
``DIR/results.json`` and each job's own metrics and plots under ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from pyro_flowvi.lab.experiments.banana import BananaConfig, run_banana
from pyro_flowvi.lab.experiments.flowified_mnist import MNISTFlowConfig, run_flowified_mnist
from pyro_flowvi.lab.experiments.moons import MoonsConfig, run_moons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny runs (smoke test)")
    parser.add_argument("--mnist-epochs", type=float, default=2.0)
    parser.add_argument("--moons-steps", type=int, default=3000)
    parser.add_argument("--banana-steps", type=int, default=3000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["moons", "mnist", "banana"])
    parser.add_argument("--out", default="outputs/bench_flowified")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    q = args.quick
    results: dict = {"date": str(date.today()), "machine": platform.processor() or platform.machine(),
                     "torch": torch.__version__, "threads": 1}
    t0 = time.perf_counter()
    if "moons" not in args.skip:
        results["moons"] = {}
        for arch in ("realnvp", "flowified"):
            m = run_moons(MoonsConfig(arch=arch, steps=50 if q else args.moons_steps,
                                      out=str(out / f"moons_{arch}"), progress=False,
                                      num_test=2000 if q else 20_000,
                                      num_entropy=5000 if q else 100_000))
            results["moons"][arch] = {k: m[k] for k in ("test_nll", "entropy", "gap", "kl_paired",
                                                         "num_params", "train_seconds")}
            print(f"moons {arch}: test NLL {m['test_nll']['mean']:.4f}, gap "
                  f"{m['gap']['mean']:.4f} +- {m['gap']['se']:.4f}, {m['num_params']} params, "
                  f"{m['train_seconds']:.0f} s", flush=True)
    if "mnist" not in args.skip:
        results["mnist"] = {}
        for arch in ("realnvp", "flowified"):
            m = run_flowified_mnist(MNISTFlowConfig(
                arch=arch, epochs=0.02 if q else args.mnist_epochs, progress=False,
                out=str(out / f"mnist_{arch}")))
            results["mnist"][arch] = {k: m[k] for k in ("test_bits_per_dim", "num_params", "steps",
                                                         "epochs", "train_seconds")}
            print(f"mnist {arch}: test bits/dim {m['test_bits_per_dim']['mean']:.4f} +- "
                  f"{m['test_bits_per_dim']['se']:.4f}, {m['num_params']} params, "
                  f"{m['train_seconds']:.0f} s", flush=True)
    if "banana" not in args.skip:
        m = run_banana(BananaConfig(guides=["iaf", "realnvp", "flowified"],
                                    steps=100 if q else args.banana_steps, progress=False,
                                    out=str(out / "banana"), num_eval=2000 if q else 20_000))
        results["banana"] = {name: {"kl": r["kl"], "khat": r["khat"]}
                             for name, r in m["guides"].items() if "kl" in r}
        for name, r in results["banana"].items():
            print(f"banana {name}: KL {r['kl']['mean']:.4f} +- {r['kl']['se']:.4f}", flush=True)
    results["seconds"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
