"""Metrics of the paper (the book page "The paper's claims", section "Metrics") that compare samples with each
other and with the training set.

Nearest-neighbour searches are chunked over the training set, so N = 60000 (or 70000 x 12288 on a
GPU) runs in memory bounded by ``chunk_size`` x batch.
"""
from __future__ import annotations

import math

import torch

from ._checks import as_images, as_sigma, positive_int

__all__ = ["nearest_neighbours", "gl_score", "memorized_fraction", "copy_ratio", "sample_rmse", "sample_cosine",
           "sample_items", "sample_summary", "linearity_score", "linearity_curve", "denoiser_distance", "weight_distance",
           "singular_vector_alignment", "identity_distance", "distance_curve", "denoising_loss", "METRICS"]


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    return as_images(x, name).reshape(x.shape[0], -1)


def _same_dim(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"{what}: image shapes differ, {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}; "
                         "compare images of the same resolution and channel count")


def nearest_neighbours(samples: torch.Tensor, train: torch.Tensor, k: int = 1, chunk_size: int = 8192,
                       device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest training images of each sample by L2 distance in pixels.

    Returns (distances [B, k] float64, indices [B, k] int64), nearest first.
    """
    _same_dim(samples, train, "nearest_neighbours")
    s = _flat(samples, "samples")
    t = _flat(train, "train")
    k = positive_int(k, "k")
    if k > t.shape[0]:
        raise ValueError(f"k = {k} exceeds the {t.shape[0]} training images")
    device = device or s.device
    s = s.to(device, torch.float64)
    s_sq = s.square().sum(1, keepdim=True)
    best_d = torch.full((s.shape[0], 0), 0.0, dtype=torch.float64, device=device)
    best_i = torch.zeros((s.shape[0], 0), dtype=torch.int64, device=device)
    for start in range(0, t.shape[0], chunk_size):
        y = t[start:start + chunk_size].to(device, torch.float64)
        d2 = (s_sq + y.square().sum(1) - 2 * s @ y.T).clamp_min(0)
        kk = min(k, y.shape[0])
        d, i = d2.topk(kk, dim=1, largest=False)
        best_d, order = torch.cat([best_d, d], 1).sort(dim=1)
        best_i = torch.cat([best_i, i + start], 1).gather(1, order)
        best_d, best_i = best_d[:, :k], best_i[:, :k]
    return best_d.sqrt(), best_i


def gl_score(samples: torch.Tensor, train: torch.Tensor, reduce: bool = True, **kwargs):
    """Generalization score (the paper's Eq. 14; book page "The paper's claims", section "Metrics"): mean over
    samples of ||x - NN_Y(x)|| / ||x||.

    Above 0.6 the paper reads a model as generalizing; copies of training images score 0. The score has no
    natural scale across data sets: read it against the GL of real held-out images against the same
    training set. ``reduce=False`` returns the per-sample values [B] (float64, CPU).
    """
    d, _ = nearest_neighbours(samples, train, k=1, **kwargs)
    norms = _flat(samples, "samples").to(torch.float64).norm(dim=1).to(d.device)
    if (norms == 0).any():
        raise ValueError("gl_score divides by ||x||: a sample is exactly zero")
    per = (d[:, 0] / norms).cpu()
    return float(per.mean()) if reduce else per


def copy_ratio(samples: torch.Tensor, train: torch.Tensor, **kwargs) -> torch.Tensor:
    """Per-sample d(NN_1) / d(NN_2), the nearest over the second-nearest training distance (Gu et al. 2023)."""
    if train.shape[0] < 2:
        raise ValueError("the copy ratio needs at least 2 training images")
    d, _ = nearest_neighbours(samples, train, k=2, **kwargs)
    return d[:, 0] / d[:, 1].clamp_min(1e-12)


def memorized_fraction(samples: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3, **kwargs) -> float:
    """Fraction of samples that copy a training image: d(NN_1)/d(NN_2) < ratio (after Gu et al.; the book
    page "The paper's claims", section "Metrics")."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
    return float((copy_ratio(samples, train, **kwargs) < ratio).double().mean())


def sample_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image RMSE sqrt(||a_i - b_i||^2 / d) between two batches of the same images [B] (float64)."""
    _same_dim(a, b, "sample_rmse")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"sample_rmse compares image i with image i: batch sizes {a.shape[0]} and {b.shape[0]} differ")
    fa, fb = _flat(a, "a").to(torch.float64), _flat(b, "b").to(torch.float64).to(a.device)
    return (fa - fb).square().mean(1).sqrt()


def sample_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image cosine similarity of two batches of flattened images [B] (float64)."""
    _same_dim(a, b, "sample_cosine")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"sample_cosine compares image i with image i: batch sizes {a.shape[0]} and {b.shape[0]} differ")
    fa, fb = _flat(a, "a").to(torch.float64), _flat(b, "b").to(torch.float64).to(a.device)
    return torch.nn.functional.cosine_similarity(fa, fb, dim=1, eps=1e-12)


def sample_items(samples: torch.Tensor, reference: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3
                 ) -> dict[str, torch.Tensor]:
    """Per-sample values [B] (float64, CPU) behind :func:`sample_summary`: RMSE and cosine to the ``reference``
    sample of the same latent, whether the sample copies a training image (1.0 / 0.0) and its GL score."""
    return {"RMSE to reference": sample_rmse(samples, reference).cpu(),
            "cosine to reference": sample_cosine(samples, reference).cpu(),
            "memorized fraction": (copy_ratio(samples, train) < ratio).double().cpu(),
            "GL score": gl_score(samples, train, reduce=False)}


def sample_summary(samples: dict, reference: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3) -> list[dict]:
    """One row per model: mean per-sample RMSE and cosine to ``reference`` samples from the same latents,
    memorized fraction (d1/d2 < ratio) and GL score against ``train``, each as a
    :class:`~gaussdiff_lib.stats.Estimate` with its 95% bootstrap interval over samples."""
    from .stats import mean

    rows = []
    for name, x in samples.items():
        rows.append({"model": name, **{k: mean(v) for k, v in sample_items(x, reference, train, ratio).items()}})
    return rows


# ------------------------------------------------------------------------ denoiser-level metrics
def _noisy(images: torch.Tensor, sigma: float, seed: int, offset: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + offset)
    noise = torch.randn(images.shape, generator=g, dtype=torch.float64)
    return images.to(torch.float64) + sigma * noise.to(images.device)


def _level(sigma) -> float:
    """A single noise level, validated like a denoiser's (finite, > 0)."""
    return float(as_sigma(sigma, 1, "cpu")[0])


@torch.no_grad()
def linearity_score(D, images: torch.Tensor, sigma: float, alpha: float = 2 ** -0.5, n_pairs: int = 100,
                    kind: str = "cos", seed: int = 0, reduce: bool = True):
    """Linearity score (the paper's Fig 1; book page "The paper's claims", section "Metrics"): for noisy pairs
    x_i = y_i + sigma n_i and beta = sqrt(1 - alpha^2),
    'cos': E \\|cos(D(alpha x1 + beta x2), alpha D(x1) + beta D(x2))\\| (1 for a linear map);
    'nmse': E ||D(alpha x1 + beta x2) - (alpha D(x1) + beta D(x2))|| / ||D(alpha x1 + beta x2)|| (0 for a linear map).
    Pairs are drawn from ``images`` with replacement, seeded; ``reduce=False`` returns the per-pair values
    [n_pairs] (float64, CPU)."""
    images = as_images(images, "images")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1) (alpha^2 + beta^2 = 1), got {alpha}")
    if kind not in ("cos", "nmse"):
        raise ValueError(f"unknown kind {kind!r}; choose 'cos' or 'nmse'")
    n_pairs = positive_int(n_pairs, "n_pairs")
    s = _level(sigma)
    beta = math.sqrt(1 - alpha ** 2)
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(images.shape[0], (2, n_pairs), generator=g)
    x1 = _noisy(images[idx[0]], s, seed, 1)
    x2 = _noisy(images[idx[1]], s, seed, 2)
    mixed = D(alpha * x1 + beta * x2, s).to(torch.float64).reshape(n_pairs, -1)
    combo = (alpha * D(x1, s).to(torch.float64) + beta * D(x2, s).to(torch.float64)).reshape(n_pairs, -1)
    if kind == "cos":
        per = torch.nn.functional.cosine_similarity(mixed, combo, dim=1, eps=1e-12).abs()
    else:
        per = (mixed - combo).norm(dim=1) / mixed.norm(dim=1).clamp_min(1e-12)
    return float(per.mean()) if reduce else per.cpu()


