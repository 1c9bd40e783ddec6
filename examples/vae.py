"""Train the IAF-VAE on statically binarized MNIST and report the test ELBO and IS-NLL.

Same options as ``pyro-flowvi vae`` (see ``python examples/vae.py --help``); writes
``metrics.json``, the plots and ``checkpoint.pt`` to ``outputs/vae`` by default.  Data-parallel:
``torchrun --nproc-per-node 2 examples/vae.py --flow iaf``.
"""

import argparse

from pyro_flowvi.experiments import vae

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    vae.add_arguments(parser)
    metrics = vae.run_vae(vae.config_from_args(parser.parse_args()))
    print(vae.format_report(metrics))
