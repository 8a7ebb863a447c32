"""The explorers: frames precomputed from the right data, one per slider position, redrawn on change."""
import matplotlib
import pytest
import torch

import gaussdiff_lib as gd

matplotlib.use("Agg")


def _frames(stack):
    """The PNG bytes and alt text of every frame of an explorer's stack."""
    import base64
    import re

    out = []
    for child in stack.children:
        m = re.fullmatch(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)" style="[^"]*">',
                         child.value)
        assert m, child.value[:120]
        out.append((base64.b64decode(m.group(1)), m.group(2)))
    return out


def test_slider_view_embeds_every_frame_and_links_them_in_the_browser():
    import ipywidgets as widgets
    from ipywidgets.widgets.widget_link import Link
    import matplotlib.pyplot as plt

    plt.close("all")
    drawn = []

    def draw(i):
        drawn.append(i)
        return plt.figure(figsize=(1 + i, 1))   # frames differ in size, so each frame is its own PNG

    box = gd.widgets.slider_view(["a", "b", "c"], draw, start=1, description="x", alt=lambda i: f"frame {i}")
    slider, stack = box.children
    assert [label for label, _ in slider.options] == ["a", "b", "c"] and slider.description == "x"
    assert drawn == [0, 1, 2] and not plt.get_fignums()           # every frame drawn once, up front, figures closed
    frames = _frames(stack)
    assert all(png.startswith(b"\x89PNG") for png, _ in frames) and len({png for png, _ in frames}) == 3
    assert [a for _, a in frames] == ["x = a: frame 0", "x = b: frame 1", "x = c: frame 2"]
    assert stack.selected_index == 1
    # the link the static page relies on: a jslink from the slider's index to the stack's selected index
    links = [w for w in widgets.widget._instances.values() if isinstance(w, Link)
             and w.source == (slider, "index") and w.target == (stack, "selected_index")]
    assert len(links) == 1
    slider.value = 2                                               # set from Python: the kernel-side copy follows
    assert stack.selected_index == 2 and drawn == [0, 1, 2]        # nothing is redrawn
    with pytest.raises(ValueError, match="start must index"):
        gd.widgets.slider_view(["a"], draw, start=3, description="x")
    with pytest.raises(ValueError, match="at least one frame"):
        gd.widgets.slider_view([], draw, description="x")
    with pytest.raises(ValueError, match="needs a description"):
        gd.widgets.slider_view(["a"], draw)
    with pytest.raises(ValueError, match="dpi"):
        gd.widgets.slider_view(["a"], draw, description="x", dpi=0)


def test_frames_are_png_at_the_size_shown():
    import matplotlib.pyplot as plt
    import io

    from PIL import Image

    widths = []
    for dpi in (40, 80):
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.imshow(torch.rand(16, 16).numpy())
        widths.append(Image.open(io.BytesIO(gd.widgets.render_png(fig, dpi=dpi))).size[0])
    assert not plt.get_fignums()                                     # each figure closed once rendered
    assert all(w <= 4.2 * dpi for w, dpi in zip(widths, (40, 80)))  # at most the figure's size (plus the pad)
    assert abs(widths[1] / widths[0] - 2) < 0.1                      # pixels follow dpi: frames are shown as drawn


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
    assert len(box.children[0].options) == 3 and len(box.children[1].children) == 3
    assert all("linear, Gaussian" in a for _, a in _frames(box.children[1]))
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
