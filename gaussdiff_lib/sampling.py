"""Noise schedule, per-seed latents, deterministic Euler/Heun probability-flow samplers, and the
closed-form trajectory of the Gaussian model.

Every sampler has the signature ``sampler(D, z, sigmas, callback=None, batch_size=None)``: the state
starts at ``x = z * sigmas[0]`` in float64 and the callback receives ``(i, sigma, x, denoised)`` at
each step, so notebooks record trajectories without forking the sampler. With ``batch_size`` set, the
denoiser sees at most that many images at a time, and the callback is still called once per step with the
states of the whole batch.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from ._checks import as_images, positive_int

__all__ = ["edm_sigmas", "latents", "euler", "heun", "gaussian_closed_form", "gaussian_trajectory",
           "Recorder", "SAMPLERS", "sample"]

Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]


def edm_sigmas(n: int = 10, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
               device=None) -> torch.Tensor:
    """EDM schedule (Karras et al. 2022, Eq. 5): n levels from sigma_max to sigma_min, then 0 (the book page "The
    paper's claims", section "The setup").

    Returns float64 [n + 1]; ``edm_sigmas(10)`` gives the paper's 10 analysis levels and a trailing zero.
    """
    n = positive_int(n, "n")
    if not (0 < sigma_min < sigma_max) or rho <= 0:
        raise ValueError(f"need 0 < sigma_min < sigma_max and rho > 0, got {sigma_min}, {sigma_max}, {rho}")
    if n == 1:
        levels = torch.tensor([float(sigma_max)], dtype=torch.float64)
    else:
        i = torch.arange(n, dtype=torch.float64)
        a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        levels = (a + i / (n - 1) * (b - a)) ** rho
    return torch.cat([levels, torch.zeros(1, dtype=torch.float64)]).to(device)


def latents(seeds: Iterable[int], shape: Sequence[int], dtype: torch.dtype = torch.float64, device=None
            ) -> torch.Tensor:
    """Standard normal latents [len(seeds), \\*shape], image i drawn from its own generator seeded seeds[i].

    Drawn on the CPU and moved, so the same seed gives the same latent on every device and batch size.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("latents needs at least one seed")
    out = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(s), dtype=torch.float64)
           for s in seeds]
    return torch.stack(out).to(device=device, dtype=dtype)


class Recorder:
    """Sampler callback keeping each step's sigma, state x and denoised output D(x; sigma) on the CPU
    (paper Figs 2 right and 3 show the denoised outputs along the trajectory)."""

    def __init__(self):
        self.sigmas: list[float] = []
        self._x: list[torch.Tensor] = []
        self._denoised: list[torch.Tensor] = []

    def __call__(self, i: int, sigma: float, x: torch.Tensor, denoised: torch.Tensor) -> None:
        self.sigmas.append(float(sigma))
        self._x.append(x.detach().cpu())
        self._denoised.append(denoised.detach().cpu())

    @property
    def x(self) -> torch.Tensor:
        """States [T, B, C, H, W]."""
        return torch.stack(self._x)

    @property
    def denoised(self) -> torch.Tensor:
        """Denoised outputs [T, B, C, H, W]."""
        return torch.stack(self._denoised)


def _check_schedule(sigmas) -> torch.Tensor:
    s = torch.as_tensor(sigmas, dtype=torch.float64).cpu()
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D schedule with at least 2 values, got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all() or (s < 0).any() or (s[:-1] <= 0).any():
        raise ValueError("sigmas must be finite, > 0 except possibly the last value (0); "
                         "use gd.sampling.edm_sigmas(n) for the paper's schedule")
    if (s[1:] >= s[:-1]).any():
        raise ValueError("sigmas must decrease strictly (from sigma_max down to sigma_min or 0)")
    return s


def _denoise(D, x: torch.Tensor, sigma: float, size: int) -> torch.Tensor:
    """D(x; sigma) in float64, at most ``size`` images per call."""
    if size >= x.shape[0]:
        return D(x, sigma).to(torch.float64)
    return torch.cat([D(x[a:a + size], sigma).to(torch.float64) for a in range(0, x.shape[0], size)])


