"""Our own posteriors (the set lacks a funnel and a GLM) and the command writing their references.

* ``funnel-centered_hierarchical`` (:mod:`.funnel`): EXACT reference (1-d quadrature over
  ``tau``, then exact conditional draws).
* ``glm-hierarchical_poisson`` (:mod:`.glm`): reference from a long seeded Pyro NUTS run.

Each lives in ``references/<name>.json`` in posteriordb's ``reference.json`` layout plus the
simulated ``data``: summary (mean, sd, q05, q50, q95), 1000 joint draws, the method and its
checks.  Rewrite both (about 3 minutes on one CPU thread, nearly all of it the NUTS run) with::

    OMP_NUM_THREADS=1 python -m pyro_flowvi.lab.posteriordb.own --write-references
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from .data import Reference, read_json
from .funnel import NAME as FUNNEL
from .funnel import FunnelExact, funnel_centered, simulate_funnel_data
from .glm import NAME as GLM
from .glm import glm_data, glm_hierarchical_poisson, simulate_glm_data
from .posterior import Posterior

__all__ = ["OWN_POSTERIORS", "load_own", "main", "reference_path", "write_references"]

REFERENCE_DIR = Path(__file__).resolve().parent / "references"
OWN_POSTERIORS = (FUNNEL, GLM)
NUM_KEEP = 1000  # joint draws stored

_TEXT = {
    FUNNEL: dict(
        description="Centred hierarchical normal model (eight-schools style) with J = 12 groups of "
        "known, large sd (8 to 18): mu ~ N(0, 5), tau ~ Cauchy+(0, 5), theta_j ~ N(mu, tau), "
        "y_j ~ N(theta_j, sigma_j); simulated data; dimension 14.",
        why_hard="A real funnel: tau's posterior has its mode at 0, and as tau -> 0 the thetas "
        "collapse onto mu, so the scale of theta varies by orders of magnitude along log tau "
        "(NUTS diverges in the neck; Gaussian guides miss it).  Exact reference.",
    ),
    GLM: dict(
        description="Hierarchical Poisson GLM with centred group intercepts: mu ~ N(0, 2), tau ~ "
        "N+(0, 1), alpha_j ~ N(mu, tau) (J = 12), beta ~ N(0, 1) (K = 3), y ~ Poisson(exposure * "
        "exp(alpha[g] + x beta)); N = {N} simulated observations; dimension 17.",
        why_hard="Non-Gaussian (Poisson) likelihood with a hierarchical scale: tau is skewed and "
        "the centred alphas of the small groups shrink together with tau (a mild funnel); the "
        "intercepts are correlated with mu.",
    ),
}


def reference_path(name: str) -> Path:
    """``references/<name>.json`` inside the package."""
    return REFERENCE_DIR / f"{name}.json"


def load_own(name: str, dtype: torch.dtype = torch.float64) -> Posterior:
    """Load one of :data:`OWN_POSTERIORS` from its reference JSON (data + reference)."""
    path = reference_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; write it with "
                                "`python -m pyro_flowvi.lab.posteriordb.own --write-references`")
    ref = read_json(path)
    data = ref["data"]
    if name == FUNNEL:
        model, mpn = funnel_centered, 0
        args: tuple = tuple(torch.as_tensor(np.asarray(data[k], float), dtype=dtype)
                            for k in ("y", "sigma"))
    elif name == GLM:
        model, mpn, args = glm_hierarchical_poisson, 1, glm_data(data, dtype)
    else:
        raise ValueError(f"not one of our own posteriors: {name!r}")
    return Posterior(name=name, model=model, args=args, kwargs={}, dim=int(ref["dimension"]),
                     reference=Reference.from_json(ref), description=ref["description"],
                     why_hard=ref["why_hard"], max_plate_nesting=mpn)


def _summary(names: Sequence[str], mean: np.ndarray, sd: np.ndarray, q: np.ndarray) -> list[dict]:
    return [{"name": n, "mean": float(mean[k]), "sd": float(sd[k]), "q05": float(q[0, k]),
             "q50": float(q[1, k]), "q95": float(q[2, k])} for k, n in enumerate(names)]


def _draws(names: Sequence[str], draws: np.ndarray) -> dict[str, list[float]]:
    return {n: [float(f"{x:.10g}") for x in draws[:, k]] for k, n in enumerate(names)}


def _document(name: str, data: dict, dim: int, method: dict, summary: list, draws: dict) -> dict:
    text = {k: v.replace("{N}", str(data.get("N"))) for k, v in _TEXT[name].items()}
    return {"posterior_name": name, **text, "dimension": dim,
            "source": "pyro_flowvi.lab.posteriordb.own (simulated data, see data.simulation)",
            "reference_method": method, "summary": summary, "draws": draws, "data": data}


def funnel_reference(num_exact: int = 200_000, seed: int = 1) -> dict[str, Any]:
    """The funnel's reference document: quadrature summary, exact draws, data."""
    data = simulate_funnel_data()
    ex = FunnelExact(np.asarray(data["y"]), np.asarray(data["sigma"]))
    mean, sd = ex.moments()
    q = ex.quantiles()
    draws = ex.sample(np.random.default_rng(seed), num_exact)
    method = {
        "method": "exact",
        "details": "p(tau | y) with mu and theta integrated out analytically, tabulated on "
        f"{ex.grid_size} points of log tau in [{ex.log_tau_min:.3f}, {ex.log_tau_max:.3f}]; summary "
        "(mean, sd, quantiles) by quadrature over that grid; draws exact: tau by inverse CDF "
        "(linear interpolation), mu | tau, theta | mu, tau Gaussian.",
        "grid_edge_mass": [float(m) for m in ex.edge_mass],
        "num_exact_draws_checked": num_exact,
        "max_abs_mean_error_of_exact_draws_in_sd": float(np.max(np.abs(draws.mean(0) - mean) / sd)),
        "max_abs_log_sd_ratio_of_exact_draws": float(np.max(np.abs(np.log(draws.std(0, ddof=1) / sd)))),
        "draws_note": f"the first {NUM_KEEP} of the exact draws (numpy default_rng({seed}))",
        "min_ess_bulk": None,
    }
    return _document(FUNNEL, data, 2 + data["J"], method, _summary(ex.names, mean, sd, q),
                     _draws(ex.names, draws[:NUM_KEEP]))


