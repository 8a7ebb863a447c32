"""ipywidgets explorers. They precompute on a grid, so moving a slider only redraws; in the static
book the same numbers are shown by :func:`gaussdiff_lib.plotting.image_rows`."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from . import plotting
from ._checks import as_images, as_levels

__all__ = ["denoise_levels", "sigma_explorer"]


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


def sigma_explorer(denoisers: Mapping[str, torch.nn.Module], image: torch.Tensor,
                   sigmas: Sequence[float] | None = None, seed: int = 0):
    """A sigma slider over one noisy image and its denoised versions, side by side (paper sections 2, 4)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    from .sampling import edm_sigmas

    sigmas = [float(s) for s in (edm_sigmas(40)[:-1] if sigmas is None else sigmas)]
    levels = denoise_levels(denoisers, image, sigmas, seed)
    names = [k for k in levels if k != "clean"]
    slider = widgets.SelectionSlider(options=[(f"{s:.4g}", i) for i, s in enumerate(sigmas)],
                                     value=len(sigmas) // 2, description="σ", continuous_update=True,
                                     layout=widgets.Layout(width="95%"))
    out = widgets.Output()

    def draw(change=None):
        i = slider.value
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, len(names), figsize=(1.7 * len(names), 2.0))
            for ax, name in zip(axes, names):
                plotting.image_grid(levels[name][i:i + 1], ax=ax, title=name)
            fig.suptitle(f"σ = {sigmas[i]:.4g}", fontsize=10)
            fig.tight_layout()
            display(fig)
            plt.close(fig)

    slider.observe(draw, names="value")
    draw()
    return widgets.VBox([slider, out])
