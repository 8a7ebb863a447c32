"""EDM checkpoints: the persistence format read without running code, our DDPM++/NCSN++ implementation, export."""
import io
import json
import os
import pickle
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import gaussdiff_lib as gd
from gaussdiff_lib import checkpoints, networks
from gaussdiff_lib.denoisers import EDMDenoiser
from gaussdiff_lib.edm_networks import Conv2d, SongUNet, build_songunet


# ------------------------------------------------------------------ a writer of EDM's persistence format
# EDM pickles each network object as torch_utils.persistence._reconstruct_persistent_obj(meta) with
# meta = {type: 'class', version, module_src, class_name, state}. The test writes such a file itself: the
# module_src is code that would leave a marker file if anything ever executed it.

def _fake_persistence(monkeypatch):
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # what EDM would call; never reached by our reader
        raise AssertionError("the reader must not call EDM's reconstruct function")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg = types.ModuleType("torch_utils")
    pkg.persistence = mod
    monkeypatch.setitem(sys.modules, "torch_utils", pkg)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)
    return _reconstruct_persistent_obj


class _Persistent:
    """Pickles as an EDM persistence record around a module's attribute dict."""

    def __init__(self, class_name, state, src, reconstruct):
        self.class_name, self.state, self.src, self.reconstruct = class_name, state, src, reconstruct

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.src, class_name=self.class_name, state=self.state)
        return self.reconstruct, (meta,)


def _as_records(module, reconstruct, src, init_kwargs=None):
    """Mirror a torch module tree as persistence records, keeping torch.nn containers as they are (as EDM does)."""
    state = dict(module.__dict__)
    state["_modules"] = {name: (None if child is None else _as_records(child, reconstruct, src))
                         for name, child in module._modules.items()}
    state["_init_kwargs"] = init_kwargs or {}
    if isinstance(module, torch.nn.ModuleDict):
        container = torch.nn.ModuleDict()
        container.__dict__["_modules"] = state["_modules"]  # children are records, bypass the type check
        return container
    return _Persistent(type(module).__name__, state, src, reconstruct)


# the attributes EDM's three preconditioners store besides their network (EDM's networks.py)
PRECOND_STATE = {"EDMPrecond": {"sigma_data": 0.5, "sigma_min": 0, "sigma_max": float("inf")},
                 "VEPrecond": {"sigma_min": 0.02, "sigma_max": 100},
                 "VPPrecond": {"beta_d": 19.9, "beta_min": 0.1, "M": 1000, "epsilon_t": 1e-5,
                               "sigma_min": 0.001, "sigma_max": 152.1}}


def _edm_pickle(tmp_path, monkeypatch, net: SongUNet, kwargs: dict, sigma_data=0.5, precond="EDMPrecond",
                state=None):
    reconstruct = _fake_persistence(monkeypatch)
    marker = tmp_path / "code-ran"
    src = f"open({str(marker)!r}, 'w').write('executed')\n"
    model = _as_records(net, reconstruct, src, init_kwargs=kwargs)
    attrs = dict(PRECOND_STATE.get(precond, {}), **(state or {}))
    if precond == "EDMPrecond":
        attrs["sigma_data"] = sigma_data
    outer = _Persistent(precond, {"training": False, "_parameters": {}, "_buffers": {}, "_modules": {"model": model},
                                  **attrs,
                                  "_init_kwargs": {"img_resolution": kwargs["img_resolution"],
                                                   "img_channels": kwargs["in_channels"], **attrs,
                                                   "model_type": "SongUNet"}}, src, reconstruct)
    path = tmp_path / "network-snapshot.pkl"
    with open(path, "wb") as f:
        pickle.dump({"ema": outer, "augment_pipe": None, "dataset_kwargs": {"path": "ffhq-64x64.zip"}}, f)
    return path, marker


SMALL = dict(img_resolution=16, in_channels=3, out_channels=3, model_channels=8, channel_mult=[1, 2, 2], num_blocks=1,
             attn_resolutions=[8], dropout=0.0, embedding_type="fourier", channel_mult_noise=2,
             encoder_type="residual", decoder_type="standard", resample_filter=[1, 3, 3, 1], augment_dim=9)