def glm_reference(num_chains: int = 4, warmup: int = 1000, num_draws: int = 2500,
                  seed: int = 0) -> dict[str, Any]:
    """The GLM's reference document from a long NUTS run; raises if its checks fail."""
    from .nuts import run_nuts

    data = simulate_glm_data()
    names = (["mu", "tau"] + [f"alpha[{j + 1}]" for j in range(data["J"])]
             + [f"beta[{k + 1}]" for k in range(data["K"])])
    empty = Reference(names=names, mean=np.zeros(len(names)), sd=np.ones(len(names)))
    post = Posterior(name=GLM, model=glm_hierarchical_poisson, args=glm_data(data, torch.float64),
                     kwargs={}, dim=len(names), reference=empty, description="", why_hard="")
    res = run_nuts(post, num_chains=num_chains, warmup=warmup, num_draws=num_draws, seed=seed,
                   init="median", target_accept_prob=0.9)
    flat = res.draws.reshape(-1, len(names))
    checks = {"r_hat_below_1_01": bool(res.rhat.max() < 1.01),
              "ess_bulk_above_1000": bool(res.ess_bulk.min() > 1000),
              "no_divergences": res.divergences == 0}
    if not all(checks.values()):
        raise RuntimeError(f"GLM reference run failed its checks: {checks}, {res.summary()}")
    thin = flat[np.linspace(0, len(flat) - 1, NUM_KEEP).round().astype(int)]
    method = {
        "method": "pyro_nuts", "pyro_version": pyro.__version__, "torch_version": torch.__version__,
        "chains": num_chains, "warmup": warmup, "draws_per_chain": num_draws, "seed": seed,
        "init": "init_to_median", "target_accept_prob": 0.9, "mass_matrix": "dense",
        "divergent_transitions_total": res.divergences, "max_r_hat": float(res.rhat.max()),
        "min_ess_bulk": float(res.ess_bulk.min()), "min_ess_mean": float(res.ess_mean.min()),
        "wall_s": res.wall_s, "checks_made": checks,
        "draws_note": f"{NUM_KEEP} draws evenly thinned from the {len(flat)} pooled draws "
                      "(chain 1 first)",
    }
    q = np.quantile(flat, [0.05, 0.5, 0.95], axis=0)
    return _document(GLM, data, len(names), method,
                     _summary(names, flat.mean(0), flat.std(0, ddof=1), q), _draws(names, thin))


def write_references(names: Sequence[str] = OWN_POSTERIORS) -> list[Path]:
    """Recompute and write ``references/<name>.json`` for each name; returns the paths."""
    torch.set_num_threads(1)
    paths = []
    for name in names:
        start = time.perf_counter()
        doc = funnel_reference() if name == FUNNEL else glm_reference()
        doc["reference_method"]["written"] = {"date": date.today().isoformat(),
                                              "seconds": round(time.perf_counter() - start, 1),
                                              "machine": platform.platform()}
        path = reference_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in doc.items())
        path.write_text("{\n" + body + "\n}\n", encoding="utf-8")
        paths.append(path)
        kib, secs = path.stat().st_size / 1024, time.perf_counter() - start
        print(f"wrote {path} ({kib:.0f} KiB, {secs:.0f} s)")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pyro_flowvi.lab.posteriordb.own --write-references [--only NAME ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write-references", action="store_true", help="recompute and write the JSONs")
    parser.add_argument("--only", nargs="+", choices=OWN_POSTERIORS, default=list(OWN_POSTERIORS))
    args = parser.parse_args(argv)
    if not args.write_references:
        parser.print_help()
        return 1
    write_references(args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
