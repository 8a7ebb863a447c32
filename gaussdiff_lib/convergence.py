"""Convergence as data: is a trained network done changing? Measured on EMA snapshots along its run.

A network trained for a fixed number of steps may still be moving, and early in training every network
looks Gaussian (paper claim 8), so an unconverged network can reproduce the paper's trends for the wrong
reason. A :class:`Criterion` fixes, once per profile, how that is checked:

- the run keeps EMA snapshots every ``every`` of its steps (``every = 0.125``: at 1/8, 2/8, ..., 7/8 and the end);
- at each, two measures on ``images`` held-out images: the **held-out loss** (EDM's weighted denoising loss,
  averaged over the 8 quantiles of the training distribution of sigma; book page "The paper's claims", section
  "The setup") and **RMSE(D_theta, D_G)** averaged over the intermediate analysis levels sigma in [0.116, 20]
  (same page, section "Noise regimes"), the distance the book's claims are about; a one-level denoising
  autoencoder is measured at its own sigma;
- the run is **converged** when over the last ``window`` of training (e.g. the last quarter) neither measure
  moves by more than ``tolerance`` relative to its final value.

A run that memorizes keeps moving on those two measures by design: its held-out loss rises and it drifts from D_G
as it copies more. For it the question is whether the *memorizing* has stopped, so two more measures are taken at
each snapshot when the run's training images are given: the **training loss** (the same loss on ``images`` of the
training images) and the **memorized fraction** of Euler samples from fixed latents. A run is also converged, *as a
memorizer*, when most of its samples copy a training image at the end, the memorized fraction moves by at most
``COPIES_TOLERANCE`` (absolute) over the window, and the training loss moves by at most ``tolerance`` of the whole
drop it made from the first snapshot to the last. (A memorizer drives its training loss towards zero, so a change
relative to the final value, the rule for the held-out measures, would read noise on a near-zero number as
movement.) :func:`assess` says which criterion certified a run (``regime``).

A network that can *represent* D_G exactly, a linear (affine) denoising autoencoder at its one σ, has D_G as its
optimum: its RMSE(D_theta, D_G) heads to zero, and a change relative to a near-zero final value again reads noise as
movement. For such a run (``exact_gaussian``) that measure's change is taken relative to its whole drop from the
first snapshot to the last, as the memorizer's training loss is, and the held-out loss as usual; the criterion met is
named "linear".

The same noisy held-out inputs are used at every snapshot, so the changes are changes of the network, not of
the sample. :func:`assess` is the pure decision; :mod:`gaussdiff_lib.chapters.models` runs it on a profile's runs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from . import metrics
from ._checks import positive_int

__all__ = ["Criterion", "LOSS_LEVELS", "INTERMEDIATE", "MEASURES", "MEMORIZING_MEASURES", "COPIES_TOLERANCE", "measure",
           "assess", "criterion_from"]

#: the intermediate sigma range of the paper, where memorization and generalization differ (book page "The paper's
#: claims", section "Noise regimes")
INTERMEDIATE = (0.116, 20.0)
#: the names of the two measures the criterion watches, as keys of :func:`measure`'s result
MEASURES = ("heldout_loss", "rmse_gaussian")
#: the measures of the memorizing criterion (when the training images are given to :func:`measure`)
MEMORIZING_MEASURES = ("train_loss", "copies")
#: the largest absolute change of the memorized fraction over the window for a memorizer to count as converged
COPIES_TOLERANCE = 0.1


def _loss_levels(k: int = 8, P_mean: float = -1.2, P_std: float = 1.2) -> list[float]:
    """The k quantile midpoints of EDM's training distribution ln sigma ~ N(P_mean, P_std^2)."""
    q = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    return torch.distributions.Normal(P_mean, P_std).icdf(q).exp().tolist()


#: the noise levels of the held-out loss, the 8 quantile midpoints of the training distribution of sigma
LOSS_LEVELS = tuple(_loss_levels())


@dataclass(frozen=True)
class Criterion:
    """How a run is certified converged (see the module docstring)."""

    every: float = 0.125
    window: float = 0.25
    tolerance: float = 0.05
    images: int = 256
    seed: int = 0

    def __post_init__(self):
        for name in ("every", "window"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < 1):
                raise ValueError(f"convergence.{name} is a fraction of a run's steps in (0, 1), got {v!r}")
        if not (isinstance(self.tolerance, (int, float)) and 0 < self.tolerance < 1):
            raise ValueError(f"convergence.tolerance is a relative change in (0, 1), e.g. 0.05; got {self.tolerance!r}")
        if self.points_in_window < 2:
            raise ValueError(f"convergence: snapshots every {self.every:g} of training leave fewer than 2 points in the "
                             f"last {self.window:g} of it, so no change can be measured there; make 'every' at most "
                             f"'window' ({self.window:g})")
        positive_int(self.images, "convergence.images")
        round_trip = 1 / self.every
        if abs(round_trip - round(round_trip)) > 1e-9:
            raise ValueError(f"convergence.every must divide training into equal parts (1/every an integer), got "
                             f"{self.every:g}")

    @property
    def points(self) -> int:
        """Snapshots along the run, the final weights included."""
        return round(1 / self.every)

    @property
    def points_in_window(self) -> int:
        return int(math.floor(self.window / self.every + 1e-9)) + 1

    def steps(self, total: int, run: str = "the run") -> tuple[int, ...]:
        """The steps at which a run of ``total`` steps is measured (its last step included); a clear error when
        the run is too short to give distinct steps."""
        total = positive_int(total, "steps")
        steps = tuple(round(total * k / self.points) for k in range(1, self.points + 1))
        if len(set(steps)) != len(steps) or steps[0] < 1:
            raise ValueError(f"{run} has {total} steps: too few for a convergence snapshot every {self.every:g} of "
                             f"training ({self.points} distinct steps needed); train longer or set a coarser "
                             "'every' in the profile's 'convergence' section")
        return steps

    def window_steps(self, total: int, run: str = "the run") -> tuple[int, ...]:
        """The measured steps inside the last ``window`` of training, ending with the final step."""
        return self.steps(total, run)[-self.points_in_window:]

    def as_dict(self) -> dict:
        return asdict(self)


