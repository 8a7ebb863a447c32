"""Preconditionings (EDM and the VE / VP baselines of Karras et al. 2022, Table 1), their training losses, and the
vision transformer used as a denoising autoencoder (claims 2 and 10)."""
import math

import pytest
import torch

import gaussdiff_lib as gd
from gaussdiff_lib import training
from gaussdiff_lib.denoisers import EDMDenoiser, preconditioning, vp_sigma, vp_sigma_inv
from gaussdiff_lib.networks import ViT

S = torch.tensor([0.002, 0.02, 0.47, 1.5, 4.07, 80.0, 100.0], dtype=torch.float64)


def _table1(kind, s, sd=0.5):
    """Table 1 of Karras et al. (2022), each entry written out element by element in plain Python floats."""
    rows = []
    for v in s.tolist():
        if kind == "edm":
            rows.append((sd ** 2 / (v ** 2 + sd ** 2), v * sd / math.sqrt(v ** 2 + sd ** 2),
                         1 / math.sqrt(v ** 2 + sd ** 2), 0.25 * math.log(v)))
        elif kind == "ve":
            rows.append((1.0, v, 1.0, math.log(0.5 * v)))
        else:
            t = (math.sqrt(0.1 ** 2 + 2 * 19.9 * math.log1p(v ** 2)) - 0.1) / 19.9
            rows.append((1.0, -v, 1 / math.sqrt(v ** 2 + 1), 999 * t))
    return [torch.tensor(col, dtype=torch.float64) for col in zip(*rows)]


@pytest.mark.parametrize("kind", ["edm", "ve", "vp"])
def test_preconditioning_is_table_1(kind):
    got = preconditioning(kind, S, sigma_data=0.5)
    for name, a, b in zip(("c_skip", "c_out", "c_in", "c_noise"), got, _table1(kind, S)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=f"{kind} {name}")
    # a float sigma gives the same numbers as a tensor
    for a, b in zip(preconditioning(kind, 1.5), preconditioning(kind, torch.tensor(1.5, dtype=torch.float64))):
        torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), b)


def test_edm_uses_sigma_data_and_the_baselines_do_not():
    a, b = preconditioning("edm", S, 0.5), preconditioning("edm", S, 0.7)
    assert not torch.allclose(a[0], b[0])
    for kind in ("ve", "vp"):
        for x, y in zip(preconditioning(kind, S, 0.5), preconditioning(kind, S, 0.7)):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_vp_schedule_round_trips_and_spans_edm_s_range():
    t = torch.linspace(1e-5, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(vp_sigma_inv(vp_sigma(t)), t, rtol=1e-10, atol=1e-12)
    # EDM's VP baseline: sigma_min = sigma(epsilon_t) ~ 0.001, sigma_max = sigma(1) ~ 152
    assert vp_sigma(1e-5).item() == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9e-10 + 0.1e-5)), rel=1e-9)
    assert vp_sigma(1.0).item() == pytest.approx(math.sqrt(math.exp(0.5 * 19.9 + 0.1) - 1), rel=1e-12)
    assert 152 < vp_sigma(1.0).item() < 153


def test_unknown_preconditioning_names_the_three():
    with pytest.raises(ValueError, match="'edm', 've', 'vp'"):
        preconditioning("iddpm", 1.0)
    with pytest.raises(ValueError, match="unknown preconditioning"):
        EDMDenoiser(gd.networks.UNet(1, 8, 8, (1, 2), seed=0), precond="VE-baseline")
    with pytest.raises(ValueError, match="unknown preconditioning"):
        training.train(gd.networks.UNet(1, 8, 8, (1, 2), seed=0), torch.zeros(4, 1, 8, 8), steps=1,
                       precond="edm2", progress=False)


