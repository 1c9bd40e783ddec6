"""These tests run in float64 so log-dets can be compared with autograd to 1e-8."""

import pytest


@pytest.fixture(autouse=True)
def _float64(float64):
    yield