def linearity_curve(D, images: torch.Tensor, sigmas, reduce: bool = True, **kwargs) -> torch.Tensor:
    """:func:`linearity_score` at each sigma, as a float64 tensor [S] (same pairs and noise at every sigma);
    with ``reduce=False`` the per-pair values [S, n_pairs]."""
    if not reduce:
        return torch.stack([linearity_score(D, images, float(s), reduce=False, **kwargs) for s in sigmas])
    return torch.tensor([linearity_score(D, images, float(s), **kwargs) for s in sigmas], dtype=torch.float64)


@torch.no_grad()
def denoiser_distance(D1, D2, images: torch.Tensor, sigma: float, kind: str = "rmse", seed: int = 0,
                      reduce: bool = True):
    """Score difference between two denoisers on the same noisy inputs y + sigma eps (the book page "The
    paper's claims", section "Metrics"):
    'rmse': E sqrt(||D1 - D2||^2 / d); 'nmse': E ||D1 - D2|| / ||D1||. ``reduce=False`` returns the
    per-image values [B] (float64, CPU); the noise depends only on ``seed``, so two calls with the same
    images and seed measure on the same noisy inputs (paired comparisons)."""
    images = as_images(images, "images")
    if kind not in ("rmse", "nmse"):
        raise ValueError(f"unknown kind {kind!r}; choose 'rmse' or 'nmse'")
    s = _level(sigma)
    x = _noisy(images, s, seed)
    a = D1(x, s).to(torch.float64).reshape(x.shape[0], -1)
    b = D2(x, s).to(torch.float64).reshape(x.shape[0], -1).to(a.device)
    if kind == "rmse":
        per = (a - b).square().mean(1).sqrt()
    else:
        per = (a - b).norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)
    return float(per.mean()) if reduce else per.cpu()


