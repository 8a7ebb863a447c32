"""Best affine approximations D_L(x; sigma) = W_sigma x + b_sigma of a denoiser (the book page "The paper's
claims", section "The denoisers").

:func:`fit_linear` computes the exact least-squares optimum of
min_{W, b} E_{y, eps} ||W (y + sigma eps) + b - D(y + sigma eps; sigma)||^2 over given images and noise
draws in one streaming pass: for each sigma it accumulates the moments [x; 1]^T [x; 1] and [x; 1]^T D(x)
in float64 on the device and solves once (Cholesky). Memory is O(d^2) per sigma, whatever the number of
images. :func:`fit_linear_adam` is the official recipe (Adam on the same objective), kept as the baseline
and for the weight-distance-per-epoch curves of the paper's Fig 4 (left).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ._checks import as_images, as_levels, as_sigma, image_shape_matches, positive_int, show_progress

__all__ = ["LinearDenoiser", "UnreachableTarget", "fit_linear", "fit_linear_adam", "adam_lr"]

#: an early floor estimate must exceed the target by this factor before the refinement gives up (see fit_linear)
FLOOR_MARGIN = 1.2


class LinearDenoiser(nn.Module):
    """Per-sigma affine denoisers D_L(x; sigma) = W_sigma x + b_sigma at a fixed set of noise levels.

    ``weights`` [S, d, d] and ``biases`` [S, d] belong to ``sigmas`` [S]; calling it at a sigma that was not
    fitted raises a ValueError naming the fitted levels. ``info`` holds per-sigma fit facts (samples, condition
    number of the normal equations). The weights are kept in ``dtype`` (float64, or float32 to halve the
    S d^2 that dominate memory at the paper's d = 12288: 0.6 instead of 1.2 GB per sigma); :meth:`weight` and the
    forward pass compute in float64 whatever is stored.
    """

    def __init__(self, sigmas: Sequence[float], weights: torch.Tensor, biases: torch.Tensor,
                 shape: tuple[int, int, int], info: list[dict] | None = None, dtype: torch.dtype = torch.float64):
        super().__init__()
        d = math.prod(shape)
        sig = torch.as_tensor(as_levels(sigmas), dtype=torch.float64)
        if weights.shape != (len(sig), d, d) or biases.shape != (len(sig), d):
            raise ValueError(f"expected weights [{len(sig)}, {d}, {d}] and biases [{len(sig)}, {d}] for images "
                             f"{tuple(shape)}, got {tuple(weights.shape)} and {tuple(biases.shape)}")
        self.shape = tuple(int(v) for v in shape)
        self.register_buffer("sigmas", sig.to(weights.device))
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"a LinearDenoiser keeps its weights in float64 or float32, not {dtype}")
        self.register_buffer("weights", weights.to(dtype))
        self.register_buffer("biases", biases.to(torch.float64))
        self.info = info or [{} for _ in range(len(sig))]

    def index(self, sigma) -> torch.Tensor:
        """Indices of the fitted levels matching each sigma (relative tolerance 1e-6)."""
        s = torch.as_tensor(sigma, dtype=torch.float64, device=self.sigmas.device).reshape(-1)
        rel = (s[:, None] - self.sigmas[None, :]).abs() / self.sigmas[None, :]
        best = rel.min(dim=1)
        if (best.values > 1e-6).any():
            bad = s[best.values > 1e-6][0].item()
            raise ValueError(f"sigma = {bad:g} is not one of the fitted levels "
                             f"{[round(v, 6) for v in self.sigmas.tolist()]}; fit the linear model at that sigma")
        return best.indices

    def weight(self, sigma: float) -> torch.Tensor:
        """W_sigma [d, d] (float64)."""
        return self.weights[self.index(float(sigma))[0]].to(torch.float64)

    def bias(self, sigma: float) -> torch.Tensor:
        """b_sigma [d]."""
        return self.biases[self.index(float(sigma))[0]]

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x = as_images(x)
        image_shape_matches(x, self.shape, "LinearDenoiser")
        idx = self.index(as_sigma(sigma, x.shape[0], self.sigmas.device))
        xf = x.reshape(x.shape[0], -1).to(self.weights.device, torch.float64)
        if (idx == idx[0]).all():   # one level for the whole batch: one matrix product
            out = xf @ self.weights[idx[0]].to(torch.float64).T + self.biases[idx[0]]
        else:
            out = torch.einsum("bij,bj->bi", self.weights[idx].to(torch.float64), xf) + self.biases[idx]
        return out.reshape(x.shape).to(device=x.device, dtype=x.dtype)


class UnreachableTarget(ValueError):
    """``fit_linear``'s ``target_error`` cannot be reached at ``sigma`` with the ``images`` given: their own spread
    leaves a relative W error of ``floor`` however many noise draws are added; about ``images_needed`` images
    (with at most ``max_noise`` draws each) would reach ``target``."""

    def __init__(self, sigma: float, floor: float, target: float, images: int, images_needed: int, max_noise: int,
                 rel_error: float, draws: int):
        self.sigma, self.floor, self.target, self.images = sigma, floor, target, images
        self.images_needed, self.max_noise, self.rel_error, self.draws = images_needed, max_noise, rel_error, draws
        super().__init__(
            f"target_error = {target:g} cannot be reached at sigma = {sigma:g} with the {images} images given: "
            f"after {draws} noise draws per image the relative W error is {rel_error:.3g}, and the spread of the "
            f"images themselves leaves a floor of about {floor:.3g} that no number of draws removes; about "
            f"{images_needed} images (with max_noise = {max_noise} draws each) would be needed. Pass more images, "
            f"a target_error above the floor, or unreachable='report' to record this in info and go on")

    def __reduce__(self):           # picklable, so it crosses process boundaries (DDP, multiprocessing) intact
        return (type(self), (self.sigma, self.floor, self.target, self.images, self.images_needed, self.max_noise,
                             self.rel_error, self.draws))


def _error_model(history: list[tuple[int, float]], n: int, q: int, target: float, max_noise: int) -> dict:
    """Split the squared error into its draw and image parts from the first and the latest (draws per image,
    rel_error) of one sigma's refinement, and what the target then needs (the law in fit_linear's docstring;
    q = p + 1 = d + 2)."""
    (r1, e1), (r2, e2) = ((r, e * e * (n * r - q) / (n * r)) for r, e in (history[0], history[-1]))
    a = max(0.0, (e1 - e2) / (1 / r1 - 1 / r2))                   # draw part a / n, divided by r
    c = max(0.0, e2 - a / r2)                                     # image part c / n: the floor, squared
    if c == 0.0:
        a = e2 * r2
    t2 = target * target
    return {"floor": math.sqrt(c), "images_needed": math.ceil(n * (a / max_noise + c) / t2 + q / max_noise),
            "draws_needed": math.ceil((a + t2 * q / n) / (t2 - c)) if c < t2 else None}


def _noise(shape, seed: int, level: int, rep: int, start: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(((int(seed) * 1_000_003 + level) * 1_009 + rep) * 1_000_003 + start)
    return torch.randn(shape, generator=g, dtype=torch.float32)


def _solve(A: torch.Tensor, B: torch.Tensor, ridge: float, d: int, sigma: float, m: int):
    A = A.clone()
    if ridge > 0:
        A.diagonal()[:d] += ridge
    chol, failed = torch.linalg.cholesky_ex(A)
    if failed:
        evals = torch.linalg.eigvalsh(A)
        condition = (evals[-1] / evals[0]).item() if evals[0] > 0 else math.inf
        raise ValueError(
            f"the normal equations at sigma = {sigma:g} are singular (condition {condition:.3g}): the "
            f"{m} noisy inputs do not span {d} dimensions; add images or noise draws, or pass ridge > 0")
    return torch.cholesky_solve(B, chol)                   # [d + 1, d]


@torch.no_grad()
def fit_linear(D, images: torch.Tensor, sigmas, n_noise: int = 4, batch_size: int = 512, ridge: float = 0.0,
               device=None, seed: int = 0, progress: bool | None = None, target_error: float | None = None,
               max_noise: int = 64, dtype: torch.dtype = torch.float64, unreachable: str = "raise"
               ) -> LinearDenoiser:
    """Exact least-squares affine fit of D at each sigma over images x noise draws, with its own sampling error.

    Args:
        D: any denoiser ``D(x, sigma)``.
        images: clean images y [N, C, H, W] in [-1, 1] (held-out images in the paper).
        sigmas: noise levels to fit (no zero).
        n_noise: noise draws per image; the fit uses N * n_noise samples (at least d + 1 without ridge).
        batch_size: images per network call.
        ridge: Tikhonov term added to the diagonal of the normalised normal equations (0: none).
        device: where to accumulate and solve (default: the images' device); CUDA when given.
        seed: seed of the noise draws.
        target_error: if given, the relative error of W to reach at every sigma: draws are added per sigma (the
            moments simply accumulate) in rounds sized by the sqrt(d / m) law until ``rel_error`` <= target or
            ``max_noise`` draws per image are used; ``info[i]["target_met"]`` says which. A target that the
            images themselves cannot reach stops early (see below).
        max_noise: the most noise draws per image with ``target_error``.
        unreachable: what happens when ``target_error`` cannot be reached at a sigma with the images given:
            ``"raise"`` an :class:`UnreachableTarget` (a ValueError naming sigma, the floor, the target, the
            images given and how many would be needed), or ``"report"``: stop refining that sigma, keep its fit
            from the draws so far, record the facts in its ``info`` and go on to the next sigma.
        dtype: how the fitted weights are kept (float64, or float32 to halve their memory); the moments, the
            solve and the error estimates are float64 either way.

    Returns:
        LinearDenoiser with ``info[i] = {"samples", "condition", "ridge", "rel_error", "rmse_error",
        "target_met", "floor", "images_needed", "draws_needed", "limited_by"}`` per sigma (``samples`` = network
        evaluations spent on that sigma; the last four are None unless a target was missed, see below).

    The fit is a least-squares estimate from finitely many samples, so it carries sampling error of order
    sqrt(d / m) of the denoiser's nonlinear residual. It is measured by independent splits: the images (with
    their noise) are also fitted in two disjoint halves, and the difference of the two half fits, scaled to the
    full sample by the least-squares variance factor (m/2 - p - 1) / (2 (m - p - 1)) with p = d + 1 unknowns,
    estimates ``rel_error`` = ||W - W*||_F / ||W||_F and ``rmse_error``, the RMS error of the fitted map's
    outputs over inputs like the fit's own: the noise floor under any RMSE(D_L, .) (None when a half has too
    few samples to be solved).

    **Images or draws?** The split is by images, so ``rel_error`` holds two parts. With n images and r draws
    each, the fit's error is an average of n independent per-image terms, each a mean over its r draws, so::

        rel_error^2(n, r) = (a / (n r) + c / n) * m / (m - p - 1),    m = n r samples, p = d + 1 unknowns,

    where a / (n r) is the spread of the noise draws around each image (it falls as draws are added), c / n the
    spread of the images themselves (it does not) and the last factor the least-squares inflation the split
    estimate carries. The *floor* sqrt(c / n) is the error these images leave with unlimited draws. From the
    first and the latest refinement round at one sigma, (r1, e1) and (r2, e2), deflated by (m - p - 1) / m,
    a / n = (e1^2 - e2^2) / (1/r1 - 1/r2) and c / n = e2^2 - (a / n) / r2 (each clipped at 0). N images of the
    same kind with R = ``max_noise`` draws each reach the target t when (a + c R) / (N R - p - 1) <= t^2 (the law
    above with m = N R), that is::

        images_needed = ceil(n (a / (n R) + c / n) / t^2 + (p + 1) / R),

    and these n images reach it with draws_needed = ceil((a / n + t^2 (p + 1) / n) / (t^2 - c / n)) draws when
    the floor is below t. On the 8 x 8 digits' Gaussian (d = 64, sigma = 0.1, a smooth nonlinear residual), 200
    images stop after 2 + 2 draws with a floor of 0.96 +- 0.04 times the one measured with 256 draws, and fresh
    fits with the images_needed they name (1400 to 3200, median 1700) and 64 draws land at 1.03 +- 0.08 times
    the target (30 seeds, against a fit on 100000 images). The rule, checked after every round from the second
    on (a round at most doubles the draws, so a second round comes before the bulk of the draws is spent):

    - floor > 1.2 t (``FLOOR_MARGIN``): the images, not the draws, limit the fit; stop, ``limited_by =
      "images"``. The margin keeps an early, noisy floor from giving up on a reachable target. Where the images
      dominate the error the early floor scatters by 5% (sd over seeds); where the draws dominate (sigma = 1,
      200 images) it scatters by 65% from 2 and 4 draws, but an early stop also needs the error itself above 1.2 t
      (the floor is part of it): of 100 such fits with targets from 0.012 to 0.03, none stopped for the images
      where 64 draws would have reached the target.
    - ``max_noise`` draws used and the target missed: ``limited_by = "images"`` if the floor (now from the
      widest lever arm) exceeds t; otherwise ``"draws"``: these images would do with ``draws_needed`` draws
      (at least ``max_noise`` + 1), a budget and not an impossibility, so it never raises.

    ``"images"`` raises :class:`UnreachableTarget` or, with ``unreachable="report"``, is recorded in ``info``
    (``target_met`` False, ``floor``, ``images_needed``, ``draws_needed``, ``limited_by``). A target missed
    after a single round (``max_noise`` <= ``n_noise``), or with ``ridge`` > 0 (the law is the unregularised
    estimator's, so no floor is modelled and the fit simply stops at ``max_noise``), has no floor estimate:
    ``limited_by = "unknown"`` and ``images_needed`` = n e^2 / t^2 (the law above with R = r, the inflation
    aside), at least n + 1.
    """
    images = as_images(images, "images")
    levels = as_levels(sigmas)
    n_noise, batch_size = positive_int(n_noise, "n_noise"), positive_int(batch_size, "batch_size")
    if ridge < 0 or not math.isfinite(ridge):
        raise ValueError(f"ridge must be finite and >= 0, got {ridge}")
    if target_error is not None and not (0 < target_error < 1):
        raise ValueError(f"target_error is a relative error of W in (0, 1), e.g. 0.05; got {target_error}")
    max_noise = max(positive_int(max_noise, "max_noise"), n_noise)
    if unreachable not in ("raise", "report"):
        raise ValueError(f"unreachable is 'raise' or 'report' (what to do when the images cannot reach "
                         f"target_error), got {unreachable!r}")
    n, shape = images.shape[0], tuple(images.shape[1:])
    d = math.prod(shape)
    if n * n_noise < d + 1 and ridge == 0:
        raise ValueError(f"fewer samples than unknowns: N * n_noise = {n} * {n_noise} = {n * n_noise} < d + 1 = "
                         f"{d + 1}; add images, raise n_noise, or pass ridge > 0")
    device = torch.device(device) if device is not None else images.device
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"dtype keeps the fitted weights: torch.float64 or torch.float32, not {dtype}")
    weights = torch.empty(len(levels), d, d, dtype=dtype, device=device)
    biases = torch.empty(len(levels), d, dtype=torch.float64, device=device)
    info = []
    half = n // 2
    parts = [(0, half), (half, n)] if half > 0 else [(0, n)]
    batches = sum(math.ceil((hi - lo) / batch_size) for lo, hi in parts)
    # progress in noise levels: each level's share fills as its draws accumulate; with a target the draws a level
    # needs are learned on the way, so its share is filled by the fraction of the draws asked for so far and the
    # bar never moves backwards (a growing total would)
    bar = tqdm(total=len(levels), desc="fit_linear", unit="sigma", disable=not show_progress(progress),
               leave=False, bar_format="{l_bar}{bar}| {n:.2f}/{total} sigma [{elapsed}<{remaining}{postfix}]")
    shown = 0.0

    def advance(position: float) -> None:
        nonlocal shown
        if position > shown:
            bar.update(position - shown)
            shown = position
    p = d + 1
    for li, sigma in enumerate(levels):
        moments = [[torch.zeros(p, p, dtype=torch.float64, device=device),
                    torch.zeros(p, d, dtype=torch.float64, device=device)] for _ in parts]
        reps, want, history, calls = 0, n_noise, [], 0
        bar.set_postfix_str(f"sigma = {sigma:.3g}")
        while True:
            for part, (lo, hi) in zip(moments, parts):
                for rep in range(reps, want):
                    for start in range(lo, hi, batch_size):
                        y = images[start:min(start + batch_size, hi)]
                        x = y + sigma * _noise(y.shape, seed, li, rep, start).to(y.device, y.dtype)
                        out = D(x, sigma).reshape(x.shape[0], d).to(device, torch.float64)
                        xa = torch.cat([x.reshape(x.shape[0], d).to(device, torch.float64),
                                        torch.ones(x.shape[0], 1, dtype=torch.float64, device=device)], dim=1)
                        part[0].addmm_(xa.T, xa)
                        part[1].addmm_(xa.T, out)
                        calls += 1
                        advance(li + 0.99 * calls / (want * batches))
            reps = want
            m = n * reps
            A, B = sum(mo[0] for mo in moments) / m, sum(mo[1] for mo in moments) / m
            theta = _solve(A, B, ridge, d, sigma, m)
            rel_error = rmse_error = None
            m_half = min(hi - lo for lo, hi in parts) * reps
            if len(parts) == 2 and (m_half > p + 1 or ridge > 0):
                t1, t2 = (_solve(Ah / ((hi - lo) * reps), Bh / ((hi - lo) * reps), ridge, d, sigma, m_half)
                          for (Ah, Bh), (lo, hi) in zip(moments, parts))
                factor = (m_half - p - 1) / (2 * (m - p - 1)) if ridge == 0 else 0.25
                delta = t1 - t2                                   # [d + 1, d]
                rel_error = math.sqrt(factor) * (delta[:d].norm() / theta[:d].norm().clamp_min(1e-300)).item()
                rmse_error = math.sqrt(factor * max(0.0, torch.trace(delta.T @ A @ delta).item()) / d)
                del t1, t2, delta
            missed = {"floor": None, "images_needed": None, "draws_needed": None, "limited_by": None}
            if target_error is None or rel_error is None or rel_error <= target_error:
                break
            history.append((reps, rel_error))
            if len(history) >= 2 and ridge == 0:       # the law below is the unregularised estimator's
                missed.update(_error_model(history, n, p + 1, target_error, max_noise))
                if missed["floor"] > FLOOR_MARGIN * target_error or (reps >= max_noise
                                                                     and missed["floor"] > target_error):
                    missed["limited_by"] = "images"
                    if unreachable == "raise":
                        bar.close()
                        raise UnreachableTarget(sigma, missed["floor"], target_error, n, missed["images_needed"],
                                                max_noise, rel_error, reps)
                    break
            if reps >= max_noise:
                if missed["floor"] is not None:
                    missed["limited_by"] = "draws"
                    # the target was missed at max_noise draws, so the images need more than that, whatever a noisy
                    # estimate says
                    if missed["draws_needed"] is not None:
                        missed["draws_needed"] = max(missed["draws_needed"], max_noise + 1)
                else:
                    missed["images_needed"] = max(n + 1, math.ceil(n * (rel_error / target_error) ** 2))
                    missed["limited_by"] = "unknown"
                break
            # the error falls as 1/sqrt(samples) at most: ask for what the target needs, with 10% to spare, and at
            # most twice the draws so far, so that the floor is seen before the bulk of the draws is spent
            want = min(max_noise, 2 * reps, max(reps + 1, math.ceil(reps * 1.1 * (rel_error / target_error) ** 2)))
        del moments, B
        A.diagonal()[:d] += ridge
        evals = torch.linalg.eigvalsh(A)
        condition = (evals[-1] / evals[0]).item() if evals[0] > 0 else math.inf
        weights[li] = theta[:d].T
        biases[li] = theta[d]
        del A, theta                      # nothing of this sigma stays alive while the next one accumulates
        advance(li + 1.0)
        info.append({"sigma": sigma, "samples": m, "condition": condition, "ridge": float(ridge),
                     "rel_error": rel_error, "rmse_error": rmse_error,
                     "target_met": None if target_error is None else (rel_error is not None
                                                                       and rel_error <= target_error),
                     **missed})
    bar.close()
    return LinearDenoiser(levels, weights, biases, shape, info, dtype=dtype)


def adam_lr(sigma: float) -> float:
    """The official per-sigma Adam learning rates (the book page "The paper's claims",
    section "The denoisers"): 5e-5 for sigma >= 4.07,
    5e-4 for 1.50 and 0.47, 5e-3 for 0.117, 5e-2 for 0.0204 and 0.002 (thresholds between those levels)."""
    if sigma >= 3.0:
        return 5e-5
    if sigma >= 0.3:
        return 5e-4
    if sigma >= 0.05:
        return 5e-3
    return 5e-2


@torch.no_grad()
def fit_linear_adam(D, images: torch.Tensor, sigmas, epochs: int = 100, batch_size: int = 256,
                    lr: float | None = None, device=None, seed: int = 0, progress: bool | None = None,
                    callback: Callable[[int, float, torch.Tensor, torch.Tensor], None] | None = None
                    ) -> LinearDenoiser:
    """The official distillation recipe: W, b start at 0, inputs divided by sqrt(d), Adam on the MSE to
    D(x; sigma) with fresh noise each batch, ``epochs`` passes over the images, per-sigma lr (:func:`adam_lr`).

    ``callback(epoch, sigma, W, b)`` is called after each epoch with the current effective W [d, d] and b [d].
    """
    images = as_images(images, "images")
    levels = as_levels(sigmas)
    epochs, batch_size = positive_int(epochs, "epochs"), positive_int(batch_size, "batch_size")
    n, shape = images.shape[0], tuple(images.shape[1:])
    d = math.prod(shape)
    device = torch.device(device) if device is not None else images.device
    weights = torch.empty(len(levels), d, d, dtype=torch.float64, device=device)
    biases = torch.empty(len(levels), d, dtype=torch.float64, device=device)
    bar = tqdm(total=len(levels) * epochs, desc="fit_linear_adam", disable=not show_progress(progress), leave=False)
    for li, sigma in enumerate(levels):
        W = torch.zeros(d, d, device=device, requires_grad=True)
        b = torch.zeros(d, device=device, requires_grad=True)
        opt = torch.optim.Adam([W, b], lr=adam_lr(sigma) if lr is None else lr)
        for epoch in range(epochs):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + li * 104729 + epoch))
            for start in range(0, n, batch_size):
                y = images[order[start:start + batch_size]]
                x = y + sigma * _noise(y.shape, seed + 1, li, epoch, start).to(y.device, y.dtype)
                target = D(x, sigma).reshape(x.shape[0], d).to(device, torch.float32)
                xf = x.reshape(x.shape[0], d).to(device, torch.float32) / math.sqrt(d)
                with torch.enable_grad():
                    loss = (xf @ W.T + b - target).square().mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
            if callback is not None:
                callback(epoch + 1, sigma, W.detach().double() / math.sqrt(d), b.detach().double())
            bar.update()
        weights[li] = W.detach().double() / math.sqrt(d)
        biases[li] = b.detach().double()
    bar.close()
    return LinearDenoiser(levels, weights, biases, shape)
