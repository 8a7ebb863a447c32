"""The explorers: frames precomputed from the right data, one per slider position, redrawn on change."""
import matplotlib
import pytest
import torch

import gaussdiff_lib as gd

matplotlib.use("Agg")


def test_slider_view_draws_the_selected_frame():
    import matplotlib.pyplot as plt

    plt.close("all")
    drawn = []

    def draw(i):
        drawn.append(i)
        fig = plt.figure(figsize=(1 + i, 1))   # frames differ, so a redraw must change the image
        return fig

    box = gd.widgets.slider_view(["a", "b", "c"], draw, start=1, description="x")
    slider, image = box.children
    assert [label for label, _ in slider.options] == ["a", "b", "c"] and drawn == [1]
    assert bytes(image.value).startswith(b"\x89PNG") and not plt.get_fignums()    # rendered, and the figure closed
    first = bytes(image.value)
    slider.value = 2
    assert drawn == [1, 2] and bytes(image.value).startswith(b"\x89PNG") and bytes(image.value) != first
    with pytest.raises(ValueError, match="start must index"):
        gd.widgets.slider_view(["a"], draw, start=3)
    with pytest.raises(ValueError, match="at least one frame"):
        gd.widgets.slider_view([], draw)


def test_sigma_explorer_frames_match_the_denoisers(rng):
    X = torch.randn(40, 1, 4, 4, generator=rng, dtype=torch.float64).clamp(-1, 1)
    G = gd.denoisers.GaussianDenoiser.from_data(X)
    levels = [4.0661, 1.5017, 0.47]
    L = gd.linear_fit.fit_linear(G, X, levels, n_noise=8)
    frames = gd.widgets.denoise_levels({"linear": L, "Gaussian": G}, X[:1], levels, seed=3)
    assert set(frames) == {"clean", "noisy", "linear", "Gaussian"} and frames["noisy"].shape == (3, 1, 4, 4)
    torch.testing.assert_close(frames["linear"], frames["Gaussian"], atol=1e-6, rtol=0)   # L fitted to G is G
    torch.testing.assert_close(frames["Gaussian"], G(frames["noisy"], torch.tensor(levels, dtype=torch.float64)))
    box = gd.widgets.sigma_explorer({"linear": L, "Gaussian": G}, X[:1], levels, seed=3)
    assert len(box.children[0].options) == 3
    with pytest.raises(ValueError, match="not one of the fitted levels"):
        gd.widgets.sigma_explorer({"linear": L}, X[:1], [2.0])


def test_trajectory_scrubber_checks_its_frames():
    rows = {"network": torch.rand(5, 2, 1, 4, 4), "Gaussian": torch.rand(5, 2, 1, 4, 4)}
    box = gd.widgets.trajectory_scrubber(rows, [80, 10, 1, 0.1, 0.01])
    assert len(box.children[0].options) == 5 and box.children[0].value == 4
    with pytest.raises(ValueError, match="one frame per sigma"):
        gd.widgets.trajectory_scrubber(rows, [80, 10])


def test_dataset_size_explorer_steps_through_the_models():
    class Cmp:
        samples = {"N = 16": None, "N = 256": None}

        def figure_rows(self, labels=None, n=None):
            return {f"{labels[0]}: samples": torch.rand(n, 1, 4, 4)}

    box = gd.widgets.dataset_size_explorer(Cmp(), n=3)
    assert [label for label, _ in box.children[0].options] == ["N = 16", "N = 256"]
    with pytest.raises(ValueError, match="no models"):
        gd.widgets.dataset_size_explorer(Cmp(), labels=["N = 9"])
