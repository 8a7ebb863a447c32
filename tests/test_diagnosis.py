"""gd.diagnose and `gaussdiff diagnose`: the regimes follow their definitions, the exact optima and an untrained
network are diagnosed as what they are (the diagnosis's own positive and negative controls), the report is a valid
results record, a diffusers folder goes end to end through the command line, and the book's small-set and
large-set smoke networks get different verdicts."""
import json
import math

import pytest
import torch

import gaussdiff_lib as gd
from gaussdiff_lib.__main__ import main
from gaussdiff_lib.diagnosis import band_regime, copy_weights, regime
from gaussdiff_lib.stats import Estimate

SMALL = {"n_heldout": 64, "n_samples": 48, "n_pairs": 20, "n_fit": 128, "n_noise": 2}


def _e(lo, hi):
    return Estimate((lo + hi) / 2, lo, hi)


COPIES, FEW = _e(0.8, 0.95), _e(0.3, 0.7)       # D_M copies most inputs there; not surely more than half


@pytest.mark.parametrize("to_g, to_m, closer, copies, word", [
    (_e(0.1, 0.2), _e(0.9, 1.0), _e(0.1, 0.2), COPIES, "Gaussian-like"),
    (_e(0.9, 1.0), _e(0.1, 0.2), _e(-0.2, -0.1), COPIES, "memorizing"),
    (_e(0.9, 1.0), _e(0.1, 0.2), _e(-0.2, -0.1), FEW, "near D_M, not copying"),   # the interval must clear 1/2
    (_e(1.5, 2.0), _e(1.2, 1.8), _e(0.1, 0.2), COPIES, "far from both"),   # far wins over a significant difference
    (_e(0.9, 1.1), _e(0.9, 1.1), _e(-0.1, 0.1), COPIES, "between"),
    (_e(1.5, 2.0), _e(0.9, 1.8), _e(-0.2, -0.1), COPIES, "memorizing"),     # only one of them surely above 1
])
def test_regime_words_follow_their_definitions(to_g, to_m, closer, copies, word):
    assert regime(to_g, to_m, closer, copies) == word


def test_a_band_takes_the_regime_most_of_its_levels_share():
    assert band_regime(["memorizing", "memorizing", "between"]) == "memorizing"
    assert band_regime(["memorizing", "between"]) == "mixed"                 # a tie is no majority
    assert band_regime(["far from both", "between", "Gaussian-like", "memorizing", "memorizing"]) == "mixed"


def test_copy_weights_are_the_largest_softmax_weights_of_the_memorizer():
    """Against the softmax written out in float64 (the same noise draw), with chunks smaller than the set."""
    g = torch.Generator().manual_seed(3)
    train, images = torch.rand(20, 1, 4, 4, generator=g) * 2 - 1, torch.rand(5, 1, 4, 4, generator=g) * 2 - 1
    for sigma in (0.05, 0.5, 5.0):
        gen = torch.Generator().manual_seed(7)
        y = images.reshape(5, -1).double()
        x = y + sigma * torch.randn(y.shape, generator=gen, dtype=torch.float64)
        d2 = ((x[:, None, :] - train.reshape(20, -1).double()[None]) ** 2).sum(-1)
        expected = torch.softmax(-d2 / (2 * sigma ** 2), dim=1).max(1).values
        torch.testing.assert_close(copy_weights(train, images, sigma, seed=7, chunk_size=3), expected, rtol=1e-12,
                                   atol=0)
    assert torch.all(copy_weights(train, images, 1e-3, seed=7) > 1 - 1e-9)      # snaps to one image


@pytest.fixture(scope="module")
def digits():
    return (gd.data.load("digits", split="train", n=64, seed=0), gd.data.load("digits", split="test", n=200, seed=0))


def test_the_exact_optima_and_an_untrained_network_are_diagnosed_as_what_they_are(digits):
    """The diagnosis's own controls: D_G is Gaussian-like at every level and passes both checks; D_M is memorizing
    wherever it copies (near D_M elsewhere), copies its samples and passes neither; an untrained network is far from
    both optima at most intermediate levels and is not credited with the structure."""
    X, H = digits
    G, M = gd.denoisers.GaussianDenoiser.from_data(X), gd.denoisers.EmpiricalDenoiser(X)
    g = gd.diagnose(G, X, H, progress=False, **SMALL)
    assert {r["measured"] for r in g.per_level} == {"Gaussian-like"} and g.regime("intermediate") == "Gaussian-like"
    assert g.summary["generation"] == "not copying" and g.verdict == "yes"
    assert g.notes and "no untrained copy" in g.notes[0]          # said, not silently dropped
    m = gd.diagnose(M, X, H, progress=False, **SMALL)
    for r in m.per_level:
        assert r["measured"] == ("memorizing" if r["copies"].lo > 0.5 else "near D_M, not copying"), r
    assert "memorizing" in [r["regime"] for r in m.per_level if r["band"] == "intermediate"]
    assert m.summary["generation"] == "memorizing" and m.verdict == "no"
    u = gd.diagnose(gd.denoisers.EDMDenoiser(gd.networks.UNet(1, 8, 8, (1, 2), seed=0)), X, H, progress=False,
                    **SMALL)
    mid = [r for r in u.per_level if r["band"] == "intermediate"]
    assert sum(r["regime"] == "far from both" for r in mid) >= 3
    assert u.verdict == "no" and "untrained network" in u.controls and not u.notes
    # the weights of the best linear approximations: D_G's own is W_G (D_M's lies near it too: no check rests on it)
    assert len(g.linear) == len(mid) and all(r["model"] == pytest.approx(0.0, abs=0.05) for r in g.linear)


