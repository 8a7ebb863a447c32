"""Sample metrics against brute force and cases with known answers."""
import pytest
import torch

import gaussdiff_lib as gd
from gaussdiff_lib import metrics


def _train(n=50, seed=0):
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_nearest_neighbours_match_brute_force(chunk):
    T, S = _train(), _train(9, seed=1)
    d, i = metrics.nearest_neighbours(S, T, k=3, chunk_size=chunk)
    full = torch.cdist(S.reshape(9, -1), T.reshape(50, -1))
    ref_d, ref_i = full.topk(3, largest=False)
    torch.testing.assert_close(d, ref_d)
    assert torch.equal(i, ref_i)


def test_copies_are_memorized_and_score_zero():
    T = _train()
    copies = T[[4, 8, 15]]
    assert metrics.gl_score(copies, T) == pytest.approx(0.0, abs=1e-6)
    assert metrics.memorized_fraction(copies, T) == 1.0
    near_copies = copies + 1e-3 * _train(3, seed=2)
    assert metrics.memorized_fraction(near_copies, T) == 1.0


def test_far_points_are_not_memorized():
    T = _train()
    far = _train(5, seed=3) + 50.0
    assert metrics.memorized_fraction(far, T) == 0.0
    assert metrics.gl_score(far, T) > 0.6
    # a point exactly between two training images is not a copy (ratio 1)
    mid = (T[0:1] + T[1:2]) / 2
    pair = T[:2]
    assert metrics.copy_ratio(mid, pair).item() == pytest.approx(1.0)


def test_gl_score_formula():
    T = _train()
    S = _train(4, seed=5)
    d = torch.cdist(S.reshape(4, -1), T.reshape(50, -1)).min(1).values
    assert metrics.gl_score(S, T) == pytest.approx(float((d / S.reshape(4, -1).norm(dim=1)).mean()))


