"""Oracle tests of the denoisers: closed forms computed independently, brute force, limits, errors."""
import math
import warnings

import pytest
import torch

import gaussdiff_lib as gd
from gaussdiff_lib.denoisers import EDMDenoiser, EmpiricalDenoiser, GaussianDenoiser, edm_scalings

from conftest import devices


def _data(n=60, shape=(1, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + 0.3).reshape(n, *shape)


def _wiener(X, x, sigma):
    """mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu), by a linear solve in float64 (no eigendecomposition)."""
    Y = X.reshape(X.shape[0], -1).double()
    mu = Y.mean(0)
    cov = (Y - mu).T @ (Y - mu) / Y.shape[0]
    A = cov + sigma ** 2 * torch.eye(cov.shape[0], dtype=torch.float64)
    xf = x.reshape(x.shape[0], -1).double() - mu
    return (mu + (cov @ torch.linalg.solve(A, xf.T)).T).reshape(x.shape)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma", [0.002, 0.1, 1.0, 80.0])
def test_gaussian_matches_wiener_solve(device, dtype, sigma):
    X = _data()
    G = GaussianDenoiser.from_data(X.to(dtype), device=device)
    x = _data(8, seed=1).to(dtype).to(device)
    out = G(x, sigma)
    assert out.dtype == dtype and out.device.type == device and out.shape == x.shape
    ref = _wiener(X.to(dtype).double(), x.cpu().double(), sigma)
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(out.cpu().double(), ref, atol=tol, rtol=tol)


def test_gaussian_weight_and_bias_and_per_sample_sigma():
    X = _data()
    G = GaussianDenoiser.from_data(X)
    Y = X.reshape(60, -1)
    mu = Y.mean(0)
    cov = (Y - mu).T @ (Y - mu) / 60
    sigma = 0.7
    W = torch.linalg.solve(cov + sigma ** 2 * torch.eye(16, dtype=torch.float64), cov).T  # cov (cov + s^2 I)^-1
    torch.testing.assert_close(G.weight(sigma), W, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(G.bias(sigma), mu - W @ mu, atol=1e-10, rtol=1e-10)
    x = _data(3, seed=5)
    s = torch.tensor([0.05, 1.0, 20.0])
    per = G(x, s)
    for i in range(3):
        torch.testing.assert_close(per[i:i + 1], G(x[i:i + 1], float(s[i])))


def test_gaussian_is_posterior_mean_of_gaussian_data():
    """For y ~ N(mu, Sigma) and x = y + sigma e, E[y | x] is affine; regress y on x and compare."""
    g = torch.Generator().manual_seed(3)
    d, n, sigma = 6, 400_000, 0.8
    L = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.5
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64) @ L.T + mu
    x = y + sigma * torch.randn(n, d, generator=g, dtype=torch.float64)
    A = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(A, y).solution          # E[y|x] = x W^T + b
    cov = L @ L.T
    evals, evecs = torch.linalg.eigh(cov)
    G = GaussianDenoiser(mu, evals.flip(0), evecs.flip(1), (1, 1, d))
    probe = torch.randn(5, d, generator=g, dtype=torch.float64)
    expected = torch.cat([probe, torch.ones(5, 1, dtype=torch.float64)], 1) @ coef
    torch.testing.assert_close(G(probe.reshape(5, 1, 1, d), sigma).reshape(5, d), expected, atol=0.02, rtol=0)


def test_low_rank_keeps_top_components():
    X = _data()
    full = GaussianDenoiser.from_data(X)
    low = GaussianDenoiser.from_data(X, rank=5)
    assert low.rank == 5 and low.eigenvectors.shape == (16, 5)
    torch.testing.assert_close(low.eigenvalues, full.eigenvalues[:5])
    assert (full.eigenvalues[:-1] >= full.eigenvalues[1:]).all()
    x = _data(4, seed=9)
    out = low(x, 0.3).reshape(4, -1)
    U = full.eigenvectors
    # inside the top-5 span it acts like the full model; outside it returns the mean's component
    top, rest = U[:, :5], U[:, 5:]
    torch.testing.assert_close(out @ top, full(x, 0.3).reshape(4, -1) @ top)
    torch.testing.assert_close(out @ rest, (full.mean @ rest).expand(4, -1))
    with pytest.raises(ValueError, match="rank must be at most d = 16"):
        GaussianDenoiser.from_data(X, rank=17)


def test_small_n_gaussian_does_not_tend_to_identity():
    """rank Sigma <= N - 1: with N < d the Gaussian denoiser cannot reproduce an arbitrary x at sigma -> 0."""
    X = _data(n=5)
    G = GaussianDenoiser.from_data(X)
    assert int((G.eigenvalues > 1e-10).sum()) == 4
    x = _data(2, seed=4)
    assert (G(x, 1e-4) - x).abs().max() > 0.1
    Gbig = GaussianDenoiser.from_data(_data(n=400))
    torch.testing.assert_close(Gbig(x, 1e-5), x, atol=1e-4, rtol=0)


def _brute_multi_delta(X, x, sigma):
    Y = X.reshape(X.shape[0], -1).double()
    xf = x.reshape(x.shape[0], -1).double()
    w = torch.softmax(-torch.cdist(xf, Y) ** 2 / (2 * sigma ** 2), dim=1)
    return (w @ Y).reshape(x.shape)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize("sigma", [0.05, 0.5, 3.0])
def test_empirical_matches_brute_force(device, chunk, sigma):
    X = _data(n=30)
    x = _data(6, seed=2)
    M = EmpiricalDenoiser(X, chunk_size=chunk, device=device)
    torch.testing.assert_close(M(x.to(device), sigma).cpu(), _brute_multi_delta(X, x, sigma), atol=1e-10, rtol=1e-9)


def test_empirical_limits():
    X = _data(n=30)
    M = EmpiricalDenoiser(X, chunk_size=8)
    x = X[[3, 17]] + 0.01 * _data(2, seed=7)
    out = M(x, 0.002)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, X[[3, 17]], atol=1e-12, rtol=0)       # nearest training image
    far = M(x, 1e5)
    torch.testing.assert_close(far, X.mean(0, keepdim=True).expand(2, -1, -1, -1), atol=1e-6, rtol=0)


