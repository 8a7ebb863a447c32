"""gaussdiff: the hidden Gaussian structure of diffusion denoisers, as a small tested library.

``import gaussdiff_lib as gd`` then ``gd.data``, ``gd.denoisers``, ``gd.networks``, ``gd.sampling``,
``gd.training``, ``gd.linear_fit``, ``gd.metrics``, ``gd.stats`` (intervals and verdicts), ``gd.convergence``
(convergence criteria), ``gd.experiments``, ``gd.plotting``, ``gd.widgets``, ``gd.cache``, ``gd.profiles``,
``gd.checkpoints`` (NVIDIA's EDM pickles) and ``gd.edm_networks`` (EDM's DDPM++ / NCSN++ UNets).
"""
__version__ = "0.1.0"

from . import (cache, checkpoints, convergence, data, denoisers, edm_networks, experiments,  # noqa: E402
               linear_fit, metrics, networks, plotting, profiles, sampling, stats, training, widgets)

__all__ = ["cache", "checkpoints", "convergence", "data", "denoisers", "edm_networks", "experiments", "linear_fit",
           "metrics", "networks", "plotting", "profiles", "sampling", "stats", "training", "widgets", "__version__"]
