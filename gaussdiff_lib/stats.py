"""Intervals and verdicts: percentile bootstrap over the items a number averages (images, samples, pairs).

Every number a chapter compares is a mean over items drawn at random (held-out images and their noise,
latents, image pairs), so it carries an interval: :func:`bootstrap` resamples the items with replacement and
reports the percentile interval of the statistic. Two models measured on the *same* items (the same noisy
held-out images, the same latents) are compared by :func:`paired`, which resamples the items jointly, so the
interval is that of the difference itself. :func:`direction` turns such an interval into a word only when
it excludes zero, and :func:`verdict` reduces a chapter's checks to reproduced yes / partly / no.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

__all__ = ["Estimate", "bootstrap", "mean", "paired", "direction", "Check", "verdict", "N_BOOT", "LEVEL"]

N_BOOT = 2000   #: bootstrap resamples
LEVEL = 0.95    #: coverage of every interval


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap interval [lo, hi] at coverage ``level``."""

    value: float
    lo: float
    hi: float
    level: float = LEVEL
    n: int = 0

    def excludes(self, x: float = 0.0) -> bool:
        """Whether x lies outside the interval."""
        return not self.lo <= x <= self.hi

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.lo:{spec}}, {self.hi:{spec}}]"

    def __str__(self) -> str:
        return format(self)

    def scaled(self, factor: float) -> "Estimate":
        """The same estimate in other units (e.g. a fraction as a percentage)."""
        lo, hi = sorted((self.lo * factor, self.hi * factor))
        return Estimate(self.value * factor, lo, hi, self.level, self.n)


def _items(values, name: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if t.ndim == 0 or t.shape[-1] == 0:
        raise ValueError(f"{name}: need a non-empty set of per-item values (last axis = items), got shape "
                         f"{tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: the per-item values contain NaN or infinity; an interval over them is undefined")
    return t


def bootstrap(statistic: Callable[..., torch.Tensor | float], *values, n_boot: int = N_BOOT, level: float = LEVEL,
              seed: int = 0) -> Estimate:
    """Percentile bootstrap interval of ``statistic(*values)``.

    Each of ``values`` holds per-item numbers with the items on its last axis, the same items (same length) in
    every array: all are resampled with the same indices, so paired measurements stay paired. ``statistic``
    receives the resampled arrays and returns a scalar; it is evaluated once on the data for the estimate.
    """
    if not values:
        raise ValueError("bootstrap needs at least one array of per-item values")
    if not 0 < level < 1:
        raise ValueError(f"level is a coverage in (0, 1), got {level}")
    n_boot = int(n_boot)
    if n_boot < 100:
        raise ValueError(f"n_boot = {n_boot} is too few resamples for a {level:.0%} interval; use at least 100")
    arrays = [_items(v, f"values[{i}]") for i, v in enumerate(values)]
    n = arrays[0].shape[-1]
    if any(a.shape[-1] != n for a in arrays):
        raise ValueError(f"paired values need the same number of items, got {[a.shape[-1] for a in arrays]}")
    value = float(statistic(*arrays))
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(n, (n_boot, n), generator=g)
    boots = torch.tensor([float(statistic(*(a[..., i] for a in arrays))) for i in idx], dtype=torch.float64)
    lo, hi = torch.quantile(boots, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return Estimate(value, min(lo, value), max(hi, value), level, n)


def _mean_interval(v: torch.Tensor, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Estimate:
    """Vectorised :func:`bootstrap` of the mean over everything, for the common case (same resamples)."""
    if not 0 < level < 1:
        raise ValueError(f"level is a coverage in (0, 1), got {level}")
    if int(n_boot) < 100:
        raise ValueError(f"n_boot = {n_boot} is too few resamples for a {level:.0%} interval; use at least 100")
    n = v.shape[-1]
    idx = torch.randint(n, (int(n_boot), n), generator=torch.Generator().manual_seed(int(seed)))
    flat = v.reshape(-1, n)                                   # [rows, items]
    boots = flat[:, idx].mean(dim=(0, 2))                     # [n_boot]
    lo, hi = torch.quantile(boots, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    value = float(v.mean())
    return Estimate(value, min(lo, value), max(hi, value), level, n)


def mean(values, **kwargs) -> Estimate:
    """Mean over items with its bootstrap interval (values [..., items]: the mean over everything)."""
    return _mean_interval(_items(values, "values"), **kwargs)


def paired(a, b, statistic: Callable[[torch.Tensor], torch.Tensor] | None = None, **kwargs) -> Estimate:
    """statistic(a) - statistic(b) for two measurements on the same items (default: the difference of means),
    with the interval of the difference from resampling the items jointly."""
    if statistic is None:
        a, b = _items(a, "a"), _items(b, "b")
        if a.shape != b.shape:
            raise ValueError(f"paired values need the same shape (same items), got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
        return _mean_interval(a - b, **kwargs)
    return bootstrap(lambda x, y: statistic(x) - statistic(y), a, b, **kwargs)


def direction(diff: Estimate, up: str, down: str, flat: str) -> str:
    """``up`` if the interval of a difference lies above zero, ``down`` if below, else ``flat``."""
    if diff.lo > 0:
        return up
    if diff.hi < 0:
        return down
    return flat


@dataclass(frozen=True)
class Check:
    """One testable part of a paper's claim: what was tested, whether the data pass it, and the evidence."""

    claim: str
    passed: bool
    evidence: str = ""


def verdict(checks: Sequence[Check]) -> str:
    """'yes' when every check passes, 'no' when none does, else 'partly'."""
    checks = list(checks)
    if not checks:
        raise ValueError("a verdict needs at least one check")
    passed = sum(bool(c.passed) for c in checks)
    return "yes" if passed == len(checks) else ("no" if passed == 0 else "partly")

