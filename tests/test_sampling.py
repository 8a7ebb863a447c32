"""Schedule, latents, samplers and the closed-form Gaussian trajectory against exact references."""
import pytest
import torch

import gaussdiff_lib as gd
from gaussdiff_lib.denoisers import EDMDenoiser, GaussianDenoiser

PAPER_LEVELS = [80.0, 42.4152, 21.1087, 9.7232, 4.0661, 1.5017, 0.4700, 0.11664, 0.020435, 0.002]


def test_edm_sigmas_match_paper_levels():
    s = gd.sampling.edm_sigmas(10)
    assert s.dtype == torch.float64 and s.shape == (11,)
    assert s[-1] == 0
    for got, want in zip(s[:-1].tolist(), PAPER_LEVELS):
        assert got == pytest.approx(want, rel=2e-4)
    assert s[0] == 80.0 and s[9] == pytest.approx(0.002, rel=1e-12)
    assert gd.sampling.edm_sigmas(40).shape == (41,)


@pytest.mark.parametrize("args, msg", [((0,), "n must be a positive integer"),
                                       ((10, 1.0, 0.5), "sigma_min < sigma_max")])
def test_edm_sigmas_errors(args, msg):
    with pytest.raises(ValueError, match=msg):
        gd.sampling.edm_sigmas(*args)


def test_latents_are_per_seed():
    z = gd.sampling.latents(range(5), (1, 4, 4))
    assert z.dtype == torch.float64 and z.shape == (5, 1, 4, 4)
    for i in range(5):
        torch.testing.assert_close(z[i], gd.sampling.latents([i], (1, 4, 4))[0])
    torch.testing.assert_close(gd.sampling.latents([3, 1], (1, 4, 4)), z[[3, 1]])
    with pytest.raises(ValueError, match="at least one seed"):
        gd.sampling.latents([], (1, 4, 4))


@pytest.fixture(scope="module")
def digits_gaussian():
    X = gd.data.load("digits")
    return X, GaussianDenoiser.from_data(X)


@pytest.mark.parametrize("n_train", [None, 20])   # full rank, and N < d (rank-deficient)
def test_closed_form_matches_many_step_heun(n_train):
    X = gd.data.load("digits", n=n_train, seed=0)
    G = GaussianDenoiser.from_data(X)
    z = gd.sampling.latents(range(8), (1, 8, 8))
    # Both solve the ODE from sigma = 80 to sigma_min = 0.002 (no trailing zero: the step to 0 is a
    # convention, x -> D(x; sigma_min), not an ODE step).
    ref = gd.sampling.heun(G, z, gd.sampling.edm_sigmas(500)[:-1])
    exact = gd.sampling.gaussian_closed_form(G, z, gd.sampling.edm_sigmas(10)[:-1])
    assert (exact - ref).abs().max() < 1e-3
    coarse = gd.sampling.euler(G, z, gd.sampling.edm_sigmas(10)[:-1])
    assert (coarse - ref).abs().max() > 1e-2      # 10 Euler steps are not exact: the test can tell
    # to sigma = 0 the two differ only by that last convention step, in directions with lambda ~ sigma_min^2
    to_zero = gd.sampling.gaussian_closed_form(G, z, gd.sampling.edm_sigmas(10))
    assert (to_zero - gd.sampling.heun(G, z, gd.sampling.edm_sigmas(500))).abs().max() < 5e-3


def test_gaussian_trajectory_endpoints_and_ode(digits_gaussian):
    X, G = digits_gaussian
    z = gd.sampling.latents(range(4), (1, 8, 8))
    sig = gd.sampling.edm_sigmas(20)
    states = gd.sampling.gaussian_trajectory(G, z, sig)
    assert states.shape == (21, 4, 1, 8, 8)
    torch.testing.assert_close(states[0], z * 80.0)
    # probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma, checked by central differences
    h = 1e-4
    for s in (20.0, 1.0, 0.05):
        near = gd.sampling.gaussian_trajectory(G, z, torch.tensor([80.0, s + h, s, s - h], dtype=torch.float64))
        deriv = (near[1] - near[3]) / (2 * h)
        torch.testing.assert_close(deriv, (near[2] - G(near[2], s)) / s, atol=1e-5, rtol=1e-5)


def test_euler_callback_and_start(digits_gaussian):
    _, G = digits_gaussian
    z = gd.sampling.latents(range(3), (1, 8, 8))
    sig = gd.sampling.edm_sigmas(10)
    rec = gd.sampling.Recorder()
    out = gd.sampling.euler(G, z, sig, callback=rec)
    assert rec.sigmas == pytest.approx(sig[:-1].tolist())
    torch.testing.assert_close(rec.x[0], z * 80.0)
    assert rec.denoised.shape == (10, 3, 1, 8, 8)
    torch.testing.assert_close(out, rec.denoised[-1])   # the last step to sigma = 0 lands on D(x; 0.002)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_recorder_sees_the_whole_batch_when_the_denoiser_gets_pieces(digits_gaussian, sampler):
    """With batch_size set the callback still gets one call per step holding every image, in order; the denoiser
    itself never sees more than batch_size images at once."""
    _, G = digits_gaussian
    seen = []

    def D(x, sigma):
        seen.append(x.shape[0])
        return G(x, sigma)

    z = gd.sampling.latents(range(7), (1, 8, 8))
    sig = gd.sampling.edm_sigmas(5)
    whole, pieces = gd.sampling.Recorder(), gd.sampling.Recorder()
    out_whole = gd.sampling.sample(sampler, G, z, sig, callback=whole)
    out_pieces = gd.sampling.sample(sampler, D, z, sig, callback=pieces, batch_size=3)
    assert max(seen) == 3 and pieces.sigmas == whole.sigmas
    assert pieces.x.shape == whole.x.shape == (5, 7, 1, 8, 8)
    torch.testing.assert_close(pieces.x, whole.x, rtol=0, atol=1e-12)
    torch.testing.assert_close(pieces.denoised, whole.denoised, rtol=0, atol=1e-12)
    torch.testing.assert_close(out_pieces, out_whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_sample_does_not_depend_on_batch_size(sampler):
    D = EDMDenoiser(gd.networks.UNet(1, 8, 8, (1, 2), seed=0))
    with torch.no_grad():  # give the zero-initialised output layer some weights
        D.net.conv_out.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    z = gd.sampling.latents(range(6), (1, 8, 8))
    sig = gd.sampling.edm_sigmas(6)
    with torch.no_grad():
        whole = gd.sampling.sample(sampler, D, z, sig)
        pieces = gd.sampling.sample(sampler, D, z, sig, batch_size=4)
        single = gd.sampling.sample(sampler, D, z[4:5], sig)
    torch.testing.assert_close(whole, pieces, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole[4:5], single, atol=1e-5, rtol=1e-5)


def test_unknown_sampler_and_bad_schedules(digits_gaussian):
    _, G = digits_gaussian
    z = gd.sampling.latents([0], (1, 8, 8))
    with pytest.raises(ValueError, match=r"unknown sampler 'rk4'; choose one of \['euler', 'heun'\]"):
        gd.sampling.sample("rk4", G, z, gd.sampling.edm_sigmas(4))
    with pytest.raises(ValueError, match="must decrease strictly"):
        gd.sampling.euler(G, z, [1.0, 2.0, 0.0])
    with pytest.raises(ValueError, match="> 0 except possibly the last"):
        gd.sampling.euler(G, z, [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="do not match the Gaussian model's images"):
        gd.sampling.gaussian_closed_form(G, gd.sampling.latents([0], (1, 4, 4)), gd.sampling.edm_sigmas(4))