@pytest.mark.parametrize("kind", ["edm", "ve", "vp"])
def test_network_denoiser_applies_its_preconditioning(kind):
    """D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) against the network called by hand."""
    net = gd.networks.UNet(1, 8, 8, (1, 2), seed=0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    D = EDMDenoiser(net, precond=kind)
    assert D.precond == kind and kind in repr(D)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.01, 1.5, 60.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = (torch.stack([c[i] for i in range(3)]).view(-1, 1, 1, 1)
                                    for c in _table1(kind, sigma))
    with torch.no_grad():
        f = net((c_in * x).float(), c_noise.flatten().float()).double()
    out = D(x, sigma)
    # the network runs in float32, and c_out (60 for VP at sigma = 60) scales its rounding: recover F from D and
    # compare it with the network's own output, then D with the formula within that scaled rounding
    torch.testing.assert_close((out - c_skip * x) / c_out, f, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, c_skip * x + c_out * f, rtol=1e-5, atol=1e-5 * float(c_out.abs().max()))


# ------------------------------------------------------------------------------------------- training

def test_training_sigma_follows_each_distribution():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    ve = training.training_sigma("ve", n, g)
    assert ve.min() >= 0.02 and ve.max() <= 100
    u = (ve.log() - math.log(0.02)) / (math.log(100) - math.log(0.02))  # log-uniform <=> u uniform on [0, 1]
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    vp = training.training_sigma("vp", n, g)
    t = vp_sigma_inv(vp)  # t uniform on [1e-5, 1]
    assert t.min() >= 1e-5 - 1e-12 and t.max() <= 1 + 1e-12
    assert abs(t.mean().item() - (1 + 1e-5) / 2) < 0.005 and abs(t.var().item() - 1 / 12) < 0.002
    edm = training.training_sigma("edm", n, g)
    assert abs(edm.log().mean().item() + 1.2) < 0.02 and abs(edm.log().std().item() - 1.2) < 0.02


@pytest.mark.parametrize("kind", ["edm", "ve", "vp"])
def test_loss_is_the_weighted_denoising_error_by_hand(kind):
    """The loss with D's preconditioning equals lambda(sigma) ||D(y + sigma n) - y||^2 computed from the same draws."""
    net = gd.networks.UNet(1, 8, 8, (1, 2), seed=0)
    D = EDMDenoiser(net, precond=kind)
    y = torch.rand(6, 1, 8, 8) * 2 - 1
    loss = training.edm_loss(D, y, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    if kind == "edm":
        sigma = (torch.randn(6, generator=g, dtype=torch.float64) * 1.2 - 1.2).exp()
        weight = (sigma ** 2 + 0.25) / (0.25 * sigma ** 2)
    else:
        u = torch.rand(6, generator=g, dtype=torch.float64)
        sigma = 0.02 * 5000 ** u if kind == "ve" else vp_sigma(1 + u * (1e-5 - 1))
        weight = 1 / sigma ** 2
    noise = torch.randn((6, 1, 8, 8), generator=g)
    err = (D(y + sigma.float().view(-1, 1, 1, 1) * noise, sigma) - y).square()
    torch.testing.assert_close(loss, (weight.float().view(-1, 1, 1, 1) * err).mean(), rtol=1e-5, atol=0)


def test_baseline_runs_are_their_own_runs_and_reload_with_their_preconditioning(tmp_path):
    X = gd.data.load("digits", n=16, seed=0)
    opts = dict(steps=4, batch_size=8, ema=0, progress=False, checkpoint_every=2)
    edm = training.train(gd.networks.UNet(1, 8, 8, (1, 2), seed=0), X, run_dir=tmp_path / "edm", **opts)
    ve = training.train(gd.networks.UNet(1, 8, 8, (1, 2), seed=0), X, run_dir=tmp_path / "ve", precond="ve", **opts)
    assert edm.precond == "edm" and ve.precond == "ve"
    with pytest.raises(ValueError, match="different run"):  # the same folder cannot hold the other preconditioning
        training.train(gd.networks.UNet(1, 8, 8, (1, 2), seed=0), X, run_dir=tmp_path / "edm", precond="vp", **opts)
    again = training.load_run(tmp_path / "ve")
    assert again.precond == "ve"
    x = X[:3] + 0.3 * torch.randn(X[:3].shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again(x, 0.3), ve(x, 0.3), rtol=0, atol=1e-6)  # memory layouts differ
    # EDM runs keep the keys they had before the baselines existed: no precond entry in their options
    import json
    assert "precond" not in json.loads((tmp_path / "edm" / "options.json").read_text())
    assert json.loads((tmp_path / "ve" / "options.json").read_text())["precond"] == "ve"


# ------------------------------------------------------------------------------------------------ ViT

def test_vit_starts_at_zero_and_is_rebuilt_from_its_config():
    net = ViT(1, 8, width=16, depth=2, heads=2, patch=2, seed=3)
    x = torch.randn(2, 1, 8, 8)
    assert net(x, torch.zeros(2)).abs().max() == 0  # adaLN-Zero and a zero read-out: D = c_skip x at the start
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    out = net(x, torch.tensor([0.1, -1.0]))
    assert out.shape == x.shape and out.abs().max() > 0
    rebuilt = gd.networks.build(net.config, seed=3)
    assert isinstance(rebuilt, ViT) and rebuilt.config == net.config
    fresh = ViT(1, 8, width=16, depth=2, heads=2, patch=2, seed=3)
    for (k, a), b in zip(rebuilt.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_vit_patches_are_put_back_where_they_came_from():
    """With an identity patch embedding and read-out and no final norm, F(x) = x for every pixel ordering."""
    p, c = 2, 3
    net = ViT(c, 8, width=p * p * c, depth=1, heads=1, patch=p, seed=0)
    net.norm_out = torch.nn.Identity()
    with torch.no_grad():
        w = torch.zeros(p * p * c, c, p, p)
        order = [(i, j, ch) for i in range(p) for j in range(p) for ch in range(c)]  # read-out layout: (row, col, ch)
        for k, (i, j, ch) in enumerate(order):
            w[k, ch, i, j] = 1
        net.patchify.weight.copy_(w)
        net.patchify.bias.zero_()
        net.pos.zero_()
        net.out.weight.copy_(torch.eye(p * p * c))
    x = torch.randn(2, c, 8, 8)
    torch.testing.assert_close(net(x, torch.zeros(2)), x, rtol=0, atol=1e-6)


def test_vit_bad_sizes_are_clear():
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        ViT(1, 10, width=16, patch=4)
    with pytest.raises(ValueError, match="divisible by heads"):
        ViT(1, 8, width=18, heads=4)


def test_profile_runs_take_precond_and_vit(tmp_path, monkeypatch):
    from gaussdiff_lib import experiments

    r = gd.chapters.runs._make("v", "x", {"n": 8, "arch": "vit", "channels": 16, "num_blocks": 2, "patch": 4,
                                      "resolution": 8, "fixed_sigma": 1.0})
    net = gd.chapters.models.network(r, torch.zeros(8, 1, 8, 8))
    assert isinstance(net, ViT) and net.config["patch"] == 4 and net.config["depth"] == 2
    assert gd.chapters.runs._make("b", "x", {"n": 8, "precond": "VP"}).precond == "vp"
    with pytest.raises(ValueError, match="run 'b'.*unknown preconditioning"):
        gd.chapters.runs._make("b", "x", {"n": 8, "precond": "subvp"})


def test_check_same_training_names_what_differs():
    from gaussdiff_lib import experiments

    a = gd.chapters.runs._make("a", "x", {"n": 8})
    b = gd.chapters.runs._make("b", "x", {"n": 8, "precond": "ve"})
    c = gd.chapters.runs._make("c", "x", {"n": 8, "seed": 1})
    text = experiments.check_same_training([a, b, c], vary=("precond", "seed"))
    assert "differing only in seed, precond" in text
    with pytest.raises(ValueError, match="differ only in \\['precond'\\], but seed differs"):
        experiments.check_same_training([a, b, c], vary=("precond",))
    with pytest.raises(ValueError, match="but n differs"):
        experiments.check_same_training([a, gd.chapters.runs._make("d", "x", {"n": 16, "precond": "ve"})], vary=("precond",))
    published = gd.chapters.runs._make("p", "x", {"n": 8, "precond": "ve", "arch": "ncsnpp", "checkpoint": "net.pkl"})
    text = experiments.check_same_training([a, published], vary=("precond",))  # a checkpoint's network is its own
    assert "p is a published checkpoint" in text


def test_dae_labels_and_descriptions():
    from gaussdiff_lib import experiments

    vit = [gd.chapters.runs._make(f"v{s}", "x", {"n": 8, "arch": "vit", "channels": 32, "num_blocks": 3, "patch": 4,
                                            "fixed_sigma": s}) for s in (0.5, 1.5)]
    assert experiments.dae_label(vit) == "ViT DAE"
    assert experiments.dae_description(vit) == "a ViT of width 32, 3 blocks, 4 × 4 patches"
    nc = [gd.chapters.runs._make("n", "x", {"n": 8, "arch": "ncsnpp", "fixed_sigma": 1.0})]
    assert experiments.dae_label(nc) == "NCSN++ DAE" and experiments.dae_description(nc) == "an NCSN++ of channel size 16"
    with pytest.raises(ValueError, match="one architecture"):
        experiments.dae_label([*vit, *nc])
    with pytest.raises(ValueError, match="fixed_sigma"):
        experiments.dae_label([gd.chapters.runs._make("d", "x", {"n": 8})])


def test_a_published_run_must_name_the_preconditioning_its_file_holds(monkeypatch):
    from gaussdiff_lib import checkpoints, experiments

    def fake_load(path, device=None, **kwargs):
        return EDMDenoiser(gd.networks.UNet(1, 8, 8, (1, 2), seed=0), precond="ve")

    monkeypatch.setattr(checkpoints, "load_edm", fake_load)
    ok = gd.chapters.runs._make("b", "x", {"n": 8, "precond": "ve", "checkpoint": "baseline.pkl"})
    with pytest.warns(experiments.LicenseNotice):
        assert experiments.model(ok, device="cpu").precond == "ve"
    wrong = gd.chapters.runs._make("e", "x", {"n": 8, "checkpoint": "baseline.pkl"})
    with pytest.warns(experiments.LicenseNotice), pytest.raises(ValueError, match="says precond: edm.*'ve'"):
        experiments.model(wrong, device="cpu")
