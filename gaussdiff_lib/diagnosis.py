"""Diagnose any diffusion model: where it stands between the Gaussian and the memorizing optimum of its own
training set, noise level by noise level (the book's page "Diagnose your own model"; the measures are defined on
the book page "The paper's claims", sections "The denoisers", "Metrics" and "Noise regimes").

:func:`diagnose` takes a denoiser ``D(x, sigma) -> x0`` (any model :func:`gaussdiff_lib.adapters.as_denoiser`
accepts: this library's networks, NVIDIA's EDM pickles, a diffusers folder, a k-diffusion-style denoiser), its
training images and held-out images, and measures:

- RMSE(D, D_G) and RMSE(D, D_M) at each σ, against the Gaussian denoiser D_G and the multi-delta (memorizing)
  denoiser D_M of the *same* training set, on the same noisy held-out images (95% intervals over the images), each
  also relative to RMSE(D_M, D_G), the distance between the two optima there, and the fraction of those inputs on
  which D_M returns mostly one training image (:func:`copy_weights`, exact interval);
- a regime per σ (:func:`regime`): "Gaussian-like" (significantly closer to D_G than to D_M), "memorizing" (closer
  to D_M where D_M copies), "near D_M, not copying", "far from both" or "between". A word that one of the
  model-free controls below earns at the same σ is reported as "not discriminating" (at low σ, for instance, the
  identity map is as "Gaussian-like" as any network); per σ band (:data:`BANDS`) the word most of its levels share,
  or "mixed" (:func:`band_regime`);
- the linearity score at each σ (the paper's Fig 1 measure), beside D_M's. It is a measurement, not a check: every
  affine map, the model-free controls included, scores 1;
- the best linear approximation's weight distance to D_G's weights at the intermediate levels, beside D_M's (the
  paper's Fig 4 measure, corrected for the fits' own sampling error). Also a measurement: the best affine map of any
  denoiser of data with the training set's mean and covariance, D_M's included, lies near W_G (the Wiener filter is
  the best affine estimator for every distribution with those moments);
- samples from the paper's 10-step Euler sampler beside D_G's samples from the same latents, their distance and the
  chance level (another latent's Gaussian sample); the memorized fraction (exact interval) and the GL score of the
  samples beside that of real held-out images; as a generator the model is "memorizing" when the fraction's interval
  lies above :data:`gaussdiff_lib.claims.COPY_GATE`, "not copying" when it lies below
  :data:`gaussdiff_lib.claims.NEW_GATE` (the chapters' gates), "some copying" otherwise;
- two checks of the paper's claims that one model can be put to (claim 6, :func:`gaussdiff_lib.claims.assess`):
  at intermediate σ it is closer to D_G than to D_M *and* closer to D_G than any model-free map is; its samples lie
  closer to D_G's samples than D_M's samples do *and* closer than chance. Each runs on the controls: D_M of the same
  data, an untrained copy of the network (when one can be made) and the model-free maps (the identity, the data
  mean, the isotropic Wiener filter c_skip(σ)·x that an untrained EDM network computes) must fail it, D_G must pass
  it. A check whose controls misbehave is reported and not counted (:func:`gaussdiff_lib.stats.verdict`). The
  verdict is about this model, not its training recipe, so no seed replicates are asked for.

Only the held-out images (a seeded permutation, then disjoint judging and fitting parts), latents and linearity
pairs are subsampled: the training set never is, since D_G and D_M must be the optima of the data the model saw.
:func:`estimate_cost` times the model and D_M on one batch and states the cost before the long part runs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from . import stats as _stats
from ._checks import as_images, positive_int, show_progress
from .compare import INTERMEDIATE

__all__ = ["diagnose", "Report", "estimate_cost", "copy_weights", "model_free_controls", "BANDS", "REGIMES",
           "MIXED", "NOT_DISCRIMINATING", "regime", "band_regime"]

#: The σ bands by name, below, inside and above the intermediate range (book page "The paper's claims", section
#: "Noise regimes").
BANDS = {"low": (0.0, INTERMEDIATE[0]), "intermediate": INTERMEDIATE, "high": (INTERMEDIATE[1], math.inf)}
#: The regime words of :func:`regime`.
REGIMES = ("Gaussian-like", "between", "memorizing", "near D_M, not copying", "far from both")
#: A band's word when no regime holds at more than half of its levels.
MIXED = "mixed"
#: A level's word when a model-free control earns the model's regime there too.
NOT_DISCRIMINATING = "not discriminating"
_ME = "model under test"      # the model's label among the controls (its display name is ``name``)
_SIDES = ("Gaussian-like", "memorizing", "near D_M, not copying")   # the words a model-free map must not share


def regime(to_gaussian: _stats.Estimate, to_memorizer: _stats.Estimate, closer: _stats.Estimate,
           copies: _stats.Estimate) -> str:
    """The regime at one σ. ``to_gaussian`` = RMSE(D, D_G) / RMSE(D_M, D_G) and ``to_memorizer`` likewise (the
    model's distance to each optimum relative to the distance between them), ``closer`` the difference
    mean RMSE(D, D_M)² − mean RMSE(D, D_G)² on the same noisy images (above 0: closer to D_G), and ``copies`` the
    fraction of those inputs on which D_M returns mostly one training image (:func:`copy_weights`). The words are
    comparative: which optimum the model is *significantly closer to*, not that it equals it.

    - "far from both": both relative distances' intervals lie above 1 (the model differs from each optimum by more
      than they differ from each other);
    - "Gaussian-like": closer to D_G (the interval of ``closer`` lies above 0);
    - "memorizing": closer to D_M where D_M copies (the interval of ``copies`` lies above 1/2);
    - "near D_M, not copying": closer to D_M where it does not, so that closeness to it is not memorization (D_M of
      a large set averages many training images, and is a good denoiser);
    - "between": neither difference is significant.
    """
    if to_gaussian.lo > 1 and to_memorizer.lo > 1:
        return "far from both"
    if closer.lo > 0:
        return "Gaussian-like"
    if closer.hi < 0:
        return "memorizing" if copies.lo > 0.5 else "near D_M, not copying"
    return "between"


def band_regime(words: list[str]) -> str:
    """A band's regime: the word most of its levels share (more than half of them), else "mixed"."""
    top = max(set(words), key=words.count)
    return top if words.count(top) * 2 > len(words) else MIXED