def _randomised(kwargs, seed=0):
    torch.manual_seed(seed)
    net = SongUNet(**kwargs).eval()
    with torch.no_grad():  # EDM initialises output layers near zero; make every weight matter
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("arch", ["ncsnpp", "ddpmpp", "skip"])
def test_persistence_pickle_round_trips_without_running_its_code(tmp_path, monkeypatch, arch):
    kwargs = dict(SMALL)
    if arch == "ddpmpp":
        kwargs.update(embedding_type="positional", channel_mult_noise=1, encoder_type="standard", resample_filter=[1, 1])
    if arch == "skip":
        kwargs.update(encoder_type="skip", decoder_type="skip")
    net = _randomised(kwargs)
    path, marker = _edm_pickle(tmp_path, monkeypatch, net, kwargs, sigma_data=0.5)
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")  # the reader needs none of EDM's code
    monkeypatch.delitem(sys.modules, "torch_utils")
    D = checkpoints.load_edm(path)
    assert not marker.exists()
    assert isinstance(D, EDMDenoiser) and isinstance(D.net, SongUNet) and not D.net.training
    ref = EDMDenoiser(net, 0.5)
    x = torch.randn(3, 3, 16, 16)
    for sigma in (0.002, 0.47, 4.07, 80.0):
        torch.testing.assert_close(D(x, sigma), ref(x, sigma), rtol=0, atol=0)
    assert D.edm_info["model_kwargs"]["encoder_type"] == kwargs["encoder_type"]


def test_export_is_a_plain_weights_only_file(tmp_path, monkeypatch):
    net = _randomised(SMALL, seed=1)
    path, _ = _edm_pickle(tmp_path, monkeypatch, net, SMALL, sigma_data=0.6)
    D = checkpoints.load_edm(path)
    assert D.sigma_data == 0.6
    out = checkpoints.export_state_dict(D, tmp_path / "export" / "net.pt")
    blob = torch.load(out, weights_only=True)
    assert blob["format"] == checkpoints.EXPORT_FORMAT and "CC BY-NC-SA" in blob["license"]
    assert set(blob["state_dict"]) == set(net.state_dict())
    D2 = checkpoints.load_edm(out)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(D2(x, 1.5), D(x, 1.5), rtol=0, atol=0)
    assert D2.sigma_data == 0.6
    with pytest.raises(ValueError, match="load_edm"):
        checkpoints.export_state_dict(EDMDenoiser(net), tmp_path / "x.pt")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "owned"
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"ema": _RunsCode(marker)}))
    with pytest.raises(checkpoints.UnsafePickleError, match="refusing to load .*system"):
        checkpoints.load_edm(bad)
    assert not marker.exists()
    # hidden inside a persistence record's state, too
    reconstruct = _fake_persistence(monkeypatch)
    nested = tmp_path / "nested.pkl"
    nested.write_bytes(pickle.dumps({"ema": _Persistent("EDMPrecond", {"x": _RunsCode(marker)}, "", reconstruct)}))
    with pytest.raises(checkpoints.UnsafePickleError):
        checkpoints.load_edm(nested)
    assert not marker.exists()
    # and a class the format never contains
    odd = tmp_path / "odd.pkl"
    odd.write_bytes(pickle.dumps({"ema": torch.optim.SGD}))
    with pytest.raises(checkpoints.UnsafePickleError, match="torch.optim"):
        checkpoints.load_edm(odd)


def _baseline_reference(net, kind, x, sigma):
    """EDM's VEPrecond / VPPrecond forward pass, written out here in float32 as EDM runs it (Table 1 of Karras et
    al. 2022; VP: beta_d = 19.9, beta_min = 0.1, M = 1000)."""
    s = torch.full((x.shape[0], 1, 1, 1), float(sigma), dtype=torch.float32)
    if kind == "VEPrecond":
        c_in, c_out, c_noise = torch.ones_like(s), s, (0.5 * s).log()
    else:
        c_in, c_out = 1 / (s ** 2 + 1).sqrt(), -s
        c_noise = 999 * ((0.1 ** 2 + 2 * 19.9 * (1 + s ** 2).log()).sqrt() - 0.1) / 19.9
    with torch.no_grad():
        return x + c_out * net(c_in * x, c_noise.flatten())


