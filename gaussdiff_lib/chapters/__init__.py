"""The book's machinery, apart from the library it explains.

- :mod:`~gaussdiff_lib.chapters.runs`: the trained networks of the book, named once per profile;
- :mod:`~gaussdiff_lib.chapters.models`: train or load those runs, and certify their convergence;
- :mod:`~gaussdiff_lib.chapters.compare`: the chapters' comparisons (same latents, same sampler on every side);
- :mod:`~gaussdiff_lib.chapters.tables`: tables for the pages (training plan, data sources, memory);
- :mod:`~gaussdiff_lib.chapters.profiles` and :mod:`~gaussdiff_lib.chapters.execute`: profiles, chapter templates
  and the papermill executor;
- :mod:`~gaussdiff_lib.chapters.plotting`, :mod:`~gaussdiff_lib.chapters.widgets`: figures and explorers;
- :mod:`~gaussdiff_lib.chapters.assets`: the pinned scripts the offline book needs;
- :mod:`~gaussdiff_lib.chapters.results`: the numbers each chapter quotes beside the paper's, as data;
- :mod:`~gaussdiff_lib.chapters.timings`: the build's time record (what each phase, run and notebook cost);
- :mod:`~gaussdiff_lib.chapters.report`: the diagnosis of one model as a report (``gaussdiff diagnose``).

The templates (``notebooks/``), profiles (``profiles/``) and the measured reports the scale page reads
(``reports/``) ship with the package, so an installed wheel runs the chapters from any folder.
:func:`glue` records a value for the book's prose (myst-nb) and prints it where myst-nb is missing (Colab).
"""
import importlib

__all__ = ["glue", "runs", "models", "compare", "tables", "profiles", "execute", "plotting", "widgets", "assets", "results",
           "timings", "report"]


def glue(name: str, value, display: bool = True):
    """myst-nb's ``glue`` when the book stack is installed; otherwise print ``name = value`` (a chapter opened in
    Colab or plain Jupyter runs without myst-nb, and still shows what the prose would quote)."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        if display:
            from IPython.display import display as _show

            _show(value)
        else:
            print(f"{name} = {value}")
        return None
    return _glue(name, value, display=display)


def __getattr__(name: str):
    if name in __all__:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