def test_edm_scalings_limits():
    s = torch.tensor([1e-6, 0.5, 1e6], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_scalings(s, 0.5)
    torch.testing.assert_close(c_skip[0], torch.tensor(1.0, dtype=torch.float64))
    assert c_out[0] < 1e-5 and c_skip[2] < 1e-12
    torch.testing.assert_close(c_out[2], torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(c_in[2] * s[2], torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(c_in[0], torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(c_noise, s.log() / 4)
    torch.testing.assert_close(c_skip[1], torch.tensor(0.5, dtype=torch.float64))
    # the loss weight (sigma^2 + sd^2)/(sigma sd)^2 is 1 / c_out^2: unit effective weight on F
    torch.testing.assert_close((s ** 2 + 0.25) / (s * 0.5) ** 2, 1 / c_out ** 2)


def test_fresh_edm_network_returns_skip_term():
    """The UNet's output layer starts at zero, so D(x; sigma) = c_skip x exactly."""
    D = EDMDenoiser(gd.networks.UNet(1, 8, 8, (1, 2), seed=0))
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    torch.testing.assert_close(D(x, sigma), x * (0.25 / (sigma.double() ** 2 + 0.25)).view(-1, 1, 1, 1))


# ------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def all_denoisers():
    X = _data(n=20)
    return {"gaussian": GaussianDenoiser.from_data(X), "empirical": EmpiricalDenoiser(X),
            "network": EDMDenoiser(gd.networks.UNet(1, 8, 4, (1, 2), seed=0))}


@pytest.mark.parametrize("kind", ["gaussian", "empirical", "network"])
def test_wrong_rank_input(all_denoisers, kind):
    with pytest.raises(ValueError, match=r"must have 4 dimensions \[B, C, H, W\], got shape \(1, 4, 4\)"):
        all_denoisers[kind](torch.zeros(1, 4, 4), 1.0)


@pytest.mark.parametrize("kind", ["gaussian", "empirical", "network"])
def test_wrong_channel_count(all_denoisers, kind):
    with pytest.raises(ValueError, match=r"expects images shaped \[B, 1, 4, 4\] \(d = 16\), got \(2, 3, 4, 4\)"):
        all_denoisers[kind](torch.zeros(2, 3, 4, 4), 1.0)


@pytest.mark.parametrize("kind", ["gaussian", "empirical", "network"])
def test_dimension_mismatch(all_denoisers, kind):
    with pytest.raises(ValueError, match=r"expects images shaped \[B, 1, 4, 4\].*got \(2, 1, 8, 8\)"):
        all_denoisers[kind](torch.zeros(2, 1, 8, 8), 1.0)


@pytest.mark.parametrize("kind", ["gaussian", "empirical", "network"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input(all_denoisers, kind, bad):
    x = torch.zeros(2, 1, 4, 4)
    x[1, 0, 2, 2] = bad
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite values"):
        all_denoisers[kind](x, 1.0)


@pytest.mark.parametrize("kind", ["gaussian", "empirical", "network"])
@pytest.mark.parametrize("sigma", [0.0, -1.0, torch.tensor([1.0, -0.5])])
def test_non_positive_sigma(all_denoisers, kind, sigma):
    with pytest.raises(ValueError, match="sigma must be > 0"):
        all_denoisers[kind](torch.zeros(2, 1, 4, 4), sigma)


@pytest.mark.parametrize("kind", ["gaussian", "empirical", "network"])
@pytest.mark.parametrize("sigma", [float("nan"), float("inf")])
def test_non_finite_sigma(all_denoisers, kind, sigma):
    with pytest.raises(ValueError, match="sigma must be finite"):
        all_denoisers[kind](torch.zeros(2, 1, 4, 4), sigma)


def test_sigma_batch_mismatch(all_denoisers):
    with pytest.raises(ValueError, match=r"sigma must be a float or a tensor of shape \[2\], got shape \(3,\)"):
        all_denoisers["gaussian"](torch.zeros(2, 1, 4, 4), torch.ones(3))


@pytest.mark.parametrize("cls", [GaussianDenoiser.from_data, EmpiricalDenoiser])
def test_empty_dataset(cls):
    with pytest.raises(ValueError, match=r"X is an empty dataset \(0 images\)"):
        cls(torch.zeros(0, 1, 4, 4))


def test_unet_rejects_bad_resolution():
    with pytest.raises(ValueError, match="resolution 6 must be a positive multiple of 4"):
        gd.networks.UNet(1, 8, 6, (1, 2, 2))


# ------------------------------------------------------------------ fault injection: precision and sigma
def test_half_precision_empirical_denoiser_is_finite_at_the_paper_s_smallest_sigma():
    """Stored in float16, the multi-delta denoiser used to return NaN at sigma <= 0.01 (the logits overflow);
    it now computes in float32 and agrees with float64 to float16's storage precision."""
    X = _data(n=50)
    x = X[:4] + 0.002 * torch.randn(X[:4].shape, generator=torch.Generator().manual_seed(0))
    M16, M64 = EmpiricalDenoiser(X, dtype=torch.float16), EmpiricalDenoiser(X)
    for sigma in (0.002, 0.01, 1.0, 80.0):
        out = M16(x, sigma)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, M64(x, sigma), rtol=0, atol=2e-3)


@pytest.mark.parametrize("make, sigma, dtype", [
    (lambda X: EmpiricalDenoiser(X, dtype=torch.float32), 1e-30, "float32"),
    (lambda X: GaussianDenoiser.from_data(X), 1e-200, "float64"),
    (lambda X: EmpiricalDenoiser(X), 1e-200, "float64"),
])
def test_sigma_that_underflows_is_refused(make, sigma, dtype):
    X = _data(n=20)
    with pytest.raises(ValueError, match=f"sigma = {sigma:g} is too small for torch.{dtype}: sigma\\^2 underflows"):
        make(X)(X[:2], sigma)


def test_sigma_as_a_string_is_refused(all_denoisers):
    for D in all_denoisers.values():
        with pytest.raises(TypeError, match="got the string '1.5'"):
            D(torch.zeros(1, *D.shape), "1.5")


@pytest.mark.parametrize("arch", ["unet", "vit"])
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-6), (torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_network_denoisers_convert_to_other_precisions(arch, dtype, atol):
    """The noise embedding used to be hard-coded float32, so .double() or .to(bfloat16) failed inside torch."""
    net = gd.networks.UNet(1, 8, 8, (1, 2), seed=0) if arch == "unet" else gd.networks.ViT(1, 8, 16, 2, heads=2, seed=0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = EDMDenoiser(net)(x, 1.5)
    out = EDMDenoiser(net).to(dtype)(x, 1.5)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=0, atol=atol)


def test_pixel_values_and_unit_range_data_are_caught():
    X = gd.data.load("digits", n=20, seed=0)
    pixels = ((X + 1) * 127.5).round()
    for fit in (GaussianDenoiser.from_data, EmpiricalDenoiser,
                lambda d: gd.training.train(gd.networks.UNet(1, 8, 8, (1, 2), seed=0), d, steps=1, progress=False)):
        with pytest.raises(ValueError, match=r"holds pixel values 0 \.\.\. 255; gaussdiff expects images scaled to "
                                             r"\[-1, 1\].*X / 127.5 - 1"):
            fit(pixels)
        with pytest.warns(UserWarning, match=r"lies in \[0, 1\].*x \* 2 - 1"):
            fit((X + 1) / 2)
    with warnings.catch_warnings():  # the book's own scaling passes in silence
        warnings.simplefilter("error")
        GaussianDenoiser.from_data(X)


def test_gaussian_rank_is_the_data_s_rank():
    """One image used to report rank 256 (all zero eigenvalues kept); N images span at most N - 1 directions."""
    for n, want in ((1, 0), (2, 1), (5, 4), (400, 16)):
        G = GaussianDenoiser.from_data(_data(n=n))
        assert G.rank == want, (n, G.rank)
        assert G.eigenvectors.shape == (16, want)
    one = GaussianDenoiser.from_data(_data(n=1))
    x = _data(3, seed=2)
    torch.testing.assert_close(one(x, 0.5), one.mean.reshape(1, 1, 4, 4).expand(3, -1, -1, -1))
    # dropping the zero-variance components changes nothing: compare with the Wiener solve on the full covariance
    X = _data(n=5)
    G = GaussianDenoiser.from_data(X)
    Y = X.reshape(5, -1).double()
    cov = (Y - Y.mean(0)).T @ (Y - Y.mean(0)) / 5
    xf = x.reshape(3, -1).double()
    want = Y.mean(0) + (xf - Y.mean(0)) @ torch.linalg.solve(cov + 0.7 ** 2 * torch.eye(16, dtype=torch.float64), cov)
    torch.testing.assert_close(G(x.double(), 0.7).reshape(3, -1), want, atol=1e-10, rtol=0)
    assert GaussianDenoiser.from_data(X, rank=8).rank == 8          # an explicit rank is kept as asked
    full = torch.linalg.eigvalsh(cov).flip(0)
    torch.testing.assert_close(G.spectrum(), full.clamp_min(0) * (full > 1e-12), atol=1e-12, rtol=0)
    kept = X.clone()
    GaussianDenoiser.statistics(X, chunk_size=2)                    # float64 data: the centring works on copies
    assert torch.equal(X, kept)


@pytest.mark.parametrize("convert, dtype", [(lambda m: m.half(), torch.float16), (lambda m: m.bfloat16(), torch.bfloat16),
                                            (lambda m: m.to(torch.float16), torch.float16),
                                            (lambda m: m.float(), torch.float32), (lambda m: m.double(), torch.float64)])
def test_gaussian_converted_to_another_dtype_keeps_float64_statistics(convert, dtype):
    """.half() used to cast the eigenvectors to float16, and the filter then failed inside torch (float64 x half)."""
    G = GaussianDenoiser.from_data(_data(n=400))
    x = _data(3, seed=5)
    ref = G(x.double(), 0.3)
    H = convert(G)
    assert H.mean.dtype == H.eigenvectors.dtype == H.eigenvalues.dtype == torch.float64
    out = H(x.to(dtype), 0.3)
    assert out.dtype == dtype
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=0)