def _closer(dg: torch.Tensor, dm: torch.Tensor) -> _stats.Estimate:
    """mean RMSE(D, D_M)² − mean RMSE(D, D_G)² over the same noisy images, with its paired bootstrap interval."""
    return _stats.paired(dm.square(), dg.square())


def _relative(d: torch.Tensor, gm: torch.Tensor) -> _stats.Estimate:
    """sqrt(sum d² / sum g²): a pooled RMSE relative to RMSE(D_M, D_G) on the same noisy images, bootstrapped
    jointly over them."""
    return _stats.bootstrap(lambda a, g: (a.square().sum() / g.square().sum().clamp_min(1e-30)).sqrt(), d, gm)


@torch.no_grad()
def copy_weights(train: torch.Tensor, images: torch.Tensor, sigma: float, seed: int = 0,
                 chunk_size: int = 4096) -> torch.Tensor:
    """D_M's largest softmax weight on each noisy held-out input y + σ ε, float64 [B]: near 1 where D_M returns
    one training image, near 1/N where it averages all of them (book page "The paper's claims", section "The
    denoisers"). :func:`diagnose` counts an input as copied when the weight exceeds 1/2."""
    gen = torch.Generator().manual_seed(int(seed))
    y = images.reshape(images.shape[0], -1).double().cpu()
    x = y + float(sigma) * torch.randn(y.shape, generator=gen, dtype=y.dtype)
    data = train.reshape(train.shape[0], -1).double().cpu()
    top = torch.full((x.shape[0],), -math.inf, dtype=y.dtype)
    lse = torch.full((x.shape[0],), -math.inf, dtype=y.dtype)
    for i in range(0, data.shape[0], chunk_size):
        logits = -torch.cdist(x, data[i:i + chunk_size]).square() / (2 * float(sigma) ** 2)
        top = torch.maximum(top, logits.max(1).values)
        lse = torch.logaddexp(lse, torch.logsumexp(logits, 1))
    return (top - lse).exp()


