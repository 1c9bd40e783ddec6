"""Fit a 6-layer RealNVP to 2-moons by maximum likelihood and compare with the true entropy.

Same options as ``pyro-flowvi moons`` (see ``python examples/moons.py --help``); writes
``metrics.json`` and the figures to ``outputs/moons`` by default.
"""

import argparse

from pyro_flowvi.experiments import moons

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    moons.add_arguments(parser)
    config = moons.config_from_args(parser.parse_args())
    metrics = moons.run_moons(config)
    print(moons.format_report(metrics))
