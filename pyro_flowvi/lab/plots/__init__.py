"""The lab's figures, one place for all of them: 2-D flows (:mod:`.flows2d`), images and VAE
curves (:mod:`.images`), guide comparisons (:mod:`.comparison`).

Every function draws on a standalone Agg ``Figure`` (no ``pyplot`` state, no display), saves a
PNG to the ``path`` it is given (creating its directory) and returns the path.
"""

from pyro_flowvi.lab.plots.comparison import (
    plot_banana_samples,
    plot_elbo_traces,
    plot_funnel,
    plot_loss_curves,
    plot_marginals,
)
from pyro_flowvi.lab.plots.flows2d import (
    PointFn,
    chi2_quantile,
    plot_density,
    plot_grid_deformation,
    plot_latent_qq,
    plot_samples,
    plot_training_curve,
    save_figure,
)
from pyro_flowvi.lab.plots.images import (
    image_grid,
    plot_bits_per_dim_curve,
    plot_image_grid,
    plot_reconstructions,
    plot_sample_panels,
    plot_vae_curves,
)

__all__ = [
    "PointFn",
    "chi2_quantile",
    "image_grid",
    "plot_banana_samples",
    "plot_bits_per_dim_curve",
    "plot_density",
    "plot_elbo_traces",
    "plot_funnel",
    "plot_grid_deformation",
    "plot_image_grid",
    "plot_latent_qq",
    "plot_loss_curves",
    "plot_marginals",
    "plot_reconstructions",
    "plot_sample_panels",
    "plot_samples",
    "plot_training_curve",
    "plot_vae_curves",
    "save_figure",
]