@pytest.mark.parametrize("kind, arch", [("VEPrecond", "ncsnpp"), ("VPPrecond", "ddpmpp")])
def test_baseline_pickles_load_with_their_preconditioning(tmp_path, monkeypatch, kind, arch):
    """EDM's published baselines (baseline-cifar10-32x32-uncond-{ve,vp}.pkl): VE with NCSN++, VP with DDPM++."""
    kwargs = dict(SMALL)
    if arch == "ddpmpp":
        kwargs.update(embedding_type="positional", channel_mult_noise=1, encoder_type="standard", resample_filter=[1, 1])
    net = _randomised(kwargs, seed=2)
    path, marker = _edm_pickle(tmp_path, monkeypatch, net, kwargs, precond=kind)
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")
    monkeypatch.delitem(sys.modules, "torch_utils")
    D = checkpoints.load_edm(path)
    assert not marker.exists()
    assert D.precond == {"VEPrecond": "ve", "VPPrecond": "vp"}[kind]
    x = torch.randn(3, 3, 16, 16)
    for sigma in (0.002, 0.47, 4.07, 80.0):
        ref = _baseline_reference(net, kind, x, sigma)
        # float32 rounding: EDM forms c_noise in float32, where ln(1 + sigma^2) loses digits at small sigma
        torch.testing.assert_close(D(x, sigma), ref, rtol=2e-5, atol=1e-6 + 2e-5 * float(sigma))
    # exported and reloaded, it keeps its preconditioning
    D2 = checkpoints.load_edm(checkpoints.export_state_dict(D, tmp_path / "base.pt"))
    assert D2.precond == D.precond
    torch.testing.assert_close(D2(x, 1.5), D(x, 1.5), rtol=0, atol=0)