def criterion_from(spec, where: str = "the profile") -> Criterion:
    """A :class:`Criterion` from a profile's ``convergence`` map (missing keys take the defaults)."""
    if spec is None:
        return Criterion()
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: 'convergence' must map every/window/tolerance/images/seed to values, got {spec!r}")
    allowed = set(Criterion.__dataclass_fields__)
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} in 'convergence'; allowed: {sorted(allowed)}")
    try:
        return Criterion(**spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


@torch.no_grad()
def measure(D, G, images: torch.Tensor, fixed_sigma: float | None = None, seed: int = 0,
            train: torch.Tensor | None = None, latents: torch.Tensor | None = None) -> dict[str, float]:
    """The two convergence measures of denoiser D on clean held-out images: EDM's held-out loss over
    :data:`LOSS_LEVELS` and RMSE(D, D_G) over the intermediate analysis levels (or both at ``fixed_sigma``). With the
    training images ``train``, also the same loss on them ("train_loss"), and with ``latents`` (not for a one-level
    autoencoder, which cannot sample) the memorized fraction of D's Euler samples ("copies")."""
    from .sampling import edm_sigmas, euler

    if fixed_sigma is not None:
        loss_levels = rmse_levels = [float(fixed_sigma)]
    else:
        loss_levels = list(LOSS_LEVELS)
        rmse_levels = [s for s in edm_sigmas(10)[:-1].tolist() if INTERMEDIATE[0] <= s <= INTERMEDIATE[1]]
    loss = sum(metrics.denoising_loss(D, images, s, seed=seed) for s in loss_levels) / len(loss_levels)
    rmse = float(metrics.distance_curve(D, G, images, rmse_levels, seed=seed).mean())
    out = {"heldout_loss": loss, "rmse_gaussian": rmse}
    if train is not None:
        sub = train[: images.shape[0]]
        out["train_loss"] = sum(metrics.denoising_loss(D, sub, s, seed=seed) for s in loss_levels) / len(loss_levels)
        if latents is not None and fixed_sigma is None:
            out["copies"] = metrics.memorized_fraction(euler(D, latents, edm_sigmas(10)), train)
    return out


def assess(points: list[dict], criterion: Criterion, total: int, exact_gaussian: bool = False) -> dict:
    """The verdict from measured points (dicts with 'step' and each of :data:`MEASURES`, and optionally
    :data:`MEMORIZING_MEASURES`): per measure, the largest change over the window (relative to the final value,
    ``max_t |m(t) - m(T)| / |m(T)|``; absolute for the memorized fraction; for the training loss relative to its
    whole drop, ``max_t |m(t) - m(T)| / |m(first) - m(T)|``). Converged as a generalizing network
    when both of :data:`MEASURES` change by at most the tolerance; as a memorizer when the final memorized fraction
    is at least one half, the training loss changes by at most the tolerance and the memorized fraction by at most
    :data:`COPIES_TOLERANCE`. With ``exact_gaussian`` (a model whose optimum is D_G itself, see the module
    docstring) RMSE(D_theta, D_G) is judged relative to its whole drop, and the criterion met is "linear".
    ``regime`` names the criterion met ("generalizing", "linear", "memorizing" or None). Refuses points that do not
    cover the window (never a silent 'converged')."""
    by_step = {int(p["step"]): p for p in points}
    window = criterion.window_steps(total)
    missing = [s for s in window if s not in by_step]
    if missing:
        raise ValueError(f"convergence needs measurements at steps {list(window)}; missing {missing}")
    final = by_step[window[-1]]
    changes = {}
    first = by_step[min(by_step)]
    for m in (*MEASURES, *(k for k in MEMORIZING_MEASURES if all(k in by_step[s] for s in window))):
        ref = float(final[m])
        if m == "copies":
            changes[m] = max(abs(float(by_step[s][m]) - ref) for s in window)
            continue
        if m == "train_loss" or (exact_gaussian and m == "rmse_gaussian"):
            drop = abs(float(first[m]) - ref)
            changes[m] = max(abs(float(by_step[s][m]) - ref) for s in window) / drop if drop > 0 else math.inf
            continue
        if not math.isfinite(ref) or ref == 0:
            raise ValueError(f"the final {m} is {ref}; a relative change is undefined")
        changes[m] = max(abs(float(by_step[s][m]) - ref) / abs(ref) for s in window)
    generalizing = all(changes[m] <= criterion.tolerance for m in MEASURES)
    memorizing = ("copies" in changes and "train_loss" in changes and float(final["copies"]) >= 0.5
                  and changes["train_loss"] <= criterion.tolerance and changes["copies"] <= COPIES_TOLERANCE)
    regime = ("linear" if exact_gaussian else "generalizing") if generalizing else \
        ("memorizing" if memorizing else None)
    return {"changes": changes, "converged": generalizing or memorizing, "regime": regime, "window": list(window),
            "tolerance": criterion.tolerance}
