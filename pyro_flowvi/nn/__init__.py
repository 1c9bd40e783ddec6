"""Conditioning networks: masks, the masked MLP and MADE."""

from pyro_flowvi.nn.made import MADE
from pyro_flowvi.nn.mlp import MaskedLinear, MaskedMLP

__all__ = ["MADE", "MaskedLinear", "MaskedMLP"]
