"""Datasets: samplers and exact reference densities for the examples and benchmarks."""

from pyro_flowvi.lab.data.moons import (
    DEFAULT_NOISE,
    default_num_nodes,
    make_moons,
    moons_entropy,
    moons_log_density,
)

__all__ = [
    "DEFAULT_NOISE",
    "default_num_nodes",
    "make_moons",
    "moons_entropy",
    "moons_log_density",
]
