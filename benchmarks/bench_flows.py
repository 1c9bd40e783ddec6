"""Sample-and-log-prob throughput of pyro_flowvi stacks against Pyro's equivalents, side by side.

For each architecture (IAF, RealNVP, Sylvester), dim in {2, 32, 256} and batch in {256, 4096}
it times, in the same process and interleaved, ``z = q.rsample((B,)); q.log_prob(z)`` (forward)
and the same plus ``backward()`` (train) for our flow and for Pyro's stack of the same size:

* IAF: 4 x ``AffineAutoregressive(AutoRegressiveNN(D, [H, H]))`` vs ``build_flow("iaf")``.
* RealNVP: 4 x ``AffineCoupling(D // 2, DenseNN)`` with ``Permute`` (reversal) between layers vs
  ``build_flow("realnvp")`` (alternating masks, no permutation layers).
* Sylvester: 4 x Pyro ``Sylvester(D, count_transforms=K)`` vs ``build_flow("sylvester")``.

Both sides use ReLU conditioners with ``H = max(64, 2 D)`` hidden units (Pyro's default
non-linearity, so the comparison measures the implementation, not the activation).  Timings are
medians over repeats; the ratio is Pyro time / our time (> 1 means ours is faster).

Usage: ``python benchmarks/bench_flows.py [--device cuda] [--quick] [--out results.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineAutoregressive, AffineCoupling, Permute, Sylvester
from pyro.nn import AutoRegressiveNN, DenseNN
from torch import nn

from pyro_flowvi import build_flow

NUM_LAYERS = 4


def hidden(dim: int) -> list[int]:
    return [max(64, 2 * dim)] * 2


def pyro_iaf(dim: int) -> list:
    return [
        AffineAutoregressive(AutoRegressiveNN(dim, hidden(dim), nonlinearity=nn.ReLU()))
        for _ in range(NUM_LAYERS)
    ]


def pyro_realnvp(dim: int) -> list:
    split = max(dim // 2, 1)
    parts: list = []
    for k in range(NUM_LAYERS):
        net = DenseNN(split, hidden(dim), [dim - split, dim - split], nonlinearity=nn.ReLU())
        parts.append(AffineCoupling(split, net))
        if k < NUM_LAYERS - 1:
            parts.append(Permute(torch.arange(dim).flip(0)))
    return parts


def pyro_sylvester(dim: int, num_householder: int) -> list:
    return [Sylvester(dim, count_transforms=num_householder) for _ in range(NUM_LAYERS)]


def ours(arch: str, dim: int, **options: object) -> list:
    return [build_flow(arch, dim, num_layers=NUM_LAYERS, hidden_dims=hidden(dim),
                       activation=nn.ReLU, **options)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(transforms: list, dim: int, batch: int, device: torch.device,
              backward: bool) -> Callable[[], None]:
    modules = nn.ModuleList([t for t in transforms if isinstance(t, nn.Module)]).to(device)
    base = dist.Normal(torch.zeros(dim, device=device), 1.0).to_event(1)
    q = dist.TransformedDistribution(base, transforms)
    params = list(modules.parameters())

    def step() -> None:
        z = q.rsample((batch,))
        lp = q.log_prob(z)
        if backward:
            (lp.mean() + z.square().mean()).backward()
            for p in params:
                p.grad = None

    return step


def time_pair(fns: dict[str, Callable[[], None]], device: torch.device, repeats: int,
              min_time: float) -> dict[str, float]:
    """Median seconds per call for each function, interleaving them to share machine noise."""
    for fn in fns.values():  # warm-up
        fn()
        fn()
    _sync(device)
    calls = {}
    for name, fn in fns.items():  # calls per timing so each timing lasts >= min_time
        t0 = time.perf_counter()
        fn()
        _sync(device)
        calls[name] = max(1, int(min_time / max(time.perf_counter() - t0, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            _sync(device)
            samples[name].append((time.perf_counter() - t0) / calls[name])
    return {name: statistics.median(v) for name, v in samples.items()}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 32, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--archs", nargs="+", default=["iaf", "realnvp", "sylvester"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.05)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    pyro.set_rng_seed(0)
    rows = []
    header = f"{'arch':<10}{'dim':>5}{'batch':>7}{'mode':>7}{'pyro ms':>10}{'ours ms':>10}{'ratio':>8}"
    print(f"# {date.today()} | {machine()} | device {device} | torch {torch.__version__} | "
          f"pyro {pyro.__version__}")
    print(header)
    for arch in args.archs:
        for dim in args.dims:
            for batch in args.batches:
                if arch == "iaf":
                    theirs, mine = pyro_iaf(dim), ours("iaf", dim)
                elif arch == "realnvp":
                    theirs, mine = pyro_realnvp(dim), ours("realnvp", dim)
                else:
                    k = min(dim, 8)
                    theirs = pyro_sylvester(dim, k)
                    mine = ours("sylvester", dim)
                for mode in ("fwd", "train"):
                    fns = {
                        "pyro": make_step(theirs, dim, batch, device, mode == "train"),
                        "ours": make_step(mine, dim, batch, device, mode == "train"),
                    }
                    t = time_pair(fns, device, args.repeats, args.min_time)
                    ratio = t["pyro"] / t["ours"]
                    rows.append(dict(arch=arch, dim=dim, batch=batch, mode=mode,
                                     pyro_ms=1e3 * t["pyro"], ours_ms=1e3 * t["ours"],
                                     ratio=ratio))
                    print(f"{arch:<10}{dim:>5}{batch:>7}{mode:>7}{1e3 * t['pyro']:>10.3f}"
                          f"{1e3 * t['ours']:>10.3f}{ratio:>8.2f}", flush=True)
    ratios = [r["ratio"] for r in rows]
    print(f"# min ratio {min(ratios):.2f}, median ratio {statistics.median(ratios):.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(date=str(date.today()), machine=machine(), device=str(device),
                           torch=torch.__version__, pyro=pyro.__version__, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