class _Mean(torch.nn.Module):
    """D(x; σ) = μ, the data mean: the best constant denoiser."""

    def __init__(self, mu: torch.Tensor):
        super().__init__()
        self.register_buffer("mu", mu)

    def forward(self, x, sigma):
        return self.mu.to(x.dtype).expand_as(x).clone()


class _Shrink(torch.nn.Module):
    """D(x; σ) = c_skip(σ)·x with c_skip = σ_d² / (σ² + σ_d²), σ_d = 0.5: the Wiener filter of isotropic data of
    variance σ_d² around 0, which is what an untrained EDM network with a zero-initialised output layer computes."""

    def forward(self, x, sigma):
        from ._checks import as_sigma

        s = as_sigma(sigma, x.shape[0], x.device, x.dtype).view(-1, 1, 1, 1)
        return x * 0.25 / (s.square() + 0.25)


def model_free_controls(train: torch.Tensor) -> dict:
    """The negative controls that need no network: the identity, the data mean and the isotropic Wiener filter
    c_skip(σ)·x. A regime or a check that one of them earns says nothing about what a model learned."""
    from .claims import Identity

    return {"identity": Identity(), "data mean": _Mean(train.double().mean(0, keepdim=True)),
            "isotropic Wiener filter": _Shrink()}


class _Checked(torch.nn.Module):
    """A denoiser called in its own dtype and device, its output checked once per σ: a tensor of the input's shape,
    finite (named errors instead of a traceback from deep inside the metrics)."""

    def __init__(self, D, dtype, device, name: str):
        super().__init__()
        self.D, self.dtype, self.device_, self.name, self.seen = D, dtype, device, name, set()

    def forward(self, x, sigma):
        out = self.D(x.to(self.device_, self.dtype), sigma.to(self.device_) if torch.is_tensor(sigma) else sigma)
        key = float(sigma.flatten()[0]) if torch.is_tensor(sigma) else float(sigma)
        if key not in self.seen:
            if not torch.is_tensor(out) or out.shape != x.shape:
                raise ValueError(f"{self.name} returned {type(out).__name__} "
                                 f"{tuple(out.shape) if torch.is_tensor(out) else ''} for input {tuple(x.shape)} at "
                                 f"σ = {key:.4g}; a denoiser returns the clean-image estimate, shaped like its input")
            if not torch.isfinite(out).all():
                raise ValueError(f"{self.name} returned NaN or infinite values at σ = {key:.4g}")
            self.seen.add(key)
        return out.to(x.device, x.dtype)


def _calling_convention(D, x: torch.Tensor, sigma: float, name: str):
    """The dtype and device the model runs in: its parameters' when it has any, else the first of float64 and
    float32 it accepts."""
    params = list(D.parameters()) if isinstance(D, torch.nn.Module) else []
    if params:
        return params[0].dtype, params[0].device
    for dtype in (torch.float64, torch.float32):
        try:
            D(x[:2].to(dtype), sigma)
            return dtype, x.device
        except RuntimeError:
            continue
    raise ValueError(f"{name} fails on a batch of held-out images in float64 and in float32; check that it is called "
                     "as D(x, sigma) with x [B, C, H, W] and returns the clean-image estimate")


def _declared_shape(D) -> tuple | None:
    """The (channels, height, width) a model's own config declares, when it declares them (diffusers networks:
    ``in_channels`` and ``sample_size``; EDM's: ``img_channels`` and ``img_resolution``); None otherwise."""
    net = getattr(D, "net", D)
    config = getattr(net, "config", None)
    get = (lambda k: getattr(config, k, None) if not isinstance(config, dict) else config.get(k))
    channels, size = get("in_channels"), get("sample_size")
    if channels is None:
        channels, size = getattr(net, "img_channels", None), getattr(net, "img_resolution", None)
    if not isinstance(channels, int) or size is None:
        return None
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return channels, int(h), int(w)


def _duplicates(train: torch.Tensor, heldout: torch.Tensor) -> int:
    """How many held-out images are exact copies of training images (a random projection finds candidates, the
    pixels confirm them)."""
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(train[0].numel(), 8, generator=gen, dtype=torch.float64)
    a, b = train.flatten(1).double() @ r, heldout.flatten(1).double() @ r
    found = 0
    for i in range(0, b.shape[0], 1024):
        near = torch.cdist(b[i:i + 1024], a) < 1e-6
        for j, k in near.nonzero().tolist():
            found += bool(torch.equal(heldout[i + j], train[k]))
    return found