def test_model_free_maps_are_not_credited_with_the_gaussian_structure(digits):
    """The identity, the data mean and a float32-only callable of D_G (a k-diffusion-style model in its own dtype):
    the first two fail both checks, and no regime word they share with a model-free control counts; the third is D_G
    and is diagnosed as D_G."""
    X, H = digits
    G = gd.denoisers.GaussianDenoiser.from_data(X)
    mu = X.double().mean(0, keepdim=True)
    for name, D in (("identity", lambda x, s: x), ("mean", lambda x, s: mu.to(x.dtype).expand_as(x))):
        rep = gd.diagnose(D, X, H, progress=False, name=name, **SMALL)
        assert rep.verdict == "no", (name, rep.check_rows())
        assert "Gaussian-like" not in [r["regime"] for r in rep.per_level], name
        assert rep.regime("intermediate") in ("far from both", "not discriminating"), name

    def float32_only(x, s):
        if x.dtype != torch.float32:
            raise RuntimeError("expected scalar type Float")
        return G(x.double(), s).float()
    rep = gd.diagnose(float32_only, X, H, progress=False, **SMALL)
    assert rep.verdict == "yes" and {r["measured"] for r in rep.per_level} == {"Gaussian-like"}


def test_the_report_is_a_valid_results_record(digits, tmp_path):
    X, H = digits
    rep = gd.diagnose(gd.denoisers.GaussianDenoiser.from_data(X), X, H, progress=False, name="D_G", **SMALL)
    data = gd.chapters.report.payload(rep)
    assert gd.chapters.results.validate(json.loads(json.dumps(data))) == data
    assert data["chapter"] == "diagnose" and data["verdict"] == rep.verdict
    quantities = [r["quantity"] for r in data["rows"]]
    measured = [r for r in data["rows"] if r["quantity"].startswith("linearity score")]
    assert measured and all(r["checks"] == [] and r["reproduced"] == "not tested" for r in measured)
    assert len(quantities) == len(rep.rows()) and any(q.startswith("memorized fraction") for q in quantities)
    assert all(r["interval"] is None or r["interval"][0] <= r["ours"] <= r["interval"][1] for r in data["rows"]
               if not isinstance(r["ours"], str))


def test_bad_input_gets_a_clear_error(digits):
    X, H = digits
    G = gd.denoisers.GaussianDenoiser.from_data(X)
    with pytest.raises(ValueError, match="held-out images: diagnose judges on n_heldout = 256"):
        gd.diagnose(G, X, H[:100], progress=False)
    with pytest.raises(ValueError, match=r"train images are \(1, 8, 8\) and held-out images \(1, 4, 4\)"):
        gd.diagnose(G, X, H[:, :, :4, :4], progress=False, **SMALL)
    with pytest.raises(TypeError, match="train must be a tensor of images"):
        gd.diagnose(G, X.numpy(), H, progress=False, **SMALL)
    with pytest.raises(ValueError, match="levels must be positive, finite noise levels"):
        gd.diagnose(G, X, H, levels=[1.0, math.nan], progress=False, **SMALL)
    with pytest.raises(ValueError, match="n_samples must be at least 2"):
        gd.diagnose(G, X, H, progress=False, **{**SMALL, "n_samples": 1})
    with pytest.raises(ValueError, match=r"pixels span \[0, 255\]; images must lie in \[-1, 1\]"):
        gd.diagnose(G, X, (H + 1) * 127.5, progress=False, **SMALL)
    with pytest.raises(ValueError, match="3 of the 203 held-out images are copies of training images"):
        gd.diagnose(G, X, torch.cat([H, X[:3]]), progress=False, **SMALL)
    with pytest.raises(ValueError, match=r"no negative value: images scaled to \[0, 1\]\?"):
        gd.diagnose(G, (X + 1) / 2, (H + 1) / 2, progress=False, **SMALL)
    with pytest.raises(ValueError, match="train holds 1 image"):
        gd.diagnose(G, X[:1], H, progress=False, **SMALL)
    with pytest.raises(ValueError, match=r"returned Tensor \(2, 1, 4, 4\) for input \(2, 1, 8, 8\) at σ = "):
        gd.diagnose(lambda x, s: x[..., :4, :4], X, H, progress=False, **SMALL)
    with pytest.raises(ValueError, match="returned NaN or infinite values at σ = 1.502"):
        gd.diagnose(lambda x, s: x * (math.nan if abs(float(s) - 1.5017) < 1e-3 else 1.0), X, H, progress=False,
                    **SMALL)


