"""Oracle tests of gd.adapters: diffusers noise predictors as denoisers D(x, sigma), and as_denoiser's dispatch.

The oracle is a network that knows the answer: OracleNet(x_t, t) reads the noise level of timestep t from the DDPM
schedule, undoes the variance-preserving scaling, applies the exact Gaussian denoiser D_G and returns what a perfect
network would predict (epsilon, v or the sample), all written from the equations, not with the adapter's code.
Through the adapter it must give back D_G(x, sigma) itself.
"""
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import gaussdiff_lib as gd
from gaussdiff_lib.adapters import DiffusersDenoiser, as_denoiser

from conftest import devices

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("epsilon", "v_prediction", "sample")
T_GRID = (0, 10, 100, 500, 999)


def _ddpm_alphas_cumprod():
    """The DDPM paper's schedule (Ho et al. 2020): 1000 steps, beta linear from 1e-4 to 0.02, abar_t = prod(1 - beta),
    in float32 as diffusers stores it."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32), 0)


def _scheduler(source, kind):
    """diffusers' DDPMScheduler (default: 1000 linear steps), or a plain object with the same two attributes."""
    if source == "diffusers":
        diffusers = pytest.importorskip("diffusers")
        return diffusers.DDPMScheduler(prediction_type=kind)
    return types.SimpleNamespace(alphas_cumprod=_ddpm_alphas_cumprod(),
                                 config=types.SimpleNamespace(prediction_type=kind))


class OracleNet(nn.Module):
    """A perfect network for the Gaussian model D_G: sigma_t from the schedule (fractional t: log sigma linear between
    the neighbouring integer timesteps), x = x_t sqrt(1 + sigma_t^2), y = D_G(x, sigma_t), then
    epsilon = (x - y) / sigma_t, v = a epsilon - b y (a = 1/sqrt(1 + sigma_t^2), b = sigma_t a) or y itself.
    It computes in float64 so that the only rounding measured is the adapter's, and returns x_t's dtype, as a
    network would."""

    def __init__(self, D, alphas_cumprod, kind):
        super().__init__()
        self.D, self.kind = D, kind
        self.abar = torch.as_tensor(alphas_cumprod).double()
        self.seen_t = None

    def sigma_of(self, t):
        abar = self.abar.to(t.device)
        t = t.double().reshape(-1)
        k = t.floor().long().clamp(0, len(abar) - 2)
        f = t - k
        log_sig = lambda i: 0.5 * torch.log((1 - abar[i]) / abar[i])          # noqa: E731
        return torch.exp((1 - f) * log_sig(k) + f * log_sig(k + 1))

    def forward(self, x_t, t):
        self.seen_t = t
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        s = self.sigma_of(t)
        s4 = s.view(-1, 1, 1, 1)
        x = x_t.double() * torch.sqrt(1 + s4 ** 2)
        y = self.D(x, s)
        eps = (x - y) / s4
        a, b = 1 / torch.sqrt(1 + s4 ** 2), s4 / torch.sqrt(1 + s4 ** 2)
        out = {"epsilon": eps, "v_prediction": a * eps - b * y, "sample": y}[self.kind]
        return out.to(x_t.dtype)


@pytest.fixture(scope="module")
def gaussian():
    X = gd.data.load("digits", resolution=8, n=256)
    return X, gd.denoisers.GaussianDenoiser.from_data(X)


def _noisy(X, sigma, dtype=torch.float64, device="cpu", seed=0):
    """16 digits y with noise: x = y + sigma eps (sigma a float or a [16] tensor), in float64 then cast."""
    g = torch.Generator().manual_seed(seed)
    y = X[:16].double()
    s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1, 1)
    return (y + s * torch.randn(y.shape, generator=g, dtype=torch.float64)).to(dtype).to(device)


def _tolerance(x):
    """Rounding of x's dtype at the scale of the noisy input (|x| reaches 650 at sigma(999) = 157): ~10 ulps."""
    ulp = torch.finfo(x.dtype).eps
    return 10 * ulp * max(1.0, x.abs().max().item())


