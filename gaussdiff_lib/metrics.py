"""Metrics of the paper (section 3) that compare samples with each other and with the training set.

Nearest-neighbour searches are chunked over the training set, so N = 60000 (or 70000 x 12288 on a
GPU) runs in memory bounded by ``chunk_size`` x batch.
"""
from __future__ import annotations

import torch

from ._checks import as_images, positive_int

__all__ = ["nearest_neighbours", "gl_score", "memorized_fraction", "copy_ratio", "sample_rmse", "sample_cosine",
           "sample_summary"]


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


def gl_score(samples: torch.Tensor, train: torch.Tensor, **kwargs) -> float:
    """Generalization score (paper section 3, Eq. 14): mean over samples of ||x - NN_Y(x)|| / ||x||.

    Above 0.6 the model is read as generalizing; copies of training images score 0.
    """
    d, _ = nearest_neighbours(samples, train, k=1, **kwargs)
    norms = _flat(samples, "samples").to(torch.float64).norm(dim=1).to(d.device)
    if (norms == 0).any():
        raise ValueError("gl_score divides by ||x||: a sample is exactly zero")
    return float((d[:, 0] / norms).mean())


def copy_ratio(samples: torch.Tensor, train: torch.Tensor, **kwargs) -> torch.Tensor:
    """Per-sample d(NN_1) / d(NN_2), the nearest over the second-nearest training distance (Gu et al. 2023)."""
    if train.shape[0] < 2:
        raise ValueError("the copy ratio needs at least 2 training images")
    d, _ = nearest_neighbours(samples, train, k=2, **kwargs)
    return d[:, 0] / d[:, 1].clamp_min(1e-12)


def memorized_fraction(samples: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3, **kwargs) -> float:
    """Fraction of samples that copy a training image: d(NN_1)/d(NN_2) < ratio (paper section 3, after Gu et al.)."""
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


def sample_summary(samples: dict, reference: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3) -> list[dict]:
    """One row per model: mean per-sample RMSE and cosine to ``reference`` samples from the same latents,
    memorized fraction (d1/d2 < ratio) and GL score against ``train``."""
    rows = []
    for name, x in samples.items():
        rows.append({"model": name,
                     "RMSE to reference": float(sample_rmse(x, reference).mean()),
                     "cosine to reference": float(sample_cosine(x, reference).mean()),
                     "memorized fraction": memorized_fraction(x, train, ratio),
                     "GL score": gl_score(x, train)})
    return rows
