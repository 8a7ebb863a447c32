"""Denoisers D(x; sigma): Gaussian (Wiener), empirical multi-delta, and EDM-preconditioned networks.

The one contract of the library: every denoiser is a ``torch.nn.Module`` called as
``D(x, sigma) -> x_hat`` with ``x`` shaped [B, C, H, W] and ``sigma`` a float or a [B] tensor; the
output has the dtype and shape of ``x``. All of them are interchangeable in samplers and metrics.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import cache as _cache
from ._checks import as_device, as_images, as_sigma, as_training_set, image_shape_matches, positive_float, positive_int

__all__ = ["preconditioning", "PRECONDS", "check_precond", "vp_sigma", "vp_sigma_inv", "edm_scalings",
           "GaussianDenoiser", "EmpiricalDenoiser", "EDMDenoiser", "NetworkDenoiser"]


#: the preconditionings a network denoiser can use (Karras et al. 2022, Table 1)
PRECONDS = ("edm", "ve", "vp")
#: the VP baseline's schedule, EDM's VPPrecond defaults (beta_d, beta_min, M and epsilon_t)
VP_BETA_D, VP_BETA_MIN, VP_M, VP_EPSILON_T = 19.9, 0.1, 1000, 1e-5
#: the VE baseline's training range of sigma (EDM's VELoss and VEPrecond defaults)
VE_SIGMA_MIN, VE_SIGMA_MAX = 0.02, 100.0


def check_precond(kind) -> str:
    """``kind`` as one of :data:`PRECONDS`, or a clear error naming them."""
    if not isinstance(kind, str) or kind.lower() not in PRECONDS:
        raise ValueError(f"unknown preconditioning {kind!r}; choose one of {', '.join(map(repr, PRECONDS))} "
                         "(EDM's, and the baseline variance-exploding and variance-preserving ones of Karras et al. "
                         "2022, Table 1)")
    return kind.lower()


def vp_sigma(t, beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN) -> torch.Tensor:
    """The VP baseline's noise level at time t: sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.expm1(0.5 * beta_d * t ** 2 + beta_min * t).sqrt()