# ----------------------------------------------------------------------------------------- the D_G oracle
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("source", ["diffusers", "by hand"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_perfect_network_gives_back_the_gaussian_denoiser(gaussian, kind, source, dtype, device):
    X, DG = gaussian
    sched = _scheduler(source, kind)
    D = DiffusersDenoiser.from_scheduler(OracleNet(DG, sched.alphas_cumprod, kind), sched)
    sigmas = D.sigmas
    for t in T_GRID:                                   # sigma = sigma(t): the nearest timestep is t itself
        x = _noisy(X, sigmas[t].item(), dtype, device)
        out = D(x, sigmas[t].item())
        assert out.dtype == dtype and out.device.type == device and out.shape == x.shape
        assert D.net.seen_t.tolist() == [t] * 16 and D.net.seen_t.dtype == torch.int64
        err = (out.double().cpu() - DG(x.double().cpu(), sigmas[t].item())).abs().max().item()
        assert err <= _tolerance(x), (kind, t, err)
    # a [B] tensor of levels: each image its own timestep
    t_each = torch.tensor(T_GRID * 4)[:16]
    s_each = sigmas[t_each]
    x = _noisy(X, s_each, dtype, device)
    out = D(x, s_each.to(dtype))
    assert torch.equal(D.net.seen_t.cpu(), t_each)
    err = (out.double().cpu() - DG(x.double().cpu(), s_each)).abs().max().item()
    assert err <= _tolerance(x), (kind, err)


@pytest.mark.parametrize("kind", KINDS)
def test_between_timesteps_interpolate_is_exact_and_nearest_is_not(gaussian, kind):
    """sigma 30% of the way (in log sigma) from sigma(t) to sigma(t+1): a fractional timestep t + 0.3 gives the
    network the exact level, the nearest integer one does not, and the oracle's error shows it."""
    X, DG = gaussian
    abar = _ddpm_alphas_cumprod()
    net = OracleNet(DG, abar, kind)
    errors = {}
    for t in (10, 100, 500):
        lo, hi = (math.sqrt((1 - abar[i].item()) / abar[i].item()) for i in (t, t + 1))
        sigma = math.exp(0.7 * math.log(lo) + 0.3 * math.log(hi))
        x = _noisy(X, sigma, torch.float32)
        ref = DG(x.double(), sigma)
        for mode in ("interpolate", "nearest"):
            D = DiffusersDenoiser(net, abar, kind, timestep=mode)
            errors[mode, t] = (D(x, sigma).double() - ref).abs().max().item()
            assert D.timestep(sigma).item() == pytest.approx(t + 0.3 if mode == "interpolate" else t, abs=1e-4)
        assert errors["interpolate", t] <= _tolerance(x), errors
        assert errors["nearest", t] > 30 * _tolerance(x), errors         # the test can fail: wrong level, caught


# ----------------------------------------------------------------------------------------- sigma <-> t
def test_sigma_of_t_agrees_with_the_scheduler_s_add_noise():
    """x_t = add_noise(y, eps, t) is sqrt(abar_t) (y + sigma(t) eps): the adapter's sigmas are the scheduler's."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler()
    D = DiffusersDenoiser.from_scheduler(nn.Identity(), sched)
    g = torch.Generator().manual_seed(1)
    y = torch.rand(5, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 777, 999])
    x_t = sched.add_noise(y, eps, t)
    root = sched.alphas_cumprod.double()[t].sqrt().view(-1, 1, 1, 1)
    ve = y + D.sigmas[t].view(-1, 1, 1, 1) * eps
    assert (x_t / root - ve).abs().max().item() <= 1e-12 * ve.abs().max().item()
    assert torch.equal(D.alphas_cumprod, sched.alphas_cumprod.double())
    assert torch.equal(sched.alphas_cumprod, _ddpm_alphas_cumprod())   # the by-hand schedule is diffusers' default


def test_nearest_is_the_argmin_in_log_sigma_and_interpolate_inverts_the_oracle():
    """Brute force over all 1000 timesteps (log-uniform sigma from a tenth of sigma_min to ten times sigma_max, so
    the ends are clamped), and the oracle's own sigma(t) read back at the fractional timesteps."""
    abar = _ddpm_alphas_cumprod()
    nearest = DiffusersDenoiser(nn.Identity(), abar, "epsilon", timestep="nearest")
    interp = DiffusersDenoiser(nn.Identity(), abar, "epsilon", timestep="interpolate")
    log_sig = 0.5 * torch.log((1 - abar.double()) / abar.double())
    g = torch.Generator().manual_seed(2)
    sigma = torch.exp(torch.empty(2000, dtype=torch.float64).uniform_(log_sig[0].item() - 2.3,
                                                                      log_sig[-1].item() + 2.3, generator=g))
    brute = (sigma.log()[:, None] - log_sig[None, :]).abs().argmin(1)
    got = nearest.timestep(sigma)
    assert got.dtype == torch.int64 and torch.equal(got, brute)
    assert torch.equal(nearest.timestep(nearest.sigmas), torch.arange(1000))     # exact on the grid
    assert torch.equal(interp.timestep(interp.sigmas), torch.arange(1000, dtype=torch.float32))
    inside = sigma[(sigma >= nearest.sigma_min) & (sigma <= nearest.sigma_max)]
    t = interp.timestep(inside)
    assert t.dtype == torch.float32 and ((t > 0) & (t < 999)).all()
    back = OracleNet(None, abar, "sample").sigma_of(t)
    assert ((back / inside).log().abs().max().item()) < 1e-5            # float32 timesteps: ~1e-7 relative
    # the ends: sigma = 0 and below sigma_min get t = 0, above sigma_max t = T - 1
    assert nearest.sigma_min == pytest.approx(0.01, rel=1e-3) and nearest.sigma_max == pytest.approx(157.4, rel=1e-3)
    for D in (nearest, interp):
        assert D.timestep(0.0).item() == 0 and D.timestep(1e-6).item() == 0 and D.timestep(1e4).item() == 999


def test_sigma_zero_returns_the_input_and_the_levels_go_per_image(gaussian):
    X, DG = gaussian
    abar = _ddpm_alphas_cumprod()
    for kind in ("epsilon", "v_prediction"):
        D = DiffusersDenoiser(OracleNet(DG, abar, kind), abar, kind)
        x = _noisy(X, 0.5)
        assert torch.equal(D(x, 0.0), x)
        assert torch.equal(D.net.seen_t, torch.zeros(16, dtype=torch.int64))
    D = DiffusersDenoiser(OracleNet(DG, abar, "epsilon"), abar, "epsilon")
    x = _noisy(X, 0.5)
    for sigma in (torch.tensor(0.5), torch.tensor([0.5]), 0.5):       # a 0-d or [1] tensor is one level for all
        assert torch.equal(D(x, sigma), D(x, torch.full((16,), 0.5)))


# ----------------------------------------------------------------------------------------- fault injection
@pytest.mark.parametrize("net_kind, claimed", [("v_prediction", "epsilon"), ("epsilon", "v_prediction"),
                                               ("epsilon", "sample"), ("sample", "v_prediction"),
                                               ("v_prediction", "sample"), ("sample", "epsilon")])
def test_a_wrong_conversion_is_caught_by_the_oracle(gaussian, net_kind, claimed):
    """The oracle test's tolerance is far below the error of reading a prediction as the wrong kind."""
    X, DG = gaussian
    abar = _ddpm_alphas_cumprod()
    D = DiffusersDenoiser(OracleNet(DG, abar, net_kind), abar, claimed)
    for t in (10, 100, 500):
        sigma = D.sigmas[t].item()
        x = _noisy(X, sigma, torch.float32)
        err = (D(x, sigma).double() - DG(x.double(), sigma)).abs().max().item()
        assert err > 1e3 * _tolerance(x), (net_kind, claimed, t, err)


def test_a_wrong_schedule_is_caught_by_the_oracle(gaussian):
    """A network trained on the linear schedule, wrapped with the cosine one: sigma(t) disagrees, D_G does not."""
    X, DG = gaussian
    abar = _ddpm_alphas_cumprod()
    steps = torch.arange(1001, dtype=torch.float64) / 1000
    f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
    cosine = (f[1:] / f[0]).clamp_min(1e-6)            # Nichol & Dhariwal's cosine abar, written out
    D = DiffusersDenoiser(OracleNet(DG, abar, "epsilon"), cosine, "epsilon")
    x = _noisy(X, 0.5, torch.float32)
    err = (D(x, 0.5).double() - DG(x.double(), 0.5)).abs().max().item()
    assert err > 1e3 * _tolerance(x), err


# ----------------------------------------------------------------------------------------- a real UNet2DModel
@pytest.fixture(scope="module")
def tiny_unet():
    """A randomly initialised UNet2DModel on 8x8 images. Its convolutions are so small that a second thread only
    waits: on a loaded machine a forward pass takes ~1 s with two threads and ~10 ms with one, so these tests run
    single-threaded (restored afterwards)."""
    diffusers = pytest.importorskip("diffusers")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()
    yield diffusers, unet
    torch.set_num_threads(threads)


def test_a_tiny_unet_saved_as_a_pipeline_loads_and_denoises(tiny_unet, tmp_path):
    diffusers, unet = tiny_unet
    sched = diffusers.DDPMScheduler(prediction_type="v_prediction")
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path)
    memory = DiffusersDenoiser.from_scheduler(unet, sched)
    loaded = DiffusersDenoiser.from_pretrained(tmp_path)
    dispatched = as_denoiser(str(tmp_path))
    assert isinstance(dispatched, DiffusersDenoiser) and loaded.prediction_type == "v_prediction"
    assert loaded.source == str(tmp_path) and not any(p.requires_grad for p in loaded.parameters())
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    s = torch.tensor([0.05, 1.5, 60.0])
    with torch.no_grad():
        for sigma in (1.5, s):
            out = loaded(x, sigma)
            assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
            assert torch.equal(out, memory(x, sigma)) and torch.equal(out, dispatched(x, sigma))
        # by hand: the UNet at the brute-force nearest timestep on x / sqrt(1 + sigma^2), then a x_t - b v
        t = (s.double().log()[:, None] - memory.sigmas.log()[None, :]).abs().argmin(1)
        a = (1 / torch.sqrt(1 + s.double() ** 2)).float().view(-1, 1, 1, 1)
        b = (s.double() / torch.sqrt(1 + s.double() ** 2)).float().view(-1, 1, 1, 1)
        v = unet(a * x, t).sample
        torch.testing.assert_close(memory(x, s), a * a * x - b * v, rtol=1e-5, atol=1e-6)
    # autograd is the caller's: gradients reach x
    xg = x.clone().requires_grad_(True)
    memory(xg, 1.5).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    # the pipeline object itself
    assert torch.equal(as_denoiser(diffusers.DDPMPipeline(unet=unet, scheduler=sched))(x, s).detach(),
                       memory(x, s).detach())


def test_a_unet_folder_needs_its_scheduler(tiny_unet, tmp_path):
    diffusers, unet = tiny_unet
    unet.save_pretrained(tmp_path / "unet_only")
    sched = diffusers.DDPMScheduler()
    sched.save_pretrained(tmp_path / "sched")
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    ref = DiffusersDenoiser.from_scheduler(unet, sched)(x, 2.0).detach()
    for scheduler in (tmp_path / "sched", str(tmp_path / "sched"), sched):
        D = DiffusersDenoiser.from_pretrained(tmp_path / "unet_only", scheduler=scheduler)
        assert torch.equal(D(x, 2.0).detach(), ref)
    assert torch.equal(as_denoiser(str(tmp_path / "unet_only"), scheduler=sched)(x, 2.0).detach(), ref)
    assert torch.equal(as_denoiser(unet, scheduler=sched, timestep="nearest")(x, 2.0).detach(), ref)
    with pytest.raises(FileNotFoundError, match=r"has no scheduler/scheduler_config.json; pass scheduler="):
        as_denoiser(str(tmp_path / "unet_only"))
    with pytest.raises(FileNotFoundError, match=r"holds no scheduler_config.json"):
        DiffusersDenoiser.from_pretrained(tmp_path / "unet_only", scheduler=tmp_path)
    with pytest.raises(ValueError, match=r"is a diffusers network, called as net\(x_t, t\).*from_scheduler"):
        as_denoiser(unet)
    with pytest.raises(ValueError, match=r"the network takes images with 1 channels, got x shaped \(2, 3, 8, 8\)"):
        DiffusersDenoiser.from_scheduler(unet, sched)(torch.zeros(2, 3, 8, 8), 1.0)


# ----------------------------------------------------------------------------------------- as_denoiser
def test_as_denoiser_returns_a_denoiser_unchanged_and_loads_edm_files(gaussian, tmp_path, monkeypatch):
    _, DG = gaussian
    assert as_denoiser(DG) is DG

    def k_diffusion_style(x, sigma):                 # model(x, sigma) -> x0
        return x / (1 + sigma ** 2)

    assert as_denoiser(k_diffusion_style) is k_diffusion_style
    from gaussdiff_lib.edm_networks import build_songunet

    net = build_songunet("ddpmpp", 1, 8, 8, (1, 2), 1, attn_resolutions=(4,), seed=3)
    edm = gd.denoisers.EDMDenoiser(net.eval())
    edm.edm_info = {"precond": {"kind": "edm", "sigma_data": 0.5},        # what load_edm records, for the export
                    "model_kwargs": {k: v for k, v in net.config.items() if k not in ("arch", "seed")}}
    path = gd.checkpoints.export_state_dict(edm, tmp_path / "net.pt")
    loaded = as_denoiser(str(path))
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 1.0), edm(x, 1.0))
    calls = []
    monkeypatch.setattr(gd.checkpoints, "load_edm", lambda path, **kw: calls.append((path, kw)) or DG)
    url = gd.checkpoints.EDM_URL + "edm-cifar10-32x32-uncond-vp.pkl?raw=1"
    assert as_denoiser(url, device="cpu") is DG and calls == [(url, {"device": "cpu"})]


