"""ipywidgets explorers: a slider over precomputed frames, redrawn with matplotlib.

Everything an explorer shows is computed before it is displayed, so moving the slider only redraws. In
Jupyter the slider is live; in the built book (no kernel) the widget keeps the frame it was saved with,
and the chapters show the same numbers as a static figure beside it, so the page reads the same either way.

- :func:`sigma_explorer`: one held-out image noised at each σ and denoised by several denoisers side by
  side (network, linear, Gaussian, multi-delta; paper sections 2 and 4).
- :func:`trajectory_scrubber`: the denoised outputs D(x_t; σ_t) along sampling trajectories, step by step
  (paper Figs 2 right and 3).
- :func:`dataset_size_explorer`: samples, their nearest training images and the Gaussian samples of the
  same latents as the training-set size N changes (paper Figs 6 and 13).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from . import plotting
from .._checks import as_images, as_levels

__all__ = ["denoise_levels", "sigma_explorer", "trajectory_scrubber", "dataset_size_explorer", "slider_view"]


@torch.no_grad()
def denoise_levels(denoisers: Mapping[str, torch.nn.Module], image: torch.Tensor, sigmas: Sequence[float],
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """One image noised at each sigma (one fixed noise draw) and denoised by every denoiser.

    Returns {'noisy': [S, C, H, W], 'clean': [S, C, H, W], name: [S, C, H, W] for each denoiser}.
    """
    image = as_images(image, "image")[:1].to(torch.float64)
    sig = torch.tensor(as_levels([float(s) for s in sigmas]), dtype=torch.float64)
    noise = torch.randn(image.shape[1:], generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    noisy = image + sig.view(-1, 1, 1, 1) * noise
    out = {"clean": image.expand_as(noisy).clone(), "noisy": noisy}
    for name, D in denoisers.items():
        out[name] = D(noisy, sig).to(torch.float64)
    return out


def slider_view(labels: Sequence[str], draw: Callable[[int], object], start: int = 0, description: str = ""):
    """A selection slider over ``labels`` and an image showing ``draw(i)`` (a matplotlib figure, rendered to PNG
    and closed) for the selected index; returns the ``VBox``. The first frame is drawn at once, so a saved
    notebook keeps it.

    The frame is an ``Image`` widget rather than an ``Output`` area: an executor (nbclient, so papermill and
    nbval) mirrors every output of an ``Output`` widget back to the kernel on the shell channel while it waits on
    that channel for the cell's reply, and under load that exchange can stall the execution; an image's bytes
    travel one way only."""
    import io

    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    labels = list(labels)
    if not labels:
        raise ValueError("slider_view needs at least one frame")
    if not 0 <= start < len(labels):
        raise ValueError(f"start must index one of the {len(labels)} frames, got {start}")
    slider = widgets.SelectionSlider(options=[(str(lab), i) for i, lab in enumerate(labels)], value=start,
                                     description=description, continuous_update=True,
                                     layout=widgets.Layout(width="95%"))
    image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))

    def redraw(change=None):
        fig = draw(slider.value)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        plt.close(fig)
        image.value = buffer.getvalue()

    slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([slider, image])


def sigma_explorer(denoisers: Mapping[str, torch.nn.Module], image: torch.Tensor,
                   sigmas: Sequence[float] | None = None, seed: int = 0):
    """A σ slider over one noisy image and its denoised versions, side by side (paper sections 2, 4): e.g.
    ``{"network": D, "linear": L, "Gaussian": G, "multi-delta": M}``. A linear denoiser fitted at fixed levels
    needs ``sigmas`` among them."""
    import matplotlib.pyplot as plt

    from ..sampling import edm_sigmas

    sigmas = [float(s) for s in (edm_sigmas(40)[:-1] if sigmas is None else sigmas)]
    levels = denoise_levels(denoisers, image, sigmas, seed)
    names = [k for k in levels if k != "clean"]

    def draw(i):
        fig, axes = plt.subplots(1, len(names), figsize=(1.7 * len(names), 2.0))
        for ax, name in zip(axes, names):
            plotting.image_grid(levels[name][i:i + 1], ax=ax, title=name)
        fig.suptitle(f"σ = {sigmas[i]:.4g}", fontsize=10)
        fig.tight_layout()
        return fig

    return slider_view([f"{s:.4g}" for s in sigmas], draw, start=len(sigmas) // 2, description="σ")


def trajectory_scrubber(rows: Mapping[str, torch.Tensor], sigmas: Sequence[float], ncols: int | None = None):
    """A slider over the steps of sampling trajectories: at step t, one row of images per entry of ``rows``
    (each [T, B, C, H, W], e.g. a :class:`~gaussdiff_lib.sampling.Recorder`'s ``denoised`` for the network
    and the Gaussian model from the same latents)."""
    sigmas = [float(s) for s in sigmas]
    lengths = {name: int(x.shape[0]) for name, x in rows.items()}
    if any(t != len(sigmas) for t in lengths.values()):
        raise ValueError(f"every row needs one frame per sigma ({len(sigmas)}); got {lengths}")

    def draw(t):
        axes = plotting.image_rows({name: x[t] for name, x in rows.items()}, ncols=ncols)
        axes[0].figure.suptitle(f"step {t + 1} of {len(sigmas)}: σ = {sigmas[t]:.4g}", fontsize=10)
        return axes[0].figure

    return slider_view([f"{t + 1}: σ = {s:.3g}" for t, s in enumerate(sigmas)], draw, start=len(sigmas) - 1,
                       description="step")


def dataset_size_explorer(comparison, labels: Sequence[str] | None = None, n: int = 8):
    """A slider over the models of an :class:`~gaussdiff_lib.chapters.compare.Comparison` (e.g. training-set sizes
    N): their samples, the nearest training image of each, and the Gaussian samples of the same latents."""
    labels = list(labels or comparison.samples)
    missing = [lab for lab in labels if lab not in comparison.samples]
    if missing:
        raise ValueError(f"the comparison has no models {missing}; it has {list(comparison.samples)}")

    def draw(i):
        axes = plotting.image_rows(comparison.figure_rows([labels[i]], n=n), ncols=n)
        axes[0].figure.suptitle(labels[i], fontsize=10)
        return axes[0].figure

    return slider_view(labels, draw, start=len(labels) - 1, description="model")
