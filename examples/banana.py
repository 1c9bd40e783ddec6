"""Fit stock Pyro guides and our flow guides to a banana with known log Z = 0; compare KL(q || p).

Same options as ``pyro-flowvi banana`` (see ``python examples/banana.py --help``), e.g.
``python examples/banana.py --b 2 --seeds 0 1 2``; writes ``metrics.json``, ``samples.png`` and
``elbo_traces.png`` to ``outputs/banana`` by default.
"""

import argparse

from pyro_flowvi.experiments import banana

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    banana.add_arguments(parser)
    config = banana.config_from_args(parser.parse_args())
    metrics = banana.run_banana(config)
    print(banana.format_report(metrics))
