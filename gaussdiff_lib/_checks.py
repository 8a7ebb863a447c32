"""Input validation shared by every denoiser, sampler and metric: clear errors instead of deep torch tracebacks."""
from __future__ import annotations

import math
import numbers
import os
import warnings
from typing import Sequence

import torch


def as_images(x, name: str = "x") -> torch.Tensor:
    """Check that x is a finite floating tensor shaped [B, C, H, W]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped [B, C, H, W], got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have 4 dimensions [B, C, H, W], got shape {tuple(x.shape)}; "
            f"add a batch dimension with {name}[None] or reshape flat vectors to images")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor scaled to [-1, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite values; check the input or the step that produced it")
    return x


def image_shape_matches(x: torch.Tensor, shape: Sequence[int], what: str) -> None:
    """Raise if x's per-image shape [C, H, W] differs from the shape a denoiser was built for."""
    if tuple(x.shape[1:]) != tuple(shape):
        c, h, w = shape
        raise ValueError(
            f"{what} expects images shaped [B, {c}, {h}, {w}] (d = {c * h * w}), got {tuple(x.shape)}; "
            f"load the data at the same resolution and channel count as the denoiser")


def as_sigma(sigma, batch: int, device, dtype=torch.float64) -> torch.Tensor:
    """Check a noise level (float or [B] tensor) and return it as a [B] tensor: finite and > 0."""
    if isinstance(sigma, torch.Tensor):
        s = sigma.detach().to(device=device, dtype=dtype)
        if s.ndim == 0:
            s = s.expand(batch)
        elif s.ndim != 1 or s.shape[0] not in (1, batch):
            raise ValueError(f"sigma must be a float or a tensor of shape [{batch}], got shape {tuple(sigma.shape)}")
        elif s.shape[0] == 1:
            s = s.expand(batch)
    else:
        if isinstance(sigma, (str, bytes)):
            raise TypeError(f"sigma must be a number or a [B] tensor, got the string {sigma!r}; pass float({sigma!r}) "
                            "if you mean it")
        try:
            value = float(sigma)
        except (TypeError, ValueError):
            raise TypeError(f"sigma must be a float or a [B] tensor, got {type(sigma).__name__}") from None
        s = torch.full((batch,), value, device=device, dtype=dtype)
    if not torch.isfinite(s).all():
        raise ValueError("sigma must be finite and > 0 (the paper uses 0.002 <= sigma <= 80), got NaN or infinity")
    if (s <= 0).any():
        raise ValueError(
            f"sigma must be > 0 (the paper uses 0.002 <= sigma <= 80), got {s.min().item():g}; "
            "the final sigma = 0 of a schedule is a sampler step target, never a denoiser input")
    sq = s.square()
    if (sq == 0).any() or not torch.isfinite(1 / sq).all():
        hint = "" if dtype == torch.float64 else " (a float64 denoiser reaches smaller sigma)"
        raise ValueError(f"sigma = {s.min().item():g} is too small for {dtype}: sigma^2 underflows there and the "
                         f"denoiser would return NaN; the paper's smallest level is 0.002{hint}")
    return s


def positive_int(value, name: str) -> int:
    """Check a count (an integer, or an integral float such as 64.0) and return it as an int >= 1."""
    integral = isinstance(value, numbers.Integral) or isinstance(value, float) and value.is_integer()
    if isinstance(value, bool) or not integral:
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def positive_float(value, name: str, example: str = "") -> float:
    """Check a finite real number > 0 (not a bool, not a string) and return it as a float."""
    hint = f" (e.g. {example})" if example else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number > 0{hint}, got {value!r}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0{hint}, got {value}")
    return value


def show_progress(progress: bool | None) -> bool:
    """Resolve a ``progress`` argument: None follows ``$GAUSSDIFF_PROGRESS`` (on unless it is 0)."""
    if progress is not None:
        return bool(progress)
    return os.environ.get("GAUSSDIFF_PROGRESS", "1") not in ("0", "false", "no")


def as_levels(sigmas) -> list[float]:
    """A non-empty list of noise levels, each finite and > 0 (no trailing 0 of a sampling schedule)."""
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if s.numel() == 0 or not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"sigmas must be a non-empty list of finite values > 0, got {s.tolist()}; "
                         "drop the trailing 0 of a sampling schedule (edm_sigmas(10)[:-1])")
    return s.tolist()


def as_device(device) -> torch.device:
    """``device`` as a torch.device, refusing a CUDA device on a machine without one (torch would fail later with
    an assertion deep inside)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a device torch knows ({exc}); "
                         "use 'cpu', 'cuda' or 'cuda:1'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asks for a CUDA GPU, but this machine has none (torch {torch.__version__}"
                         f"{', built without CUDA' if torch.version.cuda is None else ''}); use device='cpu' or leave "
                         "device out")
    return dev


def downloads_off(download_arg: bool | None) -> bool:
    """Whether downloads are switched off: ``download=False``, or (``download=None``) ``GAUSSDIFF_OFFLINE`` set."""
    if download_arg is not None:
        return not download_arg
    return os.environ.get("GAUSSDIFF_OFFLINE", "") not in ("", "0")


def as_training_set(X: torch.Tensor, name: str = "X") -> torch.Tensor:
    """A training set [N, C, H, W]: checked like any images, and for the two scalings people pass by mistake.
    Pixel values 0 ... 255 (integers above 2) are refused; a set lying entirely in [0, 1] gets a warning. Other
    ranges pass, since the kernels are exact for any data (synthetic Gaussians included)."""
    if isinstance(X, torch.Tensor) and X.ndim == 4 and X.shape[0] == 0:
        raise ValueError(f"{name} is an empty dataset (0 images); load at least one image")
    X = as_images(X, name)
    lo, hi = float(X.min()), float(X.max())
    # pixel values stored as floats may carry rounding noise (254.9999): integral up to a small tolerance
    if hi > 2 and float((X - X.round()).abs().max()) <= 1e-3:
        raise ValueError(f"{name} holds pixel values {lo:g} ... {hi:g}; gaussdiff expects images scaled to [-1, 1] "
                         f"(the paper's x / 127.5 - 1); use gd.data.load, or scale with {name} / 127.5 - 1")
    if lo >= 0 and 0 < hi <= 1 and X.shape[0] > 1:
        warnings.warn(f"{name} lies in [0, 1] ({lo:g} ... {hi:g}); gaussdiff expects images in [-1, 1] (x * 2 - 1 for "
                      "[0, 1] data), and results on [0, 1] data are not comparable to the paper's", UserWarning,
                      stacklevel=3)
    return X


def as_sha256(value, name: str = "sha256") -> str:
    """A SHA-256 given as 64 hexadecimal digits, in lower case (as ``sha256sum`` prints it)."""
    if not (isinstance(value, str) and len(value) == 64 and not set(value.lower()) - set("0123456789abcdef")):
        raise ValueError(f"{name} must be 64 hexadecimal digits (sha256sum FILE), got {value!r}")
    return value.lower()