@pytest.mark.parametrize("model, error, match", [
    (42, ValueError, r"as_denoiser got int; it accepts a denoiser called as model\(x, sigma\)"),
    (lambda x: x, ValueError, r"cannot be called as model\(x, sigma\)"),
    ("https://example.org/model.safetensors", ValueError, "ends in neither .pkl nor .pt"),
    ("{tmp}/nope", FileNotFoundError, "does not exist; as_denoiser accepts"),
    ("{tmp}", ValueError, "is not a model as_denoiser reads; it accepts .*save_pretrained folder"),
])
def test_as_denoiser_says_what_it_accepts(tmp_path, model, error, match):
    if isinstance(model, str):
        model = model.format(tmp=tmp_path)
    with pytest.raises(error, match=match):
        as_denoiser(model)
    with pytest.raises(TypeError, match=r"takes options \(device\) only with a path"):
        as_denoiser(lambda x, sigma: x, device="cpu")


# ----------------------------------------------------------------------------------------- errors
def test_clear_errors(gaussian, tmp_path):
    _, DG = gaussian
    abar = _ddpm_alphas_cumprod()
    with pytest.raises(ValueError, match=r"unknown prediction_type 'eps'; choose one of 'epsilon', 'v_prediction', "
                                         r"'sample'"):
        DiffusersDenoiser(nn.Identity(), abar, "eps")
    with pytest.raises(ValueError, match=r"unknown timestep mode 'round'"):
        DiffusersDenoiser(nn.Identity(), abar, timestep="round")
    with pytest.raises(ValueError, match=r"non-increasing in t .* rises at t = 1"):
        DiffusersDenoiser(nn.Identity(), abar.flip(0))
    with pytest.raises(ValueError, match=r"alphas_cumprod must lie in \(0, 1\], got values up to 157.4\d*; .*"
                                         r"abar = 1 / \(1 \+ sigma\^2\)"):
        DiffusersDenoiser(nn.Identity(), ((1 - abar) / abar).sqrt())          # sigmas passed by mistake
    with pytest.raises(ValueError, match=r"alphas_cumprod must lie in \(0, 1\], got values down to 0; "
                                         r"a zero-terminal-SNR .*\(alphas_cumprod\[:-1\]\)"):
        DiffusersDenoiser(nn.Identity(), torch.cat([abar, torch.zeros(1)]))
    with pytest.raises(ValueError, match=r"non-empty 1-D tensor"):
        DiffusersDenoiser(nn.Identity(), abar.view(10, 100))
    with pytest.raises(ValueError, match=r"has no alphas_cumprod"):
        DiffusersDenoiser.from_scheduler(nn.Identity(), object())
    D = DiffusersDenoiser(OracleNet(DG, abar, "epsilon"), abar)
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"sigma must be >= 0 .* got -0.1"):
        D(x, -0.1)
    with pytest.raises(ValueError, match=r"sigma must be >= 0 .* got -1"):
        D(x, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"sigma must be finite"):
        D(x, float("nan"))
    with pytest.raises(ValueError, match=r"sigma must be a float or a tensor of shape \[2\]"):
        D(x, torch.ones(3))
    with pytest.raises(ValueError, match=r"x must have 4 dimensions \[B, C, H, W\], got shape \(1, 8, 8\)"):
        D(x[0], 1.0)
    bad = DiffusersDenoiser(lambda x_t, t: x_t[:, :, :4], abar)
    with pytest.raises(ValueError, match=r"the network returned shape \(2, 1, 4, 8\) for input \(2, 1, 8, 8\)"):
        bad(x, 1.0)
    with pytest.raises(FileNotFoundError, match=r"is not a folder; expected a diffusers save_pretrained folder"):
        DiffusersDenoiser.from_pretrained(tmp_path / "missing")


def test_missing_pieces_of_a_folder(tmp_path):
    pytest.importorskip("diffusers")
    with pytest.raises(FileNotFoundError, match=r"holds no network: expected unet/config.json"):
        DiffusersDenoiser.from_pretrained(tmp_path)
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(FileNotFoundError, match=r"config.json but no weights"):
        DiffusersDenoiser.from_pretrained(tmp_path)


def test_without_diffusers_from_pretrained_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)           # import diffusers now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "gaussdiff\[diffusers\]"'):
        DiffusersDenoiser.from_pretrained(tmp_path)


def test_importing_the_library_and_the_adapters_does_not_import_diffusers():
    code = ("import sys, torch, gaussdiff_lib as gd; gd.adapters; gd.adapters.as_denoiser(lambda x, sigma: x); "
            "abar = torch.linspace(0.999, 0.01, 10); D = gd.adapters.DiffusersDenoiser(lambda x_t, t: x_t, abar); "
            "D(torch.zeros(1, 1, 2, 2), 1.0); print('diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", out.stdout