def test_rmse_and_cosine():
    a = _train(6)
    b = _train(6, seed=1)
    torch.testing.assert_close(metrics.sample_rmse(a, b), ((a - b) ** 2).reshape(6, -1).mean(1).sqrt())
    torch.testing.assert_close(metrics.sample_cosine(a, 3 * a), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(metrics.sample_cosine(a, -a), -torch.ones(6, dtype=torch.float64))
    assert metrics.sample_rmse(a, a).abs().max() == 0


def test_summary_rows():
    T = _train()
    rows = metrics.sample_summary({"copies": T[:5], "far": T[:5] + 50}, T[:5], T)
    assert [r["model"] for r in rows] == ["copies", "far"]
    assert rows[0]["RMSE to reference"].value == 0 and rows[0]["memorized fraction"].value == 1.0
    assert rows[1]["memorized fraction"].value == 0.0 and rows[1]["RMSE to reference"].value == pytest.approx(50.0)
    assert rows[1]["RMSE to reference"].lo == pytest.approx(50.0)        # every sample at 50: a zero-width interval


def test_metric_errors():
    T = _train()
    with pytest.raises(ValueError, match=r"image shapes differ, \(1, 8, 8\) vs \(1, 4, 4\)"):
        metrics.nearest_neighbours(torch.zeros(2, 1, 8, 8), T)
    with pytest.raises(ValueError, match="batch sizes 3 and 2 differ"):
        metrics.sample_rmse(T[:3], T[:2])
    with pytest.raises(ValueError, match="k = 51 exceeds the 50 training images"):
        metrics.nearest_neighbours(T[:2], T, k=51)
    with pytest.raises(ValueError, match=r"ratio must lie in \(0, 1\]"):
        metrics.memorized_fraction(T[:2], T, ratio=2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.gl_score(torch.full((1, 1, 4, 4), float("nan")), T)


def test_plot_helpers_draw_what_they_are_given():
    import matplotlib
    matplotlib.use("Agg")
    x = _train(6)
    arr = gd.plotting.tile(x, ncols=3)
    assert arr.shape == (2 * 5 - 1, 3 * 5 - 1)
    assert arr[0, 0] == pytest.approx((x[0, 0, 0, 0].item() + 1) / 2)
    assert arr[4, 4] == 1.0                                   # padding is white
    _, idx = metrics.nearest_neighbours(x[:2], x, k=2)
    ax = gd.plotting.neighbours(x[:2], x, idx)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sample", "NN 1", "NN 2"]
    axes = gd.plotting.distance_panels([80.0, 1.0, 0.1], {"to G": {"m": [3, 2, 1]}, "to M": {"m": [1, 2, 3]}},
                                       band=(0.116, 20.0))
    assert [a.get_title() for a in axes] == ["to G", "to M"]
    assert [list(a.lines[0].get_ydata()) for a in axes] == [[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]
    table = gd.plotting.table([{"a": 1.23456, "b": "x"}])
    assert table.data.splitlines() == ["| a | b |", "|---|---|", "| 1.23 | x |"]


def test_weight_distance_corrected_for_fit_noise():
    """A noisy estimate W = W* + E of a matrix at known distance from W_ref: the plain distance is inflated by the
    noise; corrected with the noise's relative size it recovers ||W* - W_ref|| / ||W_ref||."""
    g = torch.Generator().manual_seed(0)
    d = 200
    W_ref = torch.randn(d, d, generator=g, dtype=torch.float64)
    W_star = W_ref + 0.1 * W_ref.norm() / d * torch.randn(d, d, generator=g, dtype=torch.float64)
    true = gd.metrics.weight_distance(W_star, W_ref)
    E = torch.randn(d, d, generator=g, dtype=torch.float64)
    E *= 0.15 * W_star.norm() / E.norm()
    W = W_star + E
    rel_error = float(E.norm() / W.norm())
    plain = gd.metrics.weight_distance(W, W_ref)
    corrected = gd.metrics.weight_distance(W, W_ref, fit_error=rel_error)
    assert plain > 1.5 * true                                   # the noise dominates the plain distance
    assert corrected == pytest.approx(true, rel=0.03)
    assert gd.metrics.weight_distance(W_ref, W_ref, fit_error=0.5) == 0.0   # never the root of a negative number
    with pytest.raises(ValueError, match="fit_error"):
        gd.metrics.weight_distance(W, W_ref, fit_error=-0.1)


@pytest.mark.parametrize("alpha2", [0.8, 0.5, 0.99])
def test_linearity_score_of_a_nonlinear_denoiser_by_brute_force(alpha2):
    """A known nonlinear denoiser, D(x) = tanh(2x) + 0.1: the score's inputs are recorded and the score recomputed
    pair by pair in float64. The mixed input must be alpha x1 + beta x2 with the right weight on each side
    (alpha != beta catches a swap), and both the cosine and the NMSE forms must match."""
    calls = []

    def D(x, sigma):
        calls.append(x.clone())
        return torch.tanh(2 * x) + 0.1

    X = gd.data.load("digits", n=40, seed=0)
    alpha = alpha2 ** 0.5
    beta = (1 - alpha2) ** 0.5
    for kind in ("cos", "nmse"):
        calls.clear()
        per = metrics.linearity_score(D, X, 0.7, alpha=alpha, n_pairs=25, kind=kind, seed=3, reduce=False)
        assert len(calls) == 3
        # which call was the mixture: the one that equals alpha * (one other) + beta * (the remaining one)
        found = [(m, a, b) for m in range(3) for a in range(3) for b in range(3) if len({m, a, b}) == 3
                 and torch.allclose(calls[m], alpha * calls[a] + beta * calls[b], rtol=0, atol=1e-12)]
        assert found, "the mixed input is not alpha x1 + beta x2"
        m, a, b = found[0]
        x1, x2, mixed = (calls[i].reshape(25, -1).double() for i in (a, b, m))
        f = lambda v: torch.tanh(2 * v) + 0.1  # noqa: E731
        expected = []
        for i in range(25):
            u, v = f(mixed[i]), alpha * f(x1[i]) + beta * f(x2[i])
            if kind == "cos":
                expected.append(abs(float(u @ v) / (float(u.norm()) * float(v.norm()))))
            else:
                expected.append(float((u - v).norm() / u.norm()))
        torch.testing.assert_close(per, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-12)
        assert (per < 0.999).any() if kind == "cos" else (per > 1e-3).any()   # it is far from linear
        # the pairs are noisy training images: each input minus its nearest image has the noise's scale
        nearest = torch.cdist(x1, X.reshape(40, -1).double()).min(1).values / x1.shape[1] ** 0.5
        assert 0.5 < float(nearest.mean()) < 0.75
