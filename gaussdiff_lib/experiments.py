"""The short name for the book's named runs and what is done with them: ``gd.experiments.model(name, profile)``
and the rest, gathered from :mod:`gaussdiff_lib.chapters` (runs, models, compare, tables), where each lives."""
from .chapters.compare import Comparison, compare, halves_design
from .chapters.models import (LicenseNotice, certificate, certificates, convergence_gates, convergence_rows,
                              convergence_sentence, gaussian, model, models, train_job)
from .chapters.runs import (ARCH_NAMES, Run, check_same_training, criterion, dae_description, dae_label, heldout_set,
                            replicates, run, runs, sweep, sweeps, training_set)
from .chapters.tables import (RUN_PARAMETERS, analysis_memory, chapter_networks, data_sources, fit_rows, image_limit,
                              training_plan)
from .convergence import INTERMEDIATE

__all__ = ["Run", "runs", "run", "sweep", "sweeps", "criterion", "check_same_training", "replicates", "dae_label",
           "dae_description",
           "training_set", "heldout_set", "ARCH_NAMES", "model", "models", "gaussian", "certificate", "certificates",
           "convergence_rows", "convergence_sentence", "convergence_gates", "train_job", "LicenseNotice", "compare", "Comparison",
           "halves_design", "training_plan", "analysis_memory", "chapter_networks", "data_sources",
           "fit_rows", "image_limit", "RUN_PARAMETERS", "INTERMEDIATE"]
