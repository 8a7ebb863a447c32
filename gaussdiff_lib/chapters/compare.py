"""Comparisons the chapters make between trained networks and the Gaussian and multi-delta models: the
same latents, the same sampler and the same noise levels on every side, with bootstrap intervals."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .. import stats as _stats
from .._checks import as_levels, positive_int, show_progress
from ..convergence import INTERMEDIATE
from .models import gaussian, model
from .runs import Run, as_run, training_set

__all__ = ["compare", "Comparison", "compare_halves", "Halves"]


# ------------------------------------------------------------------------------- sweep analysis


@dataclass
class Comparison:
    """What :func:`compare` measured, per model label (all tensors on the CPU).

    Per-item values are kept so that every number carries a bootstrap interval and two models can be compared
    on the same items (:meth:`estimate`, :meth:`difference`): ``distance_items`` / ``delta_items`` [S, B] per
    held-out image (the same noisy inputs for every model), ``per_sample`` per latent (the same latents),
    ``linearity_items`` [S_ls, pairs] (the same pairs), ``heldout_gl`` per held-out image.
    """

    levels: list[float]
    distance: dict[str, torch.Tensor]           # RMSE(D_theta, D_G) at each level [S]
    delta_distance: dict[str, torch.Tensor]     # RMSE(D_theta, D_M) to the multi-delta denoiser [S]
    samples: dict[str, torch.Tensor]            # Euler samples from the shared latents
    gaussian_samples: dict[str, torch.Tensor]   # Euler samples of each model's Gaussian from the same latents
    nearest: dict[str, torch.Tensor]            # nearest training image of each sample
    linearity: dict[str, torch.Tensor]          # linearity score over ``linearity_levels`` (if asked)
    rows: list[dict]                            # one summary row per model (numbers with intervals)
    distance_items: dict[str, torch.Tensor] = field(default_factory=dict)
    delta_items: dict[str, torch.Tensor] = field(default_factory=dict)
    per_sample: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    linearity_items: dict[str, torch.Tensor] = field(default_factory=dict)
    heldout_gl: dict[str, torch.Tensor] = field(default_factory=dict)

    #: measure name -> (what it is per item, how it is summarised)
    MEASURES = {"rmse_G_mid": "RMSE(D_θ, D_G) over intermediate σ, per held-out image",
                "rmse_M_mid": "RMSE(D_θ, D_M) over intermediate σ, per held-out image",
                "rmse_G_max": "RMSE(D_θ, D_G) at the highest σ, per held-out image",
                "copies": "sample copies a training image (d1/d2 < 1/3), per latent",
                "gl": "GL score, per latent",
                "gl_heldout": "GL score of real held-out images against the same training set, per image",
                "rmse_gauss_sample": "RMSE to the Gaussian model's Euler sample of the same latent",
                "min_ls": "minimum over σ of the linearity score (pairs resampled)"}

    def _mid(self, curve_items: torch.Tensor) -> torch.Tensor:
        inside = [i for i, s in enumerate(self.levels) if INTERMEDIATE[0] <= s <= INTERMEDIATE[1]]
        if not inside:
            raise ValueError(f"no sigma level lies in {INTERMEDIATE}; levels are {self.levels}")
        return curve_items[inside].mean(0)

    def items(self, label: str, measure: str) -> torch.Tensor:
        """Per-item values of one measure for one model (see :attr:`MEASURES`)."""
        if label not in self.samples:
            raise ValueError(f"no model {label!r}; the comparison has {list(self.samples)}")
        if measure == "rmse_G_mid":
            return self._mid(self.distance_items[label])
        if measure == "rmse_M_mid":
            return self._mid(self.delta_items[label])
        if measure == "rmse_G_max":
            return self.distance_items[label][self.levels.index(max(self.levels))]
        if measure in ("copies", "gl", "rmse_gauss_sample"):
            return self.per_sample[label][measure]
        if measure == "gl_heldout":
            return self.heldout_gl[label]
        if measure == "min_ls":
            if label not in self.linearity_items:
                raise ValueError("the linearity score was not measured: pass linearity_levels to compare")
            return self.linearity_items[label]
        raise ValueError(f"unknown measure {measure!r}; choose one of {sorted(self.MEASURES)}")

    @staticmethod
    def _stat(measure: str):
        return (lambda v: v.mean(-1).min()) if measure == "min_ls" else (lambda v: v.mean())

    def estimate(self, label: str, measure: str) -> _stats.Estimate:
        """The measure's value for one model with its bootstrap interval over items."""
        return _stats.bootstrap(self._stat(measure), self.items(label, measure))

    def difference(self, a: str, b: str, measure: str) -> _stats.Estimate:
        """Measure(a) - measure(b) with the interval of the difference, resampling the shared items jointly
        (the same held-out images and noise, the same latents, the same linearity pairs)."""
        if measure == "gl_heldout":
            raise ValueError("the held-out GL reference uses each model's own training set; compare it per model")
        return _stats.paired(self.items(a, measure), self.items(b, measure), self._stat(measure))

    def figure_rows(self, labels=None, n: int | None = None) -> dict[str, torch.Tensor]:
        """Rows for :func:`gaussdiff_lib.chapters.plotting.image_rows`: samples, their nearest training images and
        the Gaussian samples of the same latents, per model (the paper's Figs 6-7, right)."""
        out = {}
        for label in labels or list(self.samples):
            out[f"{label}: samples"] = self.samples[label][:n]
            out[f"{label}: nearest training"] = self.nearest[label][:n]
            out[f"{label}: Gaussian"] = self.gaussian_samples[label][:n]
        return out


