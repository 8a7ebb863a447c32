"""gaussdiff: the hidden Gaussian structure of diffusion denoisers, as a small tested library.

The library: ``gd.data`` (loaders), ``gd.denoisers`` (Gaussian, multi-delta and network denoisers),
``gd.networks`` / ``gd.edm_networks`` (this project's UNet, ViT and affine map; EDM's DDPM++ / NCSN++),
``gd.training`` (EDM's loss, EMA, resumable runs), ``gd.checkpoints`` (NVIDIA's EDM pickles), ``gd.sampling``,
``gd.linear_fit``, ``gd.metrics``, ``gd.stats`` (intervals, checks and verdicts), ``gd.adapters`` (diffusers
networks, k-diffusion denoisers and checkpoints as denoisers D(x, sigma)), ``gd.compare`` (any denoisers against the
Gaussian and multi-delta models of their data), ``gd.claims`` (the paper's claims as checks with negative and
positive controls, for any denoisers), ``gd.diagnosis`` (``gd.diagnose``: one model against the Gaussian and
memorizing optima of its own training set, σ by σ), ``gd.convergence`` (criteria) and ``gd.cache``.

The book's machinery lives apart, in :mod:`gaussdiff_lib.chapters` (named runs of a profile, train-or-load,
comparisons, tables for the pages, the executor, plotting, widgets, offline assets, and the chapter templates
and profiles as package data). It is imported on first use: ``gd.chapters``, and the short names
``gd.experiments``, ``gd.profiles``, ``gd.plotting`` and ``gd.widgets``. The library's modules are imported on
first use too: ``import gaussdiff_lib`` alone imports neither torch, nor matplotlib's pyplot, nor the book's stack.
"""
import importlib

from ._version import __version__

# every submodule is imported when first used (PEP 562): ``import gaussdiff_lib`` is cheap (no torch), so the
# command line answers ``--version`` at once; ``gd.denoisers`` and ``from gaussdiff_lib import denoisers`` import
# the module then
_LIBRARY = ("adapters", "cache", "checkpoints", "claims", "compare", "convergence", "data", "denoisers",
            "diagnosis", "edm_networks", "linear_fit", "metrics", "networks", "sampling", "stats", "training")
_LAZY = {**{name: f"gaussdiff_lib.{name}" for name in _LIBRARY},
         # the book's machinery
         "chapters": "gaussdiff_lib.chapters", "experiments": "gaussdiff_lib.experiments",
         "profiles": "gaussdiff_lib.chapters.profiles", "plotting": "gaussdiff_lib.chapters.plotting",
         "widgets": "gaussdiff_lib.chapters.widgets"}


def constraints() -> str:
    """The path of the pinned stack the book is built with (``constraints.txt``, shipped with the package), for
    ``pip install -c PATH "gaussdiff[book]"`` from a wheel."""
    from pathlib import Path

    return str(Path(__file__).resolve().parent / "constraints.txt")


def diagnose(model, train, heldout, **kwargs):
    """Diagnose any diffusion model against the Gaussian and memorizing optima of its training set:
    :func:`gaussdiff_lib.diagnosis.diagnose` (imported on first use)."""
    from .diagnosis import diagnose as _diagnose

    return _diagnose(model, train, heldout, **kwargs)


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'gaussdiff_lib' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["adapters", "cache", "checkpoints", "claims", "compare", "convergence", "data", "denoisers", "diagnosis", "edm_networks",
           "linear_fit", "metrics", "networks", "sampling", "stats", "training", "chapters", "experiments", "profiles",
           "plotting", "widgets", "constraints", "diagnose", "__version__"]
