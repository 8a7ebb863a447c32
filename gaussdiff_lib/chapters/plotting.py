"""Figures from data: image grids, sample rows, trajectories, neighbours and curves over sigma.

Each helper takes tensors (and an optional ``ax``/``axes``) and returns what it drew on; layout,
titles and captions belong to the notebook, which also explains what a figure shows.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter
import numpy as np
import torch

__all__ = ["to_display", "tile", "image_grid", "image_rows", "trajectory", "neighbours", "curves", "distance_panels",
           "table"]


def to_display(x: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] -> numpy [B, H, W] (C = 1) or [B, H, W, 3], clipped to [0, 1]."""
    a = ((x.detach().to("cpu", torch.float32) + 1) / 2).clamp(0, 1).numpy()
    return a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)


def tile(x: torch.Tensor, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile a batch into one image array with ``pad`` white pixels between cells."""
    imgs = to_display(x)
    b, h, w = imgs.shape[:3]
    ncols = ncols or math.ceil(math.sqrt(b))
    nrows = math.ceil(b / ncols)
    shape = (nrows * (h + pad) - pad, ncols * (w + pad) - pad) + imgs.shape[3:]
    out = np.ones(shape, dtype=np.float32)
    for i in range(b):
        r, c = divmod(i, ncols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = imgs[i]
    return out


def _show(ax, arr):
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def image_grid(x: torch.Tensor, ncols: int | None = None, ax=None, title: str | None = None):
    """A batch of images as one grid on ``ax``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    _show(ax, tile(x, ncols))
    if title:
        ax.set_title(title)
    return ax


def image_rows(rows: Mapping[str, torch.Tensor], ncols: int | None = None, axes=None, cell: float = 0.9):
    """One labelled row of images per entry of ``rows`` (e.g. the same latents through several models)."""
    names = list(rows)
    ncols = ncols or min(int(rows[names[0]].shape[0]), 12)
    if axes is None:
        _, axes = plt.subplots(len(names), 1, figsize=(cell * ncols + 1.6, cell * len(names) + 0.2), squeeze=False)
        axes = axes[:, 0]
    for ax, name in zip(axes, names):
        _show(ax, tile(rows[name][:ncols], ncols))
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    return axes


def trajectory(states: Sequence[torch.Tensor] | torch.Tensor, sigmas: Sequence[float], axes=None,
               label: str | None = None, cell: float = 0.9):
    """States over sampling steps: ``states`` [T, B, C, H, W]; one row per image, one column per sigma."""
    states = torch.stack(list(states)) if not isinstance(states, torch.Tensor) else states
    t, b = states.shape[:2]
    if axes is None:
        _, axes = plt.subplots(1, 1, figsize=(cell * t + 0.6, cell * b + 0.5))
    ax = axes
    grid = torch.stack([states[:, i] for i in range(b)]).reshape(b * t, *states.shape[2:])
    _show(ax, tile(grid, t))
    ax.set_xticks([(i + 0.5) * (states.shape[-1] + 1) for i in range(t)])
    ax.set_xticklabels([f"{float(s):.3g}" for s in sigmas][:t], fontsize=7, rotation=45)
    ax.set_xlabel("σ")
    if label:
        ax.set_ylabel(label)
    return ax


def neighbours(samples: torch.Tensor, train: torch.Tensor, indices: torch.Tensor, ax=None, cell: float = 0.9):
    """Each sample (first column) beside its nearest training images (``indices`` [B, k], nearest first)."""
    b, k = indices.shape
    grid = torch.cat([samples[:, None].to("cpu", torch.float32), train[indices.cpu()].to(torch.float32)], 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(cell * (k + 1) + 0.4, cell * b + 0.4))
    _show(ax, tile(grid.reshape(b * (k + 1), *samples.shape[1:]), k + 1))
    w = samples.shape[-1] + 1
    ax.set_xticks([(i + 0.5) * w for i in range(k + 1)])
    ax.set_xticklabels(["sample"] + [f"NN {i + 1}" for i in range(k)], fontsize=8)
    return ax


def curves(x: Sequence[float], ys: Mapping[str, Sequence[float]], ax=None, xlabel: str = "σ",
           ylabel: str = "", logx: bool = True, logy: bool = False, markers: bool = True, reference=None):
    """Curves over sigma (or any x), one per entry of ``ys``. Values that carry an interval
    (:class:`gaussdiff_lib.stats.Estimate`) are drawn with error bars. ``reference``: (label, value or Estimate)
    drawn as a horizontal line (with its band), e.g. the GL score of real held-out images."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    for name, y in ys.items():
        y = list(y)
        mid = [float(getattr(v, "value", v)) for v in y]
        if y and all(hasattr(v, "lo") for v in y):
            err = [[m - v.lo for m, v in zip(mid, y)], [v.hi - m for m, v in zip(mid, y)]]
            ax.errorbar(list(x), mid, yerr=err, marker="o" if markers else None, ms=3, capsize=2, label=name)
        else:
            ax.plot(list(x), mid, marker="o" if markers else None, ms=3, label=name)
    if reference is not None:
        label, value = reference
        ax.axhline(float(getattr(value, "value", value)), color="k", ls="--", lw=1, label=label)
        if hasattr(value, "lo"):
            ax.axhspan(value.lo, value.hi, color="k", alpha=0.08, lw=0)
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # short log axes (epochs) would label every minor tick
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(ys) + (reference is not None) > 1:
        ax.legend(fontsize=8)
    return ax


def distance_panels(levels: Sequence[float], panels: Mapping[str, Mapping[str, Sequence[float]]],
                    band: tuple[float, float] | None = None, ylabel: str = "RMSE"):
    """Side-by-side curves over sigma sharing one y axis, one panel per entry of ``panels`` (title -> curves),
    with ``band`` (e.g. the intermediate sigma range) shaded; returns the axes."""
    _, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), sharey=True, squeeze=False)
    for i, (ax, (title, ys)) in enumerate(zip(axes[0], panels.items())):
        curves(levels, ys, ax=ax, ylabel=ylabel if i == 0 else "")
        if band is not None:
            ax.axvspan(*band, color="0.9", zorder=0)
        ax.set_title(title)
    return axes[0]


def bars(values: Mapping[str, float], ax=None, xlabel: str = "", logx: bool = False, title: str | None = None):
    """Horizontal bars, one per entry of ``values`` (label -> number), first entry on top."""
    labels = list(values)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.25 * len(labels) + 1))
    ax.barh(range(len(labels)), [float(values[k]) for k in labels], color="C0")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    return ax


def table(rows: Sequence[Mapping[str, object]], digits: int = 3):
    """A list of dicts as a Markdown table (an IPython ``Markdown`` object, rendered by the book). Columns are the
    keys in order of first appearance; a row without a column leaves its cell empty."""
    from IPython.display import Markdown

    if not rows:
        raise ValueError("table needs at least one row")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.{digits}g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) if c in r else "" for c in cols) + " |" for r in rows]
    return Markdown("\n".join(lines))