def test_unsupported_networks_get_a_clear_error(tmp_path, monkeypatch):
    net = _randomised(SMALL)
    path, _ = _edm_pickle(tmp_path, monkeypatch, net, SMALL, precond="iDDPMPrecond")
    with pytest.raises(ValueError, match="iDDPMPrecond.*discrete noise schedule"):
        checkpoints.load_edm(path)
    path, _ = _edm_pickle(tmp_path, monkeypatch, net, SMALL, precond="VPPrecond", state={"beta_d": 12.0})
    with pytest.raises(ValueError, match="VPPrecond checkpoint uses the schedule {'beta_d': 12.0}"):
        checkpoints.load_edm(path)
    cond = dict(SMALL, label_dim=10)
    path, _ = _edm_pickle(tmp_path, monkeypatch, _randomised(cond), cond)
    with pytest.raises(ValueError, match="class-conditional"):
        checkpoints.load_edm(path)
    with pytest.raises(ValueError, match="no network under 'ema'"):
        p = tmp_path / "plain.pkl"
        p.write_bytes(pickle.dumps({"weights": [1, 2]}))
        checkpoints.load_edm(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoints.load_edm(tmp_path / "missing.pkl")
    with pytest.raises(FileNotFoundError, match="downloads are switched off"):
        checkpoints.load_edm("https://example.invalid/edm/none.pkl", download=False)
    # a stored tensor that does not fit the architecture its own arguments describe
    wrong = dict(SMALL)
    path, _ = _edm_pickle(tmp_path, monkeypatch, _randomised(dict(SMALL, model_channels=12)), wrong)
    with pytest.raises(ValueError, match="shapes differ"):
        checkpoints.load_edm(path)


# --------------------------------------------------------------------------------- the architecture

def test_paper_parameter_counts():
    """Paper section 1: channel sizes 4, 8, 16, 32, 64, 128 are about 64k, 251k, 992k, 4M, 16M and 64M parameters."""
    expect = {4: 64e3, 8: 251e3, 16: 992e3, 32: 4e6, 64: 16e6, 128: 64e6}
    for width, count in expect.items():
        net = build_songunet("ncsnpp", 3, 64, width, (1, 2, 2, 2), 4)
        assert abs(sum(p.numel() for p in net.parameters()) / count - 1) < 0.03, width


def test_state_dict_names_follow_edm():
    net = build_songunet("ncsnpp", 3, 64, 16, (1, 2, 2, 2), 4)
    names = set(net.state_dict())
    for key in ("map_noise.freqs", "map_layer0.weight", "map_layer1.bias", "enc.64x64_conv.weight",
                "enc.32x32_down.conv0.resample_filter", "enc.32x32_aux_residual.weight", "enc.16x16_block0.qkv.weight",
                "dec.8x8_in0.proj.weight", "dec.64x64_block4.conv1.weight", "dec.64x64_aux_conv.weight"):
        assert key in names, key


def test_resampling_matches_closed_forms():
    x = torch.randn(2, 3, 8, 8)
    down = Conv2d(3, 3, 0, down=True, resample_filter=(1, 1))
    torch.testing.assert_close(down(x), F.avg_pool2d(x, 2))
    up = Conv2d(3, 3, 0, up=True, resample_filter=(1, 1))
    torch.testing.assert_close(up(x), F.interpolate(x, scale_factor=2, mode="nearest"))
    # the [1, 3, 3, 1] filter preserves constants away from the border, in both directions
    c = torch.full((1, 2, 8, 8), 0.7)
    torch.testing.assert_close(Conv2d(2, 2, 0, down=True, resample_filter=(1, 3, 3, 1))(c)[..., 1:-1, 1:-1],
                               torch.full((1, 2, 2, 2), 0.7))
    torch.testing.assert_close(Conv2d(2, 2, 0, up=True, resample_filter=(1, 3, 3, 1))(c)[..., 2:-2, 2:-2],
                               torch.full((1, 2, 12, 12), 0.7))


def test_songunet_trains_through_the_engine(tmp_path):
    from gaussdiff_lib.training import load_run, train

    net = build_songunet("ddpmpp", 1, 8, 8, (1, 2), 1, attn_resolutions=(4,), seed=3)
    rebuilt = networks.build(net.config)
    for (k, a), b in zip(net.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), k
    X = torch.rand(16, 1, 8, 8) * 2 - 1
    D = train(net, X, steps=3, batch_size=4, run_dir=tmp_path / "run", progress=False)
    D2 = load_run(tmp_path / "run")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(D2(x, 1.0), D(x, 1.0))
    with pytest.raises(ValueError, match="encoder_type"):
        SongUNet(16, 3, 3, encoder_type="fancy")
    with pytest.raises(ValueError, match="divisible"):
        SongUNet(20, 3, 3, channel_mult=(1, 2, 2, 2))


_INDUCTOR = """
import sys
from gaussdiff_lib import checkpoints
before = {m for m in sys.modules if m.startswith("torch._inductor")}
try:
    checkpoints.read_pickle(sys.argv[1])
except checkpoints.UnsafePickleError as exc:
    print("refused", "torch._inductor" in str(exc))
print(len({m for m in sys.modules if m.startswith("torch._inductor")} - before))
"""


def test_a_pickle_naming_a_torch_submodule_is_refused_without_importing_it(tmp_path):
    import subprocess

    path = tmp_path / "inductor.pkl"
    path.write_bytes(b"ctorch\n_inductor\n.")       # GLOBAL torch._inductor, as a dtype lookup would see it
    out = subprocess.run([sys.executable, "-c", _INDUCTOR, str(path)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(__import__("pathlib").Path(checkpoints.__file__).parent.parent)})
    assert out.stdout.split() == ["refused", "True", "0"], out.stdout + out.stderr
    torch_dtype = b"ctorch\nfloat16\n."               # real dtypes still resolve
    assert checkpoints.read_pickle(__import__("io").BytesIO(torch_dtype)) is torch.float16


def test_offline_url_folder_and_missing_gpu_are_clear(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("GAUSSDIFF_CACHE", str(tmp_path / "cache"))
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ConnectionError, match="could not download https://example.invalid/edm/x.pkl .*name resolution"
                                              ".*fetch the file yourself"):
        checkpoints.load_edm("https://example.invalid/edm/x.pkl", download=True)
    assert len(os.listdir("/proc/self/fd")) == fds                      # the temporary file's descriptor is closed
    assert not list((tmp_path / "cache").rglob("*.part"))
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "edm.pkl").write_bytes(b"")
    with pytest.raises(ValueError, match=r"nets is a folder; pass one checkpoint file in it \(\['edm.pkl'\]\)"):
        checkpoints.load_edm(tmp_path / "nets")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="asks for a CUDA GPU, but this machine has none"):
        gd.training.train(gd.networks.UNet(1, 8, 8, (1, 2), seed=0), torch.zeros(4, 1, 8, 8), steps=1, device="cuda",
                          progress=False)


