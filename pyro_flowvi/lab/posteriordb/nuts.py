"""Seeded Pyro NUTS on a :class:`~.posterior.Posterior`: chains one after another, with diagnostics.

Used by ``benchmarks/check_ports.py`` (checking each port against its reference) and by
:mod:`.own` (the NUTS reference of ``glm-hierarchical_poisson``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_median, init_to_value

from .posterior import Posterior

__all__ = ["NutsResult", "run_nuts"]


@dataclass
class NutsResult:
    """Draws and diagnostics of :func:`run_nuts`.

    Attributes:
        draws: ``(chains, draws, K)`` constrained draws in ``reference.names`` order.
        divergences: post-warmup divergent transitions, all chains.
        wall_s: seconds for all chains (setup, JIT compilation, warmup and sampling).
        chain_wall_s: the same per chain.
        rhat, ess_bulk, ess_mean: rank-normalised split R-hat, bulk ESS and the ESS of the mean
            per coordinate (ArviZ).
        step_size: final adapted step size of each chain.
    """

    draws: np.ndarray
    divergences: int
    wall_s: float
    chain_wall_s: list[float]
    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_mean: np.ndarray
    step_size: list[float]

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary (no draws)."""
        return {"divergences": self.divergences, "wall_s": self.wall_s,
                "chain_wall_s": self.chain_wall_s, "max_rhat": float(self.rhat.max()),
                "min_ess_bulk": float(self.ess_bulk.min()), "min_ess_mean": float(self.ess_mean.min()),
                "step_size": self.step_size}


def run_nuts(
    posterior: Posterior,
    *,
    num_chains: int = 4,
    warmup: int = 1000,
    num_draws: int = 1000,
    seed: int = 0,
    init: str = "reference",
    jit_compile: bool = True,
    full_mass: bool = True,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
) -> NutsResult:
    """Run ``num_chains`` NUTS chains one after another (chain ``c`` seeded ``seed + c``).

    Args:
        init: ``"reference"``: chain ``c`` starts at reference draw ``c * N // num_chains`` (the
            mean if there are no draws); works for every model, including those with
            ``ImproperUniform`` priors, which cannot be sampled.  ``"median"``: ``init_to_median``
            (needs proper priors).
        full_mass: adapt a dense mass matrix (else diagonal).
    """
    ref = posterior.reference
    draws, divergences, walls, steps = [], 0, [], []
    for c in range(num_chains):
        pyro.set_rng_seed(seed + c)
        pyro.clear_param_store()
        if init == "reference":
            # moments-only references (mcycle_gp): every chain starts at the reference mean
            starts = ref.mean[None] if ref.draws is None else ref.draws
            row = starts[c * len(starts) // num_chains][None]
            values = {k: v[0] for k, v in posterior.unflatten(row).items()}
            strategy = init_to_value(values={
                k: torch.as_tensor(v, dtype=posterior.dtype) for k, v in values.items()})
        elif init == "median":
            strategy = init_to_median(num_samples=15)
        else:
            raise ValueError(f"unknown init {init!r}")
        kernel = NUTS(posterior.model, jit_compile=jit_compile, ignore_jit_warnings=True,
                      full_mass=full_mass, target_accept_prob=target_accept_prob,
                      max_tree_depth=max_tree_depth, init_strategy=strategy,
                      max_plate_nesting=posterior.max_plate_nesting)
        mcmc = MCMC(kernel, num_samples=num_draws, warmup_steps=warmup, disable_progbar=True)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mcmc.run(*posterior.args, **posterior.kwargs)
        walls.append(time.perf_counter() - start)
        divergences += sum(1 for d in kernel._divergences if d >= 0)
        steps.append(float(kernel.step_size))
        draws.append(posterior.flatten(mcmc.get_samples()))
    arr = np.stack(draws)  # (chains, draws, K)
    rhat = np.array([float(az.rhat(arr[:, :, k])) for k in range(arr.shape[2])])
    ess_bulk = np.array([float(az.ess(arr[:, :, k], method="bulk")) for k in range(arr.shape[2])])
    ess_mean = np.array([float(az.ess(arr[:, :, k], method="mean")) for k in range(arr.shape[2])])
    return NutsResult(draws=arr, divergences=divergences, wall_s=float(sum(walls)),
                      chain_wall_s=walls, rhat=rhat, ess_bulk=ess_bulk, ess_mean=ess_mean,
                      step_size=steps)

