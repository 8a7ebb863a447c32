"""Measurements behind the paper's comparisons: any denoisers against the Gaussian and multi-delta denoisers of their
own training sets, on the same noisy held-out images and from the same latents with the same sampler, every number
with its interval (the book page "The paper's claims", sections "Metrics" and "Noise regimes").

:func:`compare` measures a set of models (trained networks, and the control models of
:mod:`gaussdiff_lib.claims`: the memorizer D_M, an untrained network, D_G itself) and returns a
:class:`Comparison` that keeps the per-item values, so that two models measured on the same items are compared
pairwise and every number carries an interval.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from . import stats as _stats
from ._checks import as_levels, positive_int, show_progress
from .convergence import INTERMEDIATE

__all__ = ["compare", "Comparison", "INTERMEDIATE"]



@dataclass
class Comparison:
    """What :func:`compare` measured, per model label (all tensors on the CPU).

    Per-item values are kept so that every number carries an interval and two models can be compared on the same
    items (:meth:`estimate`, :meth:`difference`): ``distance_items`` / ``delta_items`` [S, B] per held-out image
    (the same noisy inputs for every model), ``per_sample`` per latent (the same latents), ``linearity_items``
    [S_ls, pairs] (the same pairs), ``heldout_gl`` per held-out image.
    """

    levels: list[float]
    distance: dict[str, torch.Tensor]           # RMSE(D, D_G) at each level [S]
    delta_distance: dict[str, torch.Tensor]     # RMSE(D, D_M) to the multi-delta denoiser [S]
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
    linearity_levels: list[float] = field(default_factory=list)
    gm_items: dict[str, torch.Tensor] = field(default_factory=dict)   # RMSE(D_M, D_G) of each model's training set

    #: measure name -> what it is per item
    MEASURES = {"rmse_G_mid": "RMSE(D, D_G) over intermediate σ, per held-out image",
                "rmse_M_mid": "RMSE(D, D_M) over intermediate σ, per held-out image",
                "rmse_GM_mid": "RMSE(D_M, D_G) of the same training set over intermediate σ, per held-out image",
                "rmse_G_max": "RMSE(D, D_G) at the highest σ, per held-out image",
                "copies": "sample copies a training image (d1/d2 < 1/3), per latent",
                "gl": "GL score, per latent",
                "gl_gauss": "GL score of the Gaussian model's sample of the same latent",
                "gl_heldout": "GL score of real held-out images against the same training set, per image",
                "rmse_gauss_sample": "RMSE to the Gaussian model's Euler sample of the same latent",
                "rmse_chance": "RMSE to the Gaussian model's Euler sample of another latent (chance level)",
                "min_ls": "minimum over σ of the linearity score (pairs resampled)"}

    def _mid(self, curve_items: torch.Tensor) -> torch.Tensor:
        inside = [i for i, s in enumerate(self.levels) if INTERMEDIATE[0] <= s <= INTERMEDIATE[1]]
        if not inside:
            raise ValueError(f"no sigma level lies in {INTERMEDIATE}; levels are {self.levels}")
        return curve_items[inside].mean(0)

    @property
    def labels(self) -> list[str]:
        """The models measured, in the order given."""
        return list(self.samples)

    def items(self, label: str, measure: str) -> torch.Tensor:
        """Per-item values of one measure for one model (see :attr:`MEASURES`)."""
        if label not in self.samples:
            raise ValueError(f"no model {label!r}; the comparison has {list(self.samples)}")
        if measure == "rmse_G_mid":
            return self._mid(self.distance_items[label])
        if measure == "rmse_M_mid":
            return self._mid(self.delta_items[label])
        if measure == "rmse_GM_mid":
            return self._mid(self.gm_items[label])
        if measure == "rmse_G_max":
            return self.distance_items[label][self.levels.index(max(self.levels))]
        if measure in ("copies", "gl", "gl_gauss", "rmse_gauss_sample", "rmse_chance"):
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
        """The measure's value for one model with its 95% interval over items (exact Clopper-Pearson for the
        memorized fraction, percentile bootstrap otherwise)."""
        if measure == "copies":
            return _stats.proportion(self.items(label, measure))
        if measure == "min_ls":
            return _stats.bootstrap(self._stat(measure), self.items(label, measure))
        return _stats.mean(self.items(label, measure))

    def difference(self, a: str, b: str, measure: str) -> _stats.Estimate:
        """Measure(a) - measure(b) with the interval of the difference, resampling the shared items jointly
        (the same held-out images and noise, the same latents, the same linearity pairs)."""
        if measure == "gl_heldout":
            raise ValueError("the held-out GL reference uses each model's own training set; compare it per model")
        if measure == "min_ls":
            return _stats.paired(self.items(a, measure), self.items(b, measure), self._stat(measure))
        return _stats.paired(self.items(a, measure), self.items(b, measure))

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
    """Each model against the Gaussian and multi-delta denoisers of its own training set, the measurements behind
    the paper's Figs 6, 7, 8 and 13.

    Args:
        models: {label: denoiser}; train_sets: {label: its training images} (same labels).
        heldout: clean held-out images; the distances are taken on them noised at each level, and their GL
            score against each training set is the reference for the samples' GL.
        latents: unit-variance latents shared by every model (``gd.sampling.latents``).
        levels: noise levels of RMSE(D, D_G) (default: the paper's 10 analysis levels).
        n_steps: steps of the paper's Euler sampler (book page "The paper's claims", section "The denoisers"),
            used for every model *and* for each Gaussian model, so both sides of every sample comparison share the
            sampler and the latents.
        linearity_levels: if given, also the linearity score over these levels (its minimum per model).
        gaussians: {label: GaussianDenoiser} when already built (default: from each training set, cached).

    Models that share a training set (the same tensor) share its Gaussian and multi-delta denoisers, the Gaussian
    samples and the held-out GL reference, each computed once. The chance level of a sample distance is the
    distance from each sample to the Gaussian sample of the *next* latent (shuffled latents).

    Rows hold, per model, numbers with 95% intervals: N, GL score of the samples (Eq. 14) and of real held-out
    images against the same training set, memorized fraction (d1/d2 < 1/3; exact binomial interval), mean
    per-sample RMSE to the Gaussian samples, RMSE(D, D_G) and RMSE(D, D_M) (the multi-delta denoiser of the same
    training set; book page "The paper's claims", section "The denoisers") averaged over the intermediate range
    [0.116, 20], RMSE(D, D_G) at the highest level, and the minimum linearity score when measured.
    """
    from . import metrics, sampling
    from .denoisers import EmpiricalDenoiser, GaussianDenoiser
    from .sampling import edm_sigmas

    if not models:
        raise ValueError("compare needs at least one model")
    if set(models) != set(train_sets):
        raise ValueError(f"models and train_sets need the same labels, got {sorted(models)} and {sorted(train_sets)}")
    levels = edm_sigmas(10)[:-1].tolist() if levels is None else as_levels(levels)
    ls_levels = as_levels(linearity_levels) if linearity_levels is not None else []
    schedule = edm_sigmas(positive_int(n_steps, "n_steps"))
    if latents.shape[0] < 2:
        raise ValueError("compare needs at least 2 latents (the chance level pairs each sample with another latent)")
    out = Comparison(levels, {}, {}, {}, {}, {}, {}, [], linearity_levels=ls_levels)
    shared: dict[int, dict] = {}      # per training set (by identity): G, D_M, Gaussian samples, held-out GL
    for label in tqdm(list(models), desc="models", disable=not show_progress(progress) or len(models) < 2,
                      leave=False):
        D, X = models[label], train_sets[label]
        if id(X) not in shared:
            G = (gaussians or {}).get(label)
            G = GaussianDenoiser.from_data(X, device=device, cache=True) if G is None else G
            M = EmpiricalDenoiser(X, device=device)
            xg = sampling.euler(G, latents, schedule).cpu()
            shared[id(X)] = {"G": G, "M": M, "xg": xg, "X": X,
                             "gl_heldout": metrics.gl_score(heldout, X, reduce=False),
                             "gl_gauss": metrics.gl_score(xg, X, reduce=False),
                             "gm": metrics.distance_curve(M, G, heldout, levels, seed=seed, reduce=False)}
        sh = shared[id(X)]
        curve = metrics.distance_curve(D, sh["G"], heldout, levels, seed=seed, reduce=False)
        delta = metrics.distance_curve(D, sh["M"], heldout, levels, seed=seed, reduce=False)
        x = sampling.euler(D, latents, schedule).cpu()
        xg = sh["xg"]
        _, idx = metrics.nearest_neighbours(x, X, k=1)
        out.distance_items[label], out.delta_items[label], out.gm_items[label] = curve, delta, sh["gm"]
        out.distance[label], out.delta_distance[label] = curve.mean(1), delta.mean(1)
        out.per_sample[label] = {"copies": (metrics.copy_ratio(x, X) < 1 / 3).double().cpu(),
                                 "gl": metrics.gl_score(x, X, reduce=False),
                                 "gl_gauss": sh["gl_gauss"],
                                 "rmse_gauss_sample": metrics.sample_rmse(x, xg).cpu(),
                                 "rmse_chance": metrics.sample_rmse(x, xg.roll(-1, dims=0)).cpu()}
        out.heldout_gl[label] = sh["gl_heldout"]
        if ls_levels:
            ls = metrics.linearity_curve(D, heldout, ls_levels, n_pairs=n_pairs, seed=seed, reduce=False)
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
        if ls_levels:
            row["min LS"] = out.estimate(label, "min_ls")
        out.rows.append(row)
    return out
