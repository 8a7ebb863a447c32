"""gaussdiff: the hidden Gaussian structure of diffusion denoisers, as a small tested library.

``import gaussdiff_lib as gd`` then ``gd.data``, ``gd.denoisers``, ``gd.networks``, ``gd.sampling``,
``gd.training``, ``gd.linear_fit``, ``gd.metrics``, ``gd.experiments``, ``gd.plotting``, ``gd.widgets``,
``gd.cache``, ``gd.profiles``.
"""
__version__ = "0.1.0"

from . import (cache, data, denoisers, experiments, linear_fit, metrics, networks, plotting,  # noqa: E402
               profiles, sampling, training, widgets)

__all__ = ["cache", "data", "denoisers", "experiments", "linear_fit", "metrics", "networks", "plotting", "profiles",
           "sampling", "training", "widgets", "__version__"]
