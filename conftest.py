"""Root pytest configuration: doctest namespace and seeding shared by tests/ and the package."""

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    doctest_namespace["torch"] = torch
    doctest_namespace["pyro"] = pyro


@pytest.fixture(autouse=True)
def _seed_and_clear() -> None:
    """Every test and doctest starts from seed 0 with an empty param store."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    pyro.enable_validation(True)
