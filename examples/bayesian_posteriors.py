"""Flow guides vs AutoNormal / AutoMultivariateNormal vs NUTS on two Bayesian posteriors.

Runs the ``posterior`` experiment for the centred eight-schools funnel and for logistic regression
on breast cancer (needs scikit-learn), printing one table per model.  Results and figures go to
``outputs/posterior/<model>``; the NUTS reference is cached there, so a rerun only refits the
guides.  Same options as ``pyro-flowvi posterior`` (``--steps``, ``--lr``, ``--arch``...); pass a
model name to run just that one: ``python examples/bayesian_posteriors.py logistic --steps 1000``.
"""

import argparse
import sys

from pyro_flowvi.experiments import posterior

if __name__ == "__main__":
    argv = sys.argv[1:]
    names = [argv.pop(0)] if argv and not argv[0].startswith("-") else list(posterior.MODELS)
    parser = argparse.ArgumentParser(description=__doc__)
    posterior.add_arguments(parser)
    for name in names:
        metrics = posterior.run_posterior(posterior.config_from_args(parser.parse_args([name,
                                                                                        *argv])))
        print(posterior.format_report(metrics), end="\n\n")