def vp_sigma_inv(sigma, beta_d: float = VP_BETA_D, beta_min: float = VP_BETA_MIN) -> torch.Tensor:
    """The inverse of :func:`vp_sigma`: t(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return ((beta_min ** 2 + 2 * beta_d * torch.log1p(sigma ** 2)).sqrt() - beta_min) / beta_d


def preconditioning(kind: str, sigma, sigma_data: float = 0.5):
    """The scalings (c_skip, c_out, c_in, c_noise) of D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), exactly as
    in Karras et al. (2022), Table 1 (book page "The paper's claims", section "The setup"; claim 2, Fig 11):

    - ``"edm"``: c_skip = sd^2/(sigma^2+sd^2), c_out = sigma sd/sqrt(sigma^2+sd^2), c_in = 1/sqrt(sigma^2+sd^2),
      c_noise = ln(sigma)/4 (sd = ``sigma_data``);
    - ``"ve"``: c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma/2);
    - ``"vp"``: c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2+1), c_noise = (M-1) t(sigma) with t the inverse
      of sigma(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1), beta_d = 19.9, beta_min = 0.1, M = 1000.

    ``sigma`` is a float or a tensor (kept in its dtype; float64 recommended); ``sigma_data`` enters only "edm".
    The one definition used by the network denoiser and by training.
    """
    kind = check_precond(kind)
    sigma = torch.as_tensor(sigma, dtype=sigma.dtype if isinstance(sigma, torch.Tensor) else torch.float64)
    one = torch.ones_like(sigma)
    if kind == "edm":
        c_skip = sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
        c_out = sigma * sigma_data / (sigma ** 2 + sigma_data ** 2).sqrt()
        c_in = 1 / (sigma_data ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
    elif kind == "ve":
        c_skip, c_out, c_in, c_noise = one, sigma, one, (0.5 * sigma).log()
    else:
        c_skip, c_out, c_in = one, -sigma, 1 / (sigma ** 2 + 1).sqrt()
        c_noise = ((VP_M - 1) * vp_sigma_inv(sigma)).to(sigma.dtype)
    return c_skip, c_out, c_in, c_noise


def edm_scalings(sigma: torch.Tensor, sigma_data: float = 0.5):
    """EDM preconditioning: ``preconditioning("edm", sigma, sigma_data)``."""
    return preconditioning("edm", sigma, sigma_data)


class GaussianDenoiser(nn.Module):
    """Wiener filter of a Gaussian N(mu, Sigma): D_G(x; sigma) = mu + U diag(l/(l+sigma^2)) U^T (x - mu).

    See the book page "The paper's claims", section "The denoisers". Statistics are held in float64; ``eigenvalues`` [r]
    descending and ``eigenvectors`` [d, r] (r = d for full rank). Directions outside span(U) collapse onto the mean.
    """

    def __init__(self, mean: torch.Tensor, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor,
                 shape: tuple[int, int, int]):
        super().__init__()
        d = math.prod(shape)
        if mean.shape != (d,) or eigenvectors.ndim != 2 or eigenvectors.shape[0] != d \
                or eigenvalues.shape != (eigenvectors.shape[1],):
            raise ValueError(
                f"inconsistent Gaussian statistics for images {tuple(shape)} (d = {d}): mean {tuple(mean.shape)}, "
                f"eigenvalues {tuple(eigenvalues.shape)}, eigenvectors {tuple(eigenvectors.shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.register_buffer("mean", mean.to(torch.float64))
        self.register_buffer("eigenvalues", eigenvalues.to(torch.float64).clamp_min(0))
        self.register_buffer("eigenvectors", eigenvectors.to(torch.float64))

    @property
    def d(self) -> int:
        return math.prod(self.shape)

    @property
    def rank(self) -> int:
        """Number of components kept (for :meth:`from_data` without ``rank``: the rank of the data's covariance)."""
        return int(self.eigenvalues.shape[0])

    def spectrum(self) -> torch.Tensor:
        """All d eigenvalues of the covariance, descending: the kept ones, then zeros (float64 [d])."""
        return torch.cat([self.eigenvalues, self.eigenvalues.new_zeros(self.d - self.rank)])

    def _apply(self, fn, recurse=True):
        # .half(), .to(torch.bfloat16) etc. move the statistics but keep them in float64: the filter computes in
        # float64 and returns the input's dtype, so a model converted with its network keeps working (in low
        # precision the eigenvectors would lose orthogonality and matmuls with float64 inputs would fail)
        def keep_float64(t):
            probe = fn(t.reshape(-1)[:0])
            return t.to(device=probe.device) if probe.dtype != t.dtype else fn(t)

        return super()._apply(keep_float64, recurse)

    @staticmethod
    def statistics(X: torch.Tensor, device=None, chunk_size: int = 8192) -> dict:
        """Empirical mean and 1/N covariance eigendecomposition of X in float64 (streamed over chunks)."""
        X = as_training_set(X)
        n, d = X.shape[0], math.prod(X.shape[1:])
        device = as_device(device) if device is not None else X.device
        total = torch.zeros(d, dtype=torch.float64, device=device)
        for s in range(0, n, chunk_size):
            total += X[s:s + chunk_size].reshape(-1, d).to(device, torch.float64).sum(0)
        mean = total / n
        cov = torch.zeros(d, d, dtype=torch.float64, device=device)
        for s in range(0, n, chunk_size):
            xc = X[s:s + chunk_size].reshape(-1, d).to(device, torch.float64, copy=True)   # never the caller's X
            xc -= mean
            cov.addmm_(xc.T, xc)
            del xc
        cov /= n
        evals, evecs = torch.linalg.eigh(cov)        # reads the lower triangle only: no symmetrised copy
        del cov
        return {"mean": mean, "eigenvalues": evals.flip(0).clamp_min(0), "eigenvectors": evecs.flip(1),
                "shape": list(X.shape[1:])}

    @classmethod
    def from_data(cls, X: torch.Tensor, rank: int | None = None, device=None, cache: bool = False
                  ) -> "GaussianDenoiser":
        """Fit to images X [N, C, H, W]: mean and 1/N covariance, keeping the top ``rank`` components.

        With ``cache=True`` the statistics are stored under :func:`gaussdiff_lib.cache.cache_root`,
        keyed by a hash of X, so refitting the same data costs one hash.
        """
        X = as_training_set(X)
        device = as_device(device) if device is not None else None  # a CUDA request without CUDA, said up front
        d = math.prod(X.shape[1:])
        if rank is not None:
            rank = positive_int(rank, "rank")
            if rank > d:
                raise ValueError(f"rank must be at most d = {d} for images {tuple(X.shape[1:])}, got {rank}")
        if cache:
            stats = _cache.cached("gaussian", {"data": _cache.digest(X, version=False)},
                                  lambda: {k: (v.cpu() if isinstance(v, torch.Tensor) else v)
                                           for k, v in cls.statistics(X, device).items()})
        else:
            stats = cls.statistics(X, device)
        # without a rank, keep the components with nonzero variance: the others have gain 0 at every sigma, which
        # is what the directions outside span(U) get, so the denoiser is the same and .rank is the data's rank
        # (eigenvalues at the eigensolver's rounding level, relative to the largest, count as zero)
        lam = stats["eigenvalues"]
        tol = float(lam[0]) * max(X.shape[0], d) * torch.finfo(torch.float64).eps
        r = int((lam > tol).sum()) if rank is None else rank
        dev = as_device(device) if device is not None else X.device
        return cls(stats["mean"].to(dev), stats["eigenvalues"][:r].to(dev), stats["eigenvectors"][:, :r].to(dev),
                   tuple(stats["shape"]))

    def shrinkage(self, sigma) -> torch.Tensor:
        """Per-component gains lambda_i / (lambda_i + sigma^2), shape [r] (float sigma) or [B, r]."""
        s = torch.as_tensor(sigma, dtype=torch.float64, device=self.mean.device)
        if not torch.isfinite(s).all() or (s <= 0).any():
            raise ValueError(f"sigma must be finite and > 0, got {sigma}")
        return self.eigenvalues / (self.eigenvalues + s[..., None] ** 2)

    def weight(self, sigma: float) -> torch.Tensor:
        """W_G = Sigma (Sigma + sigma^2 I)^-1 = U diag(l/(l+sigma^2)) U^T, shape [d, d]
        (the book page "The paper's claims", section "The denoisers")."""
        g = self.shrinkage(float(sigma))
        return (self.eigenvectors * g) @ self.eigenvectors.T

    def bias(self, sigma: float) -> torch.Tensor:
        """b_G = (I - W_G) mu, shape [d]."""
        return self.mean - self.weight(sigma) @ self.mean

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x = as_images(x)
        image_shape_matches(x, self.shape, "GaussianDenoiser")
        s = as_sigma(sigma, x.shape[0], self.mean.device)
        xf = x.reshape(x.shape[0], -1).to(self.mean.device, torch.float64) - self.mean
        coeff = (xf @ self.eigenvectors) * self.shrinkage(s)
        out = self.mean + coeff @ self.eigenvectors.T
        return out.reshape(x.shape).to(device=x.device, dtype=x.dtype)


class EmpiricalDenoiser(nn.Module):
    """Optimal denoiser of the empirical distribution ("multi-delta"; book page "The paper's claims", section
    "The denoisers"): D_M(x; sigma) = sum_i softmax_i(-||x - y_i||^2 / 2 sigma^2) y_i.

    The softmax runs over chunks of ``chunk_size`` training images with a running log-sum-exp, so
    memory is O(B * chunk_size) whatever N, and it stays finite down to sigma = 0.002.
    """

    def __init__(self, X: torch.Tensor, chunk_size: int = 4096, dtype: torch.dtype = torch.float64, device=None):
        super().__init__()
        X = as_training_set(X)
        self.chunk_size = positive_int(chunk_size, "chunk_size")
        self.shape = tuple(int(s) for s in X.shape[1:])
        data = X.reshape(X.shape[0], -1).to(device=device or X.device, dtype=dtype)
        self.register_buffer("data", data)
        work = torch.promote_types(dtype, torch.float32)
        # squared norms a chunk at a time: squaring the whole set at once would hold a second copy of it
        sqnorms = torch.empty(data.shape[0], dtype=work, device=data.device)
        for s in range(0, data.shape[0], self.chunk_size):
            sqnorms[s:s + self.chunk_size] = data[s:s + self.chunk_size].to(work).square().sum(1)
        self.register_buffer("sqnorms", sqnorms)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x = as_images(x)
        image_shape_matches(x, self.shape, "EmpiricalDenoiser")
        b = x.shape[0]
        # stored in any precision, computed in at least float32: in float16 the logits -||x - y||^2 / 2 sigma^2
        # overflow at the paper's small sigma (0.002) and the softmax returns NaN
        work = torch.promote_types(self.data.dtype, torch.float32)
        xf = x.reshape(b, -1).to(self.data.device, work)
        inv = 1.0 / (2 * as_sigma(sigma, b, self.data.device, work) ** 2)
        xsq = xf.square().sum(1, keepdim=True)
        run_max = torch.full((b,), -math.inf, dtype=work, device=self.data.device)
        run_sum = torch.zeros(b, dtype=work, device=self.data.device)
        acc = torch.zeros_like(xf)
        for s in range(0, self.data.shape[0], self.chunk_size):
            y = self.data[s:s + self.chunk_size].to(work)
            dist = (xsq + self.sqnorms[s:s + self.chunk_size].to(work) - 2 * xf @ y.T).clamp_min(0)
            logits = -dist * inv[:, None]
            new_max = torch.maximum(run_max, logits.max(1).values)
            w = torch.exp(logits - new_max[:, None])
            rescale = torch.exp(run_max - new_max)
            run_sum = run_sum * rescale + w.sum(1)
            acc = acc * rescale[:, None] + w @ y
            run_max = new_max
        return (acc / run_sum[:, None]).reshape(x.shape).to(device=x.device, dtype=x.dtype)


class EDMDenoiser(nn.Module):
    """A network F wrapped in a preconditioning: D(x; sigma) = c_skip x + c_out F(c_in x; c_noise).

    See the book page "The paper's claims", section "The setup". ``precond`` is "edm" (EDM's, the default), "ve"
    or "vp" (the baselines of Karras et al. 2022, Table 1; :func:`preconditioning`), reported as ``.precond``. The
    skip and output mixing run in the dtype of ``x`` (float64 in samplers), the network in its own parameter dtype.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, precond: str = "edm"):
        super().__init__()
        self.net = net
        self.sigma_data = positive_float(sigma_data, "sigma_data", "0.5")
        self.precond = check_precond(precond)
        self.shape = (int(net.in_channels), int(net.resolution), int(net.resolution))

    def extra_repr(self) -> str:
        return f"precond={self.precond!r}, sigma_data={self.sigma_data}"

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x = as_images(x)
        image_shape_matches(x, self.shape, "EDMDenoiser")
        param = next(self.net.parameters())
        s = as_sigma(sigma, x.shape[0], param.device, torch.float64)
        c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1) for c in preconditioning(self.precond, s, self.sigma_data))
        xd = x.to(param.device)
        f = self.net((c_in.to(param.dtype) * xd.to(param.dtype)), c_noise.view(-1).to(param.dtype))
        out = c_skip.to(xd.dtype) * xd + c_out.to(xd.dtype) * f.to(xd.dtype)
        return out.to(x.device)


#: the same class under a name that does not suggest one preconditioning
NetworkDenoiser = EDMDenoiser
