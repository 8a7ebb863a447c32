"""ipywidgets explorers: a slider over precomputed frames that works with or without a kernel.

Everything an explorer shows is computed and rendered to PNG before it is displayed. The frames sit in a
``Stack`` whose ``selected_index`` is linked to the slider in the browser (``jslink``), so the slider moves
through the frames in Jupyter, in Colab, and in the published book, where there is no kernel: the page carries
the widgets' saved state, frames included, and the widget manager links them on the client.

- :func:`sigma_explorer`: one held-out image noised at each σ and denoised by several denoisers side by
  side (network, linear, Gaussian, multi-delta; the book page 'The paper's claims', 'The denoisers' and
  'Noise regimes').
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

__all__ = ["denoise_levels", "sigma_explorer", "trajectory_scrubber", "dataset_size_explorer", "slider_view",
           "render_png"]


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


def render_png(fig, dpi: int = 80) -> bytes:
    """A matplotlib figure as optimised PNG bytes at ``dpi`` (the size it is shown at); the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pil_kwargs={"optimize": True})
    finally:
        plt.close(fig)
    return buffer.getvalue()


def slider_view(labels: Sequence[str], draw: Callable[[int], object], start: int = 0, description: str = "",
                alt: str | Callable[[int], str] = "", dpi: int = 80):
    """A labelled selection slider over ``labels`` and, below it, the frame ``draw(i)`` (a matplotlib figure) of
    the selected index; returns the ``VBox([slider, stack])``.

    Every frame is drawn once, up front, and embedded as a PNG ``<img>`` (with ``alt`` text: the slider's label
    and value, then ``alt``, or ``alt(i)``) in an ``HTML`` widget; the frames are the children of a ``Stack``
    whose ``selected_index`` follows the slider's ``index`` through ``jslink``, in the browser. Nothing needs the
    kernel to show a frame, so the explorer works in a static page (the widget state saved with the notebook
    carries the frames and the link), and in a live kernel the slider is as quick as the browser. A second,
    kernel-side link keeps ``stack.selected_index`` in step when the slider is set from Python.

    Page weight: a frame is one PNG at ``dpi`` (80 by default, the size the page shows it at), so an explorer
    weighs about the sum of its frames."""
    import base64
    import html

    import ipywidgets as widgets

    labels = [str(lab) for lab in labels]
    if not labels:
        raise ValueError("slider_view needs at least one frame")
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < len(labels):
        raise ValueError(f"start must index one of the {len(labels)} frames, got {start!r}")
    if not str(description).strip():
        raise ValueError("slider_view needs a description: it labels the slider for readers and screen readers")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 20 <= dpi <= 300:
        raise ValueError(f"dpi is the frames' resolution in dots per inch, an integer in [20, 300]; got {dpi!r}")
    frames = []
    for i, label in enumerate(labels):
        png = render_png(draw(i), dpi=dpi)
        text = alt(i) if callable(alt) else alt
        described = html.escape(f"{description} = {label}" + (f": {text}" if text else ""), quote=True)
        frames.append(widgets.HTML(
            f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{described}" '
            f'style="max-width:100%;height:auto">'))
    stack = widgets.Stack(frames, selected_index=start)
    slider = widgets.SelectionSlider(options=[(label, i) for i, label in enumerate(labels)], value=start,
                                     description=description, continuous_update=True,
                                     style={"description_width": "initial"}, layout=widgets.Layout(width="95%"))
    widgets.jslink((slider, "index"), (stack, "selected_index"))      # the browser's link: no kernel needed
    widgets.dlink((slider, "index"), (stack, "selected_index"))       # the kernel's copy, for code that reads it
    return widgets.VBox([slider, stack])


def sigma_explorer(denoisers: Mapping[str, torch.nn.Module], image: torch.Tensor,
                   sigmas: Sequence[float] | None = None, seed: int = 0):
    """A σ slider over one noisy image and its denoised versions, side by side (the book page 'The paper's claims',
    'The denoisers', 'Noise regimes'): e.g.
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

    alt = "one held-out image, " + ", ".join(names) + ", side by side"
    return slider_view([f"{s:.4g}" for s in sigmas], draw, start=len(sigmas) // 2, description="σ", alt=alt)


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

    alt = "the denoised outputs at this step, one row each for " + ", ".join(rows)
    return slider_view([f"{t + 1}: σ = {s:.3g}" for t, s in enumerate(sigmas)], draw, start=len(sigmas) - 1,
                       description="step", alt=alt)


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

    alt = "the model's samples, the nearest training image of each and the Gaussian samples of the same latents"
    return slider_view(labels, draw, start=len(labels) - 1, description="model", alt=alt)