def test_an_unusable_cache_root_names_the_variable(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("a file where the cache folder should be")
    monkeypatch.setenv("GAUSSDIFF_CACHE", str(tmp_path / "file" / "cache"))
    from gaussdiff_lib import cache

    with pytest.raises(OSError, match="cannot create the folder .*set \\$GAUSSDIFF_CACHE to a writable folder"):
        cache.cached("thing", {"a": 1}, lambda: {"x": torch.zeros(1)})


class _Served(io.BytesIO):
    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_downloads_are_kept_by_address_and_checked_on_every_use(tmp_path, monkeypatch):
    """Issue 13, item 8: a cached download used to be matched by its file name only, under ~/.cache."""
    import hashlib
    import urllib.request

    path, _ = _edm_pickle(tmp_path, monkeypatch, _randomised(SMALL), SMALL)
    payload = path.read_bytes()
    served = {"n": 0}

    def serve(url, timeout):
        served["n"] += 1
        return _Served(payload)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    monkeypatch.setenv("GAUSSDIFF_CACHE", str(tmp_path / "cache"))
    url = "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/net.pkl"
    want = hashlib.sha256(payload).hexdigest()
    den = checkpoints.load_edm(url, download=True, sha256=want)
    local = checkpoints.download_path(url)
    assert local.is_file() and (tmp_path / "cache") in local.parents and served["n"] == 1
    assert json.loads(local.with_name("net.pkl.source.json").read_text()) == {"url": url, "sha256": want}
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    again = checkpoints.load_edm(url, download=False)                       # the recorded copy, no second download
    assert served["n"] == 1 and torch.equal(again(x, 1.0), den(x, 1.0))
    # the same file name from another host is a different download, never this one's answer
    other = "https://mirror.example.org/edm/pretrained/net.pkl"
    assert checkpoints.download_path(other) != local
    with pytest.raises(FileNotFoundError, match="downloads are switched off"):
        checkpoints.load_edm(other, download=False)
    # a file put in place by hand (no record of its address) is not taken for the download
    planted = checkpoints.download_path(other)
    planted.parent.mkdir(parents=True)
    planted.write_bytes(payload)
    with pytest.raises(gd.cache.CorruptFileError, match="no record of being downloaded from"):
        checkpoints.load_edm(other, download=False)
    # an edited download is caught by the SHA-256 recorded when it arrived
    blob = bytearray(local.read_bytes())
    blob[-20] ^= 1
    local.write_bytes(bytes(blob))
    with pytest.raises(gd.cache.CorruptFileError, match="changed since it was downloaded"):
        checkpoints.load_edm(url, download=False)
    # a pinned SHA-256 is checked at download (the file is not kept) and on a local path
    local.unlink()
    with pytest.raises(gd.cache.CorruptFileError, match="not the pinned"):
        checkpoints.load_edm(url, download=True, sha256="0" * 64)
    assert not local.exists()
    with pytest.raises(gd.cache.CorruptFileError, match="not the pinned"):
        checkpoints.load_edm(path, sha256="f" * 64)
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        checkpoints.load_edm(path, sha256="abc")
    assert checkpoints.load_edm(path, sha256=want.upper()).precond == "edm"


def test_data_downloads_go_under_the_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GAUSSDIFF_CACHE", str(tmp_path / "c"))
    assert gd.data.data_cache() == tmp_path / "c" / "data"
    assert gd.data.fashion_mnist_dirs()[-1] == tmp_path / "c" / "data" / "fashion-mnist"