@dataclass
class Report:
    """What :func:`diagnose` measured (tensors on the CPU; distances, fractions and scores as
    :class:`~gaussdiff_lib.stats.Estimate` with their 95% intervals)."""

    levels: list[float]
    per_level: list[dict]              # one row per σ: distances, relative distances, D_M's copying, linearity, regime
    bands: list[dict]                  # one row per σ band: its levels, their regimes and the band's
    linear: list[dict]                 # per fitted σ: weight distance to W_G of the model's D_L and of D_M's
    samples: dict                      # "model", "gaussian", "nearest": image batches from the same latents
    summary: dict                      # sample distance, chance, memorized fraction, GL, held-out GL, N, d
    checks: list                       # gd.stats.Check: the claims that apply, with their controls
    controls: list[str]                # the controls that were run
    cost: dict = field(default_factory=dict)   # estimated and measured seconds
    name: str = "model"
    keys: dict = field(default_factory=dict)   # "distance", "samples" -> that check's description
    notes: list[str] = field(default_factory=list)   # what the report could not do, and why

    @property
    def verdict(self) -> str:
        """The verdict of the checks, one of yes, partly, no or not tested (does this model show the Gaussian
        structure)."""
        return _stats.verdict(self.checks)

    def regime(self, band: str = "intermediate") -> str:
        """The regime of one σ band ("low", "intermediate", "high")."""
        for b in self.bands:
            if b["band"] == band:
                return b["regime"]
        raise ValueError(f"no σ band {band!r} among the report's levels; it has {[b['band'] for b in self.bands]}")

    def check_rows(self) -> list[dict]:
        """One display row per check (:func:`gaussdiff_lib.claims.check_rows`)."""
        from .claims import check_rows

        return check_rows(self.checks)

    def rows(self) -> list[dict]:
        """Every number of the report, one row each: ``quantity``, ``value`` (an
        :class:`~gaussdiff_lib.stats.Estimate`, a number or text) and ``evidence``, the check it informs ("distance"
        or "samples", the keys of ``keys``) or None for a measurement no check rests on.
        :func:`gaussdiff_lib.chapters.report.payload` turns them into the book's results format."""
        rows = []
        for r in self.per_level:
            s = f"σ = {r['sigma']:.4g}"
            rows += [{"quantity": f"RMSE(D, D_G) at {s}", "value": r["rmse_G"], "evidence": "distance"},
                     {"quantity": f"RMSE(D, D_M) at {s}", "value": r["rmse_M"], "evidence": "distance"},
                     {"quantity": f"RMSE(D, D_G) / RMSE(D_M, D_G) at {s} ({r['regime']})",
                      "value": r["to_gaussian"], "evidence": "distance"},
                     {"quantity": f"RMSE(D, D_M) / RMSE(D_M, D_G) at {s}", "value": r["to_memorizer"],
                      "evidence": "distance"},
                     {"quantity": f"fraction of inputs D_M copies at {s}", "value": r["copies"], "evidence": None},
                     {"quantity": f"linearity score at {s}", "value": r["linearity"], "evidence": None}]
        for b in self.bands:
            rows.append({"quantity": f"regime of the {b['band']} σ band ({len(b['levels'])} levels)",
                         "value": f"{b['regime']}: " + ", ".join(f"{w} at σ = {s:.3g}" for w, s in
                                                                 zip(b["regimes"], b["levels"])),
                         "evidence": None})
        for r in self.linear:
            rows.append({"quantity": f"weight distance of D_L to W_G at σ = {r['sigma']:.4g} (D_M's: "
                                     f"{r['D_M']:.3g})", "value": r["model"], "evidence": None})
        sm = self.summary
        rows += [{"quantity": "sample RMSE to the Gaussian model's samples", "value": sm["sample_rmse"],
                  "evidence": "samples"},
                 {"quantity": "sample RMSE to another latent's Gaussian sample (chance)", "value": sm["chance"],
                  "evidence": "samples"},
                 {"quantity": f"memorized fraction ({sm['generation']})", "value": sm["memorized"],
                  "evidence": None},
                 {"quantity": "GL score of the samples", "value": sm["gl"], "evidence": None},
                 {"quantity": "GL score of held-out images (reference)", "value": sm["gl_heldout"],
                  "evidence": None}]
        return rows