@torch.no_grad()
def compare(models, train_sets, heldout: torch.Tensor, latents: torch.Tensor, levels=None, n_steps: int = 10,
            linearity_levels=None, n_pairs: int = 100, gaussians=None, seed: int = 0, device=None,
            progress: bool | None = None) -> Comparison:
    """Each model against the Gaussian denoiser of its own training set, the measurements behind the
    paper's Figs 6, 7, 8 and 13.

    Args:
        models: {label: denoiser}; train_sets: {label: its training images} (same labels).
        heldout: clean held-out images; the distances are taken on them noised at each level, and their GL
            score against each training set is the reference for the samples' GL.
        latents: unit-variance latents shared by every model (``gd.sampling.latents``).
        levels: noise levels of RMSE(D_theta, D_G) (default: the paper's 10 analysis levels).
        n_steps: steps of the paper's Euler sampler (section 1), used for the networks *and* for each Gaussian
            model, so both sides of every sample comparison share the sampler and the latents.
        linearity_levels: if given, also the linearity score over these levels (its minimum per model).
        gaussians: {label: GaussianDenoiser} when already built (default: from each training set, cached).

    Rows hold, per model, numbers with 95% bootstrap intervals: N, GL score of the samples (Eq. 14) and of
    real held-out images against the same training set, memorized fraction (d1/d2 < 1/3), mean per-sample
    RMSE to the Gaussian samples, RMSE(D_theta, D_G) and RMSE(D_theta, D_M) (the multi-delta denoiser of
    the same training set, paper section 2) averaged over the intermediate range [0.116, 20],
    RMSE(D_theta, D_G) at the highest level, and the minimum linearity score when measured.
    """
    from .. import metrics, sampling
    from ..denoisers import EmpiricalDenoiser, GaussianDenoiser
    from ..sampling import edm_sigmas

    if set(models) != set(train_sets):
        raise ValueError(f"models and train_sets need the same labels, got {sorted(models)} and {sorted(train_sets)}")
    levels = edm_sigmas(10)[:-1].tolist() if levels is None else as_levels(levels)
    schedule = edm_sigmas(positive_int(n_steps, "n_steps"))
    out = Comparison(levels, {}, {}, {}, {}, {}, {}, [])
    for label in tqdm(list(models), desc="models", disable=not show_progress(progress) or len(models) < 2,
                      leave=False):
        D, X = models[label], train_sets[label]
        G = (gaussians or {}).get(label)
        G = GaussianDenoiser.from_data(X, device=device, cache=True) if G is None else G
        curve = metrics.distance_curve(D, G, heldout, levels, seed=seed, reduce=False)
        delta = metrics.distance_curve(D, EmpiricalDenoiser(X, device=device), heldout, levels, seed=seed,
                                       reduce=False)
        x = sampling.euler(D, latents, schedule).cpu()
        xg = sampling.euler(G, latents, schedule).cpu()
        _, idx = metrics.nearest_neighbours(x, X, k=1)
        out.distance_items[label], out.delta_items[label] = curve, delta
        out.distance[label], out.delta_distance[label] = curve.mean(1), delta.mean(1)
        out.per_sample[label] = {"copies": (metrics.copy_ratio(x, X) < 1 / 3).double().cpu(),
                                 "gl": metrics.gl_score(x, X, reduce=False),
                                 "rmse_gauss_sample": metrics.sample_rmse(x, xg).cpu()}
        out.heldout_gl[label] = metrics.gl_score(heldout, X, reduce=False)
        if linearity_levels is not None:
            ls = metrics.linearity_curve(D, heldout, as_levels(linearity_levels), n_pairs=n_pairs, seed=seed,
                                         reduce=False)
            out.linearity_items[label] = ls
            out.linearity[label] = ls.mean(1)
        out.samples[label], out.gaussian_samples[label] = x, xg
        out.nearest[label] = X[idx[:, 0].cpu()].cpu()
        row = {"model": label, "N": int(X.shape[0]), "GL score": out.estimate(label, "gl"),
               "GL of held-out images": out.estimate(label, "gl_heldout"),
               "memorized fraction": out.estimate(label, "copies"),
               "RMSE to Gaussian sample": out.estimate(label, "rmse_gauss_sample"),
               "RMSE(θ, G) intermediate σ": out.estimate(label, "rmse_G_mid"),
               "RMSE(θ, M) intermediate σ": out.estimate(label, "rmse_M_mid"),
               "RMSE(θ, G) at σ max": out.estimate(label, "rmse_G_max")}
        if linearity_levels is not None:
            row["min LS"] = out.estimate(label, "min_ls")
        out.rows.append(row)
    return out


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

