"""Fit a flowified MLP (784-256-64-16-8, exact likelihood) to dequantised MNIST on the CPU.

Same options as ``pyro-flowvi flowified-mnist`` (see ``python examples/flowified_mnist.py --help``);
writes ``metrics.json`` (test bits/dim), ``samples.png`` and ``training_curve.png`` to
``outputs/flowified_mnist``.  The default run (2 epochs) takes about two minutes on one core.
For the flowified MLP on 2-moons beside RealNVP use ``pyro-flowvi moons --arch flowified``
(or ``python examples/moons.py --arch flowified``).
"""

import argparse

from pyro_flowvi.experiments import flowified_mnist

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    flowified_mnist.add_arguments(parser)
    args = parser.parse_args()
    raise SystemExit(flowified_mnist.run(args))
