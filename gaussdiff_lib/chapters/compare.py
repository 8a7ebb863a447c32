"""Comparisons the chapters make between the book's named runs and the Gaussian and multi-delta models: the
same latents, the same sampler and the same noise levels on every side, with intervals. :func:`compare` and
:class:`Comparison` are the library's (:mod:`gaussdiff_lib.compare`), for any denoisers; :func:`compare_halves`
takes runs of a profile."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import stats as _stats
from .._checks import positive_int
from ..compare import Comparison, compare
from .models import gaussian, model
from .runs import Run, as_run, training_set

__all__ = ["compare", "Comparison", "compare_halves", "Halves"]


@dataclass
class Halves:
    """What :func:`compare_halves` measured: samples {"S1", "S2", "G1", "G2", and "F" for the floor run},
    per-latent RMSEs and copy flags (``items``), and the summary ``row`` (numbers with intervals)."""

    samples: dict[str, torch.Tensor]
    items: dict[str, torch.Tensor]
    row: dict

    def estimate(self, key: str) -> _stats.Estimate:
        """Mean over latents of one per-latent quantity (a key of ``items``), with its interval."""
        if key not in self.items:
            raise ValueError(f"no quantity {key!r}; measured {sorted(self.items)}")
        return _stats.mean(self.items[key])


@torch.no_grad()
def compare_halves(run1: Run | str, run2: Run | str, latents: torch.Tensor, profile: str | None = None,
                   snapshot: int | None = None, n_steps: int = 10, device=None, floor: Run | str | None = None
                   ) -> Halves:
    """Strong generalization (paper claim 9, Fig 9): two runs trained on disjoint training sets S1, S2 with
    different seeds, sampled from the same latents with the same Euler sampler as each set's Gaussian model.

    ``floor``: a run on the *same* images as ``run1`` with another seed; its agreement with ``run1``,
    RMSE(S1, F), is how close two networks trained on one data set come, the floor against which the halves'
    agreement RMSE(S1, S2) is read.

    Per latent: RMSE(S1, S2), RMSE(S1, G1), RMSE(S2, G2), RMSE(G1, G2), RMSE(S1, F) and whether each network's
    sample copies an image of its own training set; the row holds their means with 95% bootstrap intervals.
    """
    from .. import metrics, sampling

    r1, r2 = as_run(run1, profile), as_run(run2, profile)
    same_order = (r1.dataset, r1.subset_seed) == (r2.dataset, r2.subset_seed)
    if same_order and r1.offset < r2.offset + r2.n and r2.offset < r1.offset + r1.n:
        raise ValueError(f"runs {r1.name!r} and {r2.name!r} draw overlapping positions of one seeded order "
                         f"({r1.offset}..{r1.offset + r1.n - 1} and {r2.offset}..{r2.offset + r2.n - 1}); the halves "
                         "must be disjoint: give the second run offset = n of the first")
    if r1.seed == r2.seed:
        raise ValueError(f"runs {r1.name!r} and {r2.name!r} share seed {r1.seed} (initial weights, batches, noise), "
                         "which inflates their agreement; give the second half another seed")
    rf = as_run(floor, profile) if floor is not None else None
    if rf is not None:
        if (rf.dataset, rf.n, rf.offset, rf.subset_seed) != (r1.dataset, r1.n, r1.offset, r1.subset_seed):
            raise ValueError(f"the floor run {rf.name!r} must train on the images of {r1.name!r} (same dataset, n, "
                             "offset and subset_seed)")
        if rf.seed == r1.seed:
            raise ValueError(f"the floor run {rf.name!r} must differ from {r1.name!r} in its seed")
    X1, X2 = training_set(r1), training_set(r2)
    schedule = sampling.edm_sigmas(positive_int(n_steps, "n_steps"))
    samples = {}
    for tag, r, X in (("1", r1, X1), ("2", r2, X2)):
        D = model(r, snapshot=snapshot, device=device, X=X)
        samples["S" + tag] = sampling.euler(D, latents, schedule).cpu()
        samples["G" + tag] = sampling.euler(gaussian(r, X=X, device=device), latents, schedule).cpu()
    items = {}
    rm = lambda a, b: metrics.sample_rmse(samples[a], samples[b]).cpu()  # noqa: E731
    items["RMSE(S1, S2)"], items["RMSE(S1, G1)"] = rm("S1", "S2"), rm("S1", "G1")
    items["RMSE(S2, G2)"], items["RMSE(G1, G2)"] = rm("S2", "G2"), rm("G1", "G2")
    if rf is not None:
        samples["F"] = sampling.euler(model(rf, snapshot=snapshot, device=device, X=X1), latents, schedule).cpu()
        items["RMSE(S1, F)"] = rm("S1", "F")
    items["copies S1"] = (metrics.copy_ratio(samples["S1"], X1) < 1 / 3).double().cpu()
    items["copies S2"] = (metrics.copy_ratio(samples["S2"], X2) < 1 / 3).double().cpu()
    row = {k: _stats.mean(v) for k, v in items.items()}
    return Halves(samples, items, row)

