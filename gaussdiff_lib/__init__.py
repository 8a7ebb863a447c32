"""gaussdiff: the hidden Gaussian structure of diffusion denoisers, as a small tested library.

``import gaussdiff_lib as gd`` then ``gd.data``, ``gd.denoisers``, ``gd.networks``, ``gd.sampling``,
``gd.training``, ``gd.linear_fit``, ``gd.metrics``, ``gd.plotting``, ``gd.widgets``, ``gd.cache``, ``gd.profiles``.
"""
__version__ = "0.1.0"

from . import cache, data, denoisers, linear_fit, metrics, networks, plotting, profiles, sampling, training, widgets  # noqa: E402,E501

__all__ = ["cache", "data", "denoisers", "linear_fit", "metrics", "networks", "plotting", "profiles", "sampling",
           "training", "widgets", "__version__"]