def _band_of(sigma: float) -> str:
    return next(name for name, (lo, hi) in BANDS.items()
                if (lo <= sigma <= hi if name == "intermediate" else lo <= sigma < hi if name == "low" else
                    lo < sigma <= hi))


def _seconds_per_image(D, x: torch.Tensor, sigma: float, repeats: int = 3) -> float:
    D(x + sigma * torch.randn_like(x), sigma)              # warm-up (lazy initialisation, caches)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        D(x + sigma * torch.randn_like(x), sigma)
        best = min(best, time.perf_counter() - t0)
    return best / x.shape[0]


@torch.no_grad()
def estimate_cost(D, train: torch.Tensor, heldout: torch.Tensor, levels, n_samples: int, n_pairs: int,
                  n_fit: int, n_noise: int, n_steps: int = 10, controls: int = 1, device=None) -> dict:
    """The seconds :func:`diagnose` will spend in the model and in D_M, from timed batches of each (the best of three
    on up to 64 held-out images): the images each is asked to denoise times its measured seconds per image.
    ``controls`` counts the network-sized controls (the untrained copy). D_G and the bookkeeping are left out (they
    are cheap beside these). Returns ``{"model_seconds_per_image", "memorizer_seconds_per_image", "images",
    "seconds"}``."""
    from .claims import memorizer

    x = heldout[: min(64, heldout.shape[0])].to(device or heldout.device)
    s = float(levels[len(levels) // 2])
    per_model = _seconds_per_image(D, x, s)
    per_memo = _seconds_per_image(memorizer(train, device=device), x, s)
    n_lin = sum(1 for v in levels if INTERMEDIATE[0] <= v <= INTERMEDIATE[1])
    model_images = (len(levels) * heldout.shape[0] * 2     # RMSE to D_G and to D_M (the model runs for each)
                    + n_samples * n_steps                  # its Euler samples
                    + len(levels) * n_pairs * 3            # linearity: two noisy inputs and their blend per pair
                    + n_lin * n_fit * n_noise)             # its linear fits
    memo_images = (len(levels) * heldout.shape[0] * (2 + controls)   # D_M against each model and D_G
                   + n_samples * n_steps + len(levels) * n_pairs * 3 + n_lin * n_fit * n_noise)
    seconds = per_model * model_images * (1 + controls) + per_memo * memo_images
    return {"model_seconds_per_image": per_model, "memorizer_seconds_per_image": per_memo,
            "images": model_images * (1 + controls) + memo_images, "seconds": seconds}


def diagnose(model, train: torch.Tensor, heldout: torch.Tensor, levels=None, n_heldout: int = 256,
             n_samples: int = 64, n_pairs: int = 100, n_fit: int = 512, n_noise: int = 4, seed: int = 0,
             untrained=None, device=None, progress: bool | None = None, name: str = "model",
             announce: bool | None = None) -> Report:
    """Diagnose one denoiser against the exact models of its own training set (see the module docstring).

    Args:
        model: a denoiser ``D(x, sigma)`` or anything :func:`gaussdiff_lib.adapters.as_denoiser` accepts.
        train: the model's training images [N, C, H, W] in [-1, 1] (all of them: D_G and D_M are built on them).
        heldout: images the model did not see, [M, C, H, W] in [-1, 1]; after a seeded permutation the first
            ``n_heldout`` judge the distances and the linearity, the next ``n_fit`` fit the linear approximations.
        levels: the σ levels (default: the paper's 10 analysis levels, 80 ... 0.002).
        n_samples: latents (seeds ``seed ...``) for the samples; n_pairs: linearity pairs per σ.
        n_noise: noise draws per fit image in the linear fits (raised to reach 4 (d + 1) samples per fit).
        untrained: an untrained copy of the network for the negative control (default: made from ``model`` when it
            is a ``torch.nn.Module``, see :func:`gaussdiff_lib.claims.untrained`; pass ``False`` to skip it). When
            none can be made, the report says so and the model-free controls stand in.
        progress: bars of the long steps; announce: print the cost timed on this machine before the long part
            (default: as ``progress``).
    """
    from . import linear_fit, metrics, sampling
    from .adapters import as_denoiser
    from .claims import COPY_GATE, NEW_GATE, assess
    from .claims import memorizer as _memorizer
    from .claims import untrained as _untrained
    from .compare import compare
    from .denoisers import GaussianDenoiser
    from .sampling import edm_sigmas

    t_start = time.perf_counter()
    raw = as_denoiser(model)
    train, heldout = _images(train, "train"), _images(heldout, "heldout")
    declared = _declared_shape(raw)
    if declared is not None and tuple(train.shape[1:]) != declared:
        c, h, w = declared
        raise ValueError(f"{name} takes {c}-channel {h} × {w} images (its config), but the training images are "
                         f"{tuple(train.shape[1:])} [C, H, W]; load them at that size (gd.data.load(..., "
                         f"resolution={h}), or gaussdiff diagnose --resolution {h})")
    if train.shape[0] < 2:
        raise ValueError(f"train holds {train.shape[0]} image; D_M and the memorized fraction need at least 2")
    if train.shape[1:] != heldout.shape[1:]:
        raise ValueError(f"train images are {tuple(train.shape[1:])} and held-out images {tuple(heldout.shape[1:])}; "
                         "both must have the model's shape [C, H, W]")
    n_heldout, n_samples = positive_int(n_heldout, "n_heldout"), positive_int(n_samples, "n_samples")
    n_pairs, n_fit, n_noise = positive_int(n_pairs, "n_pairs"), positive_int(n_fit, "n_fit"), \
        positive_int(n_noise, "n_noise")
    if n_samples < 2:
        raise ValueError("n_samples must be at least 2 (the chance level pairs each sample with another latent)")
    if heldout.shape[0] < n_heldout + 2:
        raise ValueError(f"{heldout.shape[0]} held-out images: diagnose judges on n_heldout = {n_heldout} of them and "
                         "fits the linear approximations on the rest; pass more held-out images or a smaller "
                         "n_heldout")
    copies_found = _duplicates(train, heldout)
    if copies_found:
        raise ValueError(f"{copies_found} of the {heldout.shape[0]} held-out images are copies of training images; "
                         "pass images the model did not see")
    order = torch.randperm(heldout.shape[0], generator=torch.Generator().manual_seed(int(seed)))
    judge, fit = heldout[order[:n_heldout]], heldout[order[n_heldout:n_heldout + n_fit]]
    levels = edm_sigmas(10)[:-1].tolist() if levels is None else [float(s) for s in levels]
    if not levels or any(not math.isfinite(s) or s <= 0 for s in levels):
        raise ValueError(f"levels must be positive, finite noise levels, got {levels}")
    lin_levels = [s for s in levels if INTERMEDIATE[0] <= s <= INTERMEDIATE[1]]
    dtype, where = _calling_convention(raw, judge, levels[len(levels) // 2], name)
    D = _Checked(raw, dtype, where, name)
    for s in levels:                                       # every level once: a NaN or a wrong shape is named here
        D(judge[:2].double() + s * torch.randn_like(judge[:2].double()), s)
    # the linear fits take at least 4 (d + 1) samples per level, raising the draws per image when images are few
    draws = max(n_noise, math.ceil(4 * (int(train[0].numel()) + 1) / max(fit.shape[0], 1)))
    notes = []
    if untrained is None and isinstance(raw, torch.nn.Module):
        try:
            untrained = _untrained(raw)
        except ValueError as err:
            notes.append(f"no untrained copy of the model: {err}; the model-free controls stand in for it")
            untrained = None
    elif untrained is None:
        notes.append("the model is not a torch.nn.Module, so no untrained copy of it was made; the model-free "
                     "controls stand in for it")
    lo_s, hi_s = getattr(raw, "sigma_min", None), getattr(raw, "sigma_max", None)
    if lo_s is not None and hi_s is not None:
        outside = [s for s in levels if not lo_s <= s <= hi_s]
        notes.append(f"the model's schedule spans σ = {lo_s:.3g} ... {hi_s:.3g} ({getattr(raw, 'prediction_type', '?')} "
                     "prediction)" + (f"; at σ = {', '.join(f'{s:.3g}' for s in outside)} it is asked at the nearest "
                                      "end of its schedule, outside what it was trained on" if outside else ""))
    cost = estimate_cost(D, train, judge, levels, n_samples, n_pairs, fit.shape[0], draws,
                         controls=int(untrained not in (None, False)), device=device)
    if show_progress(progress) if announce is None else announce:
        print(f"diagnose: N = {train.shape[0]:,} training images, d = {train[0].numel():,}; about "
              f"{cost['seconds']:.0f} s in the model and D_M ({cost['images']:,} images at "
              f"{cost['model_seconds_per_image'] * 1e3:.2f} and {cost['memorizer_seconds_per_image'] * 1e3:.2f} ms "
              "per image, timed on this machine)", flush=True)

    G = GaussianDenoiser.from_data(train, device=device, cache=True)
    M = _memorizer(train, device=device)
    free = model_free_controls(train)
    models = {_ME: D, "D_M": M, "D_G": G, **free}
    controls = ["D_M", "D_G", *free]
    if untrained not in (None, False):
        models["untrained network"] = _Checked(untrained, dtype, where, "the untrained copy")
        controls.append("untrained network")
    z = sampling.latents(range(seed, seed + n_samples), tuple(train.shape[1:]))
    cmp = compare(models, {k: train for k in models}, judge, z, levels=levels, linearity_levels=levels,
                  n_pairs=n_pairs, gaussians={k: G for k in models}, seed=seed, device=device, progress=progress)

    def level_regime(label, i, copies):
        dg, dm, gm = cmp.distance_items[label][i], cmp.delta_items[label][i], cmp.gm_items[label][i]
        return regime(_relative(dg, gm), _relative(dm, gm), _closer(dg, dm), copies)

    per_level, bands = [], []
    for i, s in enumerate(levels):
        dg, dm, gm = cmp.distance_items[_ME][i], cmp.delta_items[_ME][i], cmp.gm_items[_ME][i]
        copies = _stats.proportion((copy_weights(train, judge, s, seed=seed) > 0.5).double())
        word = regime(_relative(dg, gm), _relative(dm, gm), _closer(dg, dm), copies)
        shared = [c for c in free if level_regime(c, i, copies) == word] if word in _SIDES else []
        per_level.append({"sigma": s, "band": _band_of(s), "rmse_G": _stats.mean(dg), "rmse_M": _stats.mean(dm),
                          "rmse_GM": _stats.mean(gm), "to_gaussian": _relative(dg, gm),
                          "to_memorizer": _relative(dm, gm), "closer": _closer(dg, dm), "copies": copies,
                          "measured": word, "shared_with": shared,
                          "regime": f"{NOT_DISCRIMINATING} ({word}, as the {shared[0]})" if shared else word,
                          "linearity": _stats.mean(cmp.linearity_items[_ME][i]),
                          "linearity_D_M": _stats.mean(cmp.linearity_items["D_M"][i])})
    for band in BANDS:
        idx = [i for i, s in enumerate(levels) if _band_of(s) == band]
        if idx:
            words = [NOT_DISCRIMINATING if per_level[i]["shared_with"] else per_level[i]["regime"] for i in idx]
            bands.append({"band": band, "levels": [levels[i] for i in idx],
                          "regimes": [per_level[i]["regime"] for i in idx], "regime": band_regime(words)})

    # the best linear approximations at the intermediate levels, of the model and of the network-like controls
    linear = []
    if lin_levels and fit.shape[0] >= 2:
        fits, wd = {}, {}
        for label in [_ME, "D_M", *(["untrained network"] if "untrained network" in models else [])]:
            fits[label] = linear_fit.fit_linear(models[label], fit.to(device or fit.device), lin_levels,
                                                n_noise=draws, seed=seed + 1, device=device, progress=progress)
        for j, s in enumerate(lin_levels):
            WG = G.weight(s)
            row = {"sigma": s}
            for label, L in fits.items():
                err = L.info[j].get("rel_error")
                wd.setdefault(label, []).append(metrics.weight_distance(L.weight(s), WG, fit_error=err))
                row["model" if label == _ME else label] = wd[label][-1]
            row["fit_error"] = fits[_ME].info[j].get("rel_error")
            linear.append(row)

    memorized = cmp.estimate(_ME, "copies")
    generation = ("memorizing" if memorized.lo > COPY_GATE else "not copying" if memorized.hi < NEW_GATE
                  else "some copying")
    summary = {"N": int(train.shape[0]), "d": int(train[0].numel()), "generation": generation,
               "sample_rmse": cmp.estimate(_ME, "rmse_gauss_sample"), "chance": cmp.estimate(_ME, "rmse_chance"),
               "memorized": memorized, "memorized_D_M": cmp.estimate("D_M", "copies"),
               "gl": cmp.estimate(_ME, "gl"), "gl_heldout": cmp.estimate(_ME, "gl_heldout")}

    # the two checks of claim 6 that one model can be put to, each on every control
    roles = {"model": [_ME]}
    ctrl = {"D_M": ("negative", {"model": ["D_M"]}), "D_G": ("positive", {"model": ["D_G"]}),
            **{c: ("negative", {"model": [c]}) for c in free}}
    if "untrained network" in models:
        ctrl["untrained network"] = ("negative", {"model": ["untrained network"]})
    best_free = torch.stack([cmp.items(c, "rmse_G_mid") for c in free]).min(0).values

    def closer(r):
        lab = r["model"][0]
        than_memorizer = _stats.paired(cmp.items(lab, "rmse_M_mid"), cmp.items(lab, "rmse_G_mid"))
        than_free = _stats.paired(best_free, cmp.items(lab, "rmse_G_mid"))
        return (than_memorizer.lo > 0 and than_free.lo > 0,
                f"RMSE(D, D_M) − RMSE(D, D_G) {than_memorizer}; the best model-free map's RMSE to D_G minus this "
                f"one's {than_free}", than_memorizer)

    def samples(r):
        lab = r["model"][0]
        than_memorizer = _stats.paired(cmp.items("D_M", "rmse_gauss_sample"), cmp.items(lab, "rmse_gauss_sample"))
        than_chance = _stats.paired(cmp.items(lab, "rmse_chance"), cmp.items(lab, "rmse_gauss_sample"))
        return (than_memorizer.lo > 0 and than_chance.lo > 0,
                f"D_M's sample distance minus this one {than_memorizer}; chance minus this one {than_chance}",
                than_memorizer)

    checks = [assess("at intermediate σ the model is closer to D_G than to D_M, and closer to D_G than any "
                     "model-free map (same noisy held-out images)", 6, closer, roles, ctrl),
              assess("its samples lie closer to D_G's samples (same latents, same sampler) than D_M's samples do, "
                     "and closer than chance", 6, samples, roles, ctrl)]
    keys = {key: c.claim for c, key in zip(checks, ("distance", "samples"))}
    samples_out = {"model": cmp.samples[_ME], "gaussian": cmp.gaussian_samples[_ME],
                   "nearest": cmp.nearest[_ME], "D_M": cmp.samples["D_M"]}
    cost["measured_seconds"] = time.perf_counter() - t_start
    return Report(levels, per_level, bands, linear, samples_out, summary, checks, controls, cost, name, keys, notes)


def _images(x, what: str) -> torch.Tensor:
    """Images for a diagnosis: a tensor (named for what reads them), checked by :func:`as_images`, in [-1, 1]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a tensor of images [N, C, H, W] in [-1, 1] (gd.data.load or "
                        f"gd.data.load_path read them), got {type(x).__name__}")
    x = as_images(x, what)
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.01 or hi > 1.01:
        raise ValueError(f"{what} pixels span [{lo:.3g}, {hi:.3g}]; images must lie in [-1, 1] (gd.data's loaders "
                         "return that range; from 0..255 use x / 127.5 - 1)")
    if lo >= 0 and x.shape[0] > 1:
        raise ValueError(f"{what} pixels span [{lo:.3g}, {hi:.3g}], no negative value: images scaled to [0, 1]? "
                         "diagnose expects [-1, 1] (x * 2 - 1), the range the model was trained in")
    return x