@torch.no_grad()
def denoising_loss(D, images: torch.Tensor, sigma: float, sigma_data: float = 0.5, seed: int = 0,
                   reduce: bool = True):
    """EDM's weighted denoising loss on clean images y (the book page "The paper's claims", section "The setup"):
    lambda(sigma) ||D(y + sigma eps; sigma) - y||^2 / d with lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2,
    the per-image quantity the training loss averages; on held-out images, the test loss of a denoiser.
    Returns its mean, or the per-image values [B] (float64) with ``reduce=False``."""
    images = as_images(images, "images")
    s = _level(sigma)
    x = _noisy(images, s, seed)
    err = (D(x, s).to(torch.float64) - images.to(torch.float64).to(x.device)).reshape(x.shape[0], -1)
    per = err.square().mean(1) * (s ** 2 + sigma_data ** 2) / (s * sigma_data) ** 2
    return float(per.mean()) if reduce else per.cpu()


def distance_curve(D1, D2, images: torch.Tensor, sigmas, reduce: bool = True, **kwargs) -> torch.Tensor:
    """:func:`denoiser_distance` at each sigma, as a float64 tensor [S]; with ``reduce=False`` the
    per-image values [S, B]."""
    if not reduce:
        return torch.stack([denoiser_distance(D1, D2, images, float(s), reduce=False, **kwargs) for s in sigmas])
    return torch.tensor([denoiser_distance(D1, D2, images, float(s), **kwargs) for s in sigmas], dtype=torch.float64)


def weight_distance(W: torch.Tensor, W_ref: torch.Tensor, fit_error: float | None = None) -> float:
    """Relative Frobenius distance ||W - W_ref||_F / ||W_ref||_F (the paper's weight 'NMSE', Fig 4; the book
    page "The paper's claims", section "Metrics").

    ``fit_error``: when W is a least-squares estimate of some W* with relative error ||W - W*||_F / ||W||_F about
    ``fit_error`` (``fit_linear``'s ``info[i]["rel_error"]``), the distance of W* itself, corrected for that
    sampling noise. The fit's error is uncorrelated with W* - W_ref, so E||W - W_ref||^2 = ||W* - W_ref||^2 +
    E||W - W*||^2, and the corrected distance is sqrt(max(||W - W_ref||^2 - (fit_error ||W||)^2, 0)) / ||W_ref||.
    """
    if W.ndim != 2 or W.shape != W_ref.shape:
        raise ValueError(f"weight_distance compares two matrices of one shape, got {tuple(W.shape)} and "
                         f"{tuple(W_ref.shape)}")
    ref = W_ref.to(torch.float64)
    norm = ref.norm()
    if norm == 0:
        raise ValueError("W_ref is zero: the relative distance is undefined")
    W = W.to(ref.device, torch.float64)
    dist = (W - ref).norm()
    if fit_error is not None:
        if not (fit_error >= 0 and math.isfinite(fit_error)):
            raise ValueError(f"fit_error is a relative error >= 0 (fit_linear's info['rel_error']), got {fit_error}")
        dist = (dist ** 2 - (fit_error * W.norm()) ** 2).clamp_min(0).sqrt()
    return float(dist / norm)


def singular_vector_alignment(W: torch.Tensor, W_ref: torch.Tensor, k: int = 100):
    """\\|U_W^T U_ref\\| of the top-k left singular vectors (paper Fig 4 right): returns (matrix [k, k], diagonal [k]).
    A matrix aligned with itself gives the identity; k is capped at d."""
    if W.ndim != 2 or W.shape != W_ref.shape:
        raise ValueError(f"singular_vector_alignment compares two matrices of one shape, got {tuple(W.shape)} and "
                         f"{tuple(W_ref.shape)}")
    k = min(positive_int(k, "k"), W.shape[0])
    U = torch.linalg.svd(W.to(torch.float64))[0][:, :k]
    V = torch.linalg.svd(W_ref.to(U.device, torch.float64))[0][:, :k]
    M = (U.T @ V).abs()
    return M, M.diagonal().clone()


@torch.no_grad()
def identity_distance(D, images: torch.Tensor, sigma: float, seed: int = 0) -> float:
    """Mean ||D(x; sigma) - x|| over noisy inputs x = y + sigma eps (the low-sigma
    diagnostic; the book page "The paper's claims", sections "Metrics" and "Noise regimes")."""
    images = as_images(images, "images")
    s = _level(sigma)
    x = _noisy(images, s, seed)
    return float((D(x, s).to(torch.float64) - x).reshape(x.shape[0], -1).norm(dim=1).mean())


METRICS = {"linearity_score": linearity_score, "denoiser_distance": denoiser_distance,
           "weight_distance": weight_distance, "singular_vector_alignment": singular_vector_alignment,
           "identity_distance": identity_distance, "gl_score": gl_score, "memorized_fraction": memorized_fraction}