def _integrate(D, z: torch.Tensor, sigmas, callback, batch_size, progress: bool, name: str, corrector: bool
               ) -> torch.Tensor:
    """Euler (``corrector=False``) or Heun steps over the schedule, step by step for the whole batch, so the
    callback sees every image at every step whatever ``batch_size`` (the largest number of images per call of D)."""
    z = as_images(z, "z")
    s = _check_schedule(sigmas)
    size = z.shape[0] if batch_size is None else positive_int(batch_size, "batch_size")
    x = z.to(torch.float64) * s[0].item()
    for i in tqdm(range(len(s) - 1), desc=name, disable=not progress, leave=False):
        t, t_next = s[i].item(), s[i + 1].item()
        den = _denoise(D, x, t, size)
        if callback is not None:
            callback(i, t, x, den)
        d = (x - den) / t
        x_next = x + (t_next - t) * d
        if corrector and t_next > 0:
            d_next = (x_next - _denoise(D, x_next, t_next, size)) / t_next
            x_next = x + (t_next - t) * (d + d_next) / 2
        x = x_next
    return x


def euler(D, z: torch.Tensor, sigmas, callback: Callback | None = None, batch_size: int | None = None,
          progress: bool = False) -> torch.Tensor:
    """Deterministic first-order Euler on the probability-flow ODE: the sampler of every figure (the book page
    "The paper's claims", section "The denoisers", "Sampling from shared latents").

    x_0 = sigma_0 z; d_i = (x_i - D(x_i; sigma_i)) / sigma_i; x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i.
    Returns float64 samples shaped like z.
    """
    return _integrate(D, z, sigmas, callback, batch_size, progress, "euler", corrector=False)


def heun(D, z: torch.Tensor, sigmas, callback: Callback | None = None, batch_size: int | None = None,
         progress: bool = False) -> torch.Tensor:
    """Deterministic Heun (Karras et al. 2022, Algorithm 1): Euler predictor, trapezoidal corrector
    whenever the next sigma is not 0. Returns float64 samples shaped like z."""
    return _integrate(D, z, sigmas, callback, batch_size, progress, "heun", corrector=True)


def gaussian_trajectory(G, z: torch.Tensor, sigmas) -> torch.Tensor:
    """Exact probability-flow states x(sigma_k) of the Gaussian model for every sigma in ``sigmas``.

    Wang & Vastola (arXiv 2311.10892); book page "The paper's claims", section "The denoisers". Starting at
    x_T = sigma_0 z,
    x(sigma) = mu + sum_i sqrt((sigma^2 + l_i)/(sigma_0^2 + l_i)) u_i u_i^T (x_T - mu)
    + (sigma / sigma_0) P_perp (x_T - mu), P_perp the projector off span(U). One matrix product per
    sigma, no ODE steps. Returns float64 [len(sigmas), B, C, H, W].
    """
    z = as_images(z, "z")
    s = _check_schedule(sigmas)
    image_shape = tuple(z.shape[1:])
    if image_shape != tuple(G.shape):
        raise ValueError(f"latents shaped {tuple(z.shape)} do not match the Gaussian model's images {G.shape}")
    dev = G.mean.device
    sig = s.to(dev)
    xt = z.reshape(z.shape[0], -1).to(dev, torch.float64) * sig[0] - G.mean
    coeff = xt @ G.eigenvectors                                          # [B, r]
    perp = xt - coeff @ G.eigenvectors.T if G.rank < G.d else None       # off-span residual
    lam = G.eigenvalues
    out = []
    for sigma in sig:
        gain = torch.sqrt((sigma ** 2 + lam) / (sig[0] ** 2 + lam))
        x = G.mean + (coeff * gain) @ G.eigenvectors.T
        if perp is not None:
            x = x + perp * (sigma / sig[0])
        out.append(x.reshape(z.shape))
    return torch.stack(out).to(z.device)


def gaussian_closed_form(G, z: torch.Tensor, sigmas) -> torch.Tensor:
    """Sample of the Gaussian model at sigmas[-1] by the exact probability-flow solution (no steps)."""
    s = _check_schedule(sigmas)
    return gaussian_trajectory(G, z, s[[0, -1]])[-1]


#: sampler name -> function, for :func:`sample`
SAMPLERS = {"euler": euler, "heun": heun}


def sample(name: str, D, z: torch.Tensor, sigmas, **kwargs) -> torch.Tensor:
    """Run the sampler registered under ``name`` (one of :data:`SAMPLERS`)."""
    try:
        fn = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None
    return fn(D, z, sigmas, **kwargs)