def _tiny_unet(diffusers):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)


def test_a_diffusers_folder_goes_end_to_end_through_the_command_line(tmp_path, capsys):
    """Issue 29's acceptance: a tiny randomly initialised UNet2DModel, saved with save_pretrained, diagnosed by
    `gaussdiff diagnose` in the smoke setting: the executed notebook, its HTML and a valid JSON record."""
    diffusers = pytest.importorskip("diffusers")
    unet = _tiny_unet(diffusers)
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(tmp_path / "tiny")
    out = tmp_path / "report"
    assert main(["diagnose", str(tmp_path / "tiny"), "--train", "digits", "--setting", "smoke", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("diagnose.ipynb", "diagnose.html", "diagnose.json"):
        assert (out / name).is_file() and str(out / name) in printed
    record = gd.chapters.results.validate(json.loads((out / "diagnose.json").read_text()))
    assert record["chapter"] == "diagnose" and len(record["checks"]) == 2
    nb = json.loads((out / "diagnose.ipynb").read_text())
    assert not [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                if o.get("output_type") == "error"]
    page = (out / "diagnose.html").read_text()
    assert page.count("<img src=\"data:image/png;base64,") >= 3 and "Where the model stands" in page


def test_the_command_line_names_what_is_missing_before_the_report_starts(tmp_path, capsys, monkeypatch):
    """Each mistake gets one line naming it, before any notebook runs (papermill replaced by a stub that fails)."""
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("the report started"))
    (tmp_path / "m").mkdir()
    cases = [(["diagnose", str(tmp_path / "nothing-here"), "--train", "digits"], "nothing-here"),
             (["diagnose", str(tmp_path / "m")], "needs the model's training images: --train"),
             (["diagnose", str(tmp_path / "m"), "--train", "digit"], "'digit' is neither a dataset name"),
             (["diagnose", "run:nope", "--profile", "smoke"], "no run 'nope' in the smoke profile"),
             (["diagnose", str(tmp_path / "m"), "--train", "digits", "--value-range", "0"], "--value-range takes")]
    for argv, message in cases:
        assert main([*argv, "--out", str(tmp_path / "out")]) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_a_model_is_diagnosed_at_the_size_it_takes(tmp_path):
    """A diffusers network declares its input size: images of another size are refused with the fix, not measured
    silently (a user who forgot --resolution); a network folder saved without its scheduler loads with one given."""
    diffusers = pytest.importorskip("diffusers")
    unet = _tiny_unet(diffusers)
    unet.save_pretrained(tmp_path / "unet")
    diffusers.DDPMScheduler(prediction_type="v_prediction").save_pretrained(tmp_path / "scheduler")
    D, X, H, _ = gd.chapters.report.load_inputs(str(tmp_path / "unet"), "digits", scheduler=str(tmp_path / "scheduler"))
    assert D.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match=r"takes 1-channel 8 × 8 images \(its config\), but the training images are "
                                         r"\(1, 4, 4\).*--resolution 8"):
        gd.diagnose(D, X[:, :, :4, :4], H[:, :, :4, :4], progress=False, **SMALL)
    rep = gd.diagnose(D, X, H, progress=False, **SMALL)
    assert any("schedule spans σ = " in n and "v_prediction" in n for n in rep.notes), rep.notes


def test_the_books_small_and_large_set_networks_get_different_verdicts():
    """Issue 29's acceptance, in the smoke setting on the smoke profile's networks of the page "Diagnose your own
    model" (one recipe, N = 8 and N = 1024): the small-set network memorizes as a generator and is memorizing at an
    intermediate level; the large-set network copies nothing, is Gaussian-like at an intermediate level and
    memorizing at none."""
    small = gd.chapters.report.diagnose_run("diag-n8", "smoke", "smoke")
    large = gd.chapters.report.diagnose_run("diag-n1024", "smoke", "smoke")
    mid = {name: [r["regime"] for r in rep.per_level if r["band"] == "intermediate"]
           for name, rep in (("small", small), ("large", large))}
    assert small.summary["generation"] == "memorizing" and "memorizing" in mid["small"], mid
    assert large.summary["generation"] == "not copying", large.summary["memorized"]
    assert "Gaussian-like" in mid["large"] and "memorizing" not in mid["large"], mid


def test_the_report_template_is_a_clean_template():
    """notebooks/tools/diagnose.ipynb, like the chapter templates: no outputs, one parameters cell whose names the
    command line sets, and it ships where gd.chapters.report.template() finds it."""
    path = gd.chapters.report.template()
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    names = {line.split("=")[0].strip() for line in "".join(params[0]["source"]).splitlines()
             if "=" in line and not line.startswith("#")}
    assert names == {"model", "train", "heldout", "resolution", "n_train", "profile", "setting", "seed", "scheduler",
                     "value_range", "n_heldout"}
