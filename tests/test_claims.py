"""The paper's claims as checks that can fail (gaussdiff_lib.claims): the controls machinery, the control models,
and the acceptance test of the whole approach: the exact memorizer D_M substituted for the networks gets no "yes"
from any claim function, while the models each claim describes (D_G where it predicts Gaussian behaviour, D_M where
it predicts memorization) pass every informative check. Data: scikit-learn's 8 x 8 digits (offline, d = 64)."""
import pytest
import torch

import gaussdiff_lib as gd
from gaussdiff_lib import claims
from gaussdiff_lib.stats import Control

D = 64


@pytest.fixture(scope="module")
def data():
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)      # for this module's tests only: restored below, never leaked to later modules
    train = gd.data.load("digits", split="train", resolution=8)
    test = gd.data.load("digits", split="test", resolution=8)
    small, large = train[:8], train[:1024]
    other_small, other_large = train[8:16], train[1024:1500]
    G = {k: gd.denoisers.GaussianDenoiser.from_data(X) for k, X in
         {"small": small, "large": large, "small2": other_small, "large2": other_large}.items()}
    M = {k: claims.memorizer(X) for k, X in
         {"small": small, "large": large, "small2": other_small, "large2": other_large}.items()}
    U = gd.denoisers.EDMDenoiser(gd.networks.make("unet", 1, 8, 8, seed=3))
    yield {"small": small, "large": large, "small2": other_small, "large2": other_large, "held": test[:96],
           "fit": test[96:], "z": gd.sampling.latents(range(64), (1, 8, 8)),
           "z_sel": gd.sampling.latents(range(1000, 1064), (1, 8, 8)), "G": G, "M": M, "U": U}
    torch.set_grad_enabled(previous)


# ------------------------------------------------------------------------------------------- control models
def test_untrained_is_a_fresh_copy_with_the_same_preconditioning():
    """A library network is rebuilt from its config with another seed; with EDM's zero-initialised output layer it
    is c_skip(σ) x exactly (oracle: EDM's c_skip = σ_d² / (σ² + σ_d²)); a module without a config is reset in
    place of a copy; one with nothing to reset is refused."""
    net = gd.networks.make("unet", 1, 8, 4, seed=0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1)                                    # "trained"
    D = gd.denoisers.EDMDenoiser(net, precond="ve")
    U = claims.untrained(D)
    assert U.precond == "ve" and U.net.config == net.config
    assert not torch.equal(next(U.net.parameters()), next(net.parameters()))
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    E = claims.untrained(gd.denoisers.EDMDenoiser(net))
    for s in (0.1, 1.5, 80.0):
        torch.testing.assert_close(E(x, s), x * 0.25 / (s ** 2 + 0.25))
    lin = torch.nn.Sequential(torch.nn.Linear(4, 4))
    reset = claims.untrained(lin)
    assert not torch.equal(reset[0].weight, lin[0].weight) and reset is not lin
    with pytest.raises(ValueError, match="reset_parameters"):
        claims.untrained(claims.memorizer(torch.zeros(2, 1, 2, 2)))


def test_blend_and_transition_are_exact_mixtures(data):
    G, M = data["G"]["large"], data["M"]["large"]
    x = data["held"][:4].double() + 0.5 * torch.randn(4, 1, 8, 8, dtype=torch.float64,
                                                       generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(claims.Blend(M, G, 0.25)(x, 0.5), 0.75 * M(x, 0.5) + 0.25 * G(x, 0.5))
    t = claims.transition([M, M, M], [G, G, G])
    assert [b.t for b in t] == [0.0, 0.5, 1.0]
    torch.testing.assert_close(t[0](x, 0.5), M(x, 0.5)) and torch.testing.assert_close(t[-1](x, 0.5), G(x, 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        claims.Blend(M, G, 1.5)


def test_a_check_whose_negative_control_passes_is_left_out_of_the_verdict():
    """assess runs the same test on the subject and on every control; a test that every model passes is
    uninformative and does not count, one that only the subject and the positive control pass does."""
    scores = {"net": 0.9, "D_M": 0.1, "untrained": 0.2, "D_G": 1.0, "leaky D_M": 0.95}
    test_of = lambda cut: (lambda roles: (scores[roles["x"][0]] > cut, "", None))  # noqa: E731
    controls = lambda neg: {"D_M": ("negative", {"x": [neg]}),  # noqa: E731
                            "untrained": ("negative", {"x": ["untrained"]}), "D_G": ("positive", {"x": ["D_G"]})}
    good = claims.assess("discriminates", 4, test_of(0.5), {"x": ["net"]}, controls("D_M"), replicates=2)
    leaky = claims.assess("everything passes", 4, test_of(0.5), {"x": ["net"]}, controls("leaky D_M"), replicates=2)
    broken = claims.assess("even D_G fails", 4, test_of(1.5), {"x": ["net"]}, controls("D_M"), replicates=2)
    assert good.informative and good.passed and [c.passed for c in good.controls] == [False, False, True]
    assert not leaky.informative and leaky.why_uninformative == "D_M also passes"
    assert not broken.informative and broken.why_uninformative == "D_G fails it"
    assert gd.stats.verdict([good, leaky, broken]) == "yes"
    assert gd.stats.verdict([leaky, broken]) == "not tested"
    rows = claims.check_rows([good, leaky])
    assert rows[0]["in the verdict"] == "counted" and rows[1]["in the verdict"].startswith("uninformative")
    assert "D_M: fails ✓" in rows[0]["controls"] and "D_M: passes ✗" in rows[1]["controls"]
    gate = claims.gate("regime", 4, False, "copies 3%")
    assert gd.stats.verdict([good, gate]) == "not tested"


# ------------------------------------------------------------------ D_M substituted: no claim is reproduced
def _sweep_inputs(data, models):
    return dict(models=models, train_sets={"small": data["small"], "large": data["large"]}, heldout=data["held"],
                latents=data["z"], untrained=data["U"], progress=False)


def test_memorizer_in_place_of_the_networks_reproduces_nothing(data):
    """The acceptance test: D_M of each training set, substituted for every network, gets no "yes" for claims 1, 4,
    6, 7, 9 and 12, nor for 8 (its evidence is informative and fails, or the claim is not tested)."""
    M, lv = data["M"], gd.sampling.edm_sigmas(8)[:-1].tolist()
    words = {}
    r = claims.gaussian_shadow(**_sweep_inputs(data, {"small": M["small"], "large": M["large"]}))
    words["shadow"] = r.verdicts
    r = claims.dataset_size(**_sweep_inputs(data, {"small": M["small"], "large": M["large"]}), linearity_levels=lv,
                            n_pairs=16, long_run=("large", M["large"]))
    words["size"] = r.verdicts
    r = claims.emerging_linearity({"small": M["small"], "large": M["large"]},
                                  {"small": data["small"], "large": data["large"]}, data["held"], lv, n_pairs=16,
                                  untrained=data["U"])
    words["linearity"] = r.verdicts
    r = claims.model_capacity({"narrow": M["small"], "wide": M["small"]},
                              {"narrow": data["small"], "wide": data["small"]}, data["held"], data["z"],
                              untrained=data["U"], progress=False)
    words["capacity"] = r.verdicts
    r = claims.training_time({"early": M["small"], "middle": M["small"], "end": M["small"]}, data["small"],
                             (data["held"][:48], data["z_sel"]), (data["held"][48:], data["z"]),
                             untrained=data["U"], progress=False)
    words["time"] = r.verdicts
    halves = lambda k: ([M[k]], [M[k + "2"]])  # noqa: E731
    r = claims.strong_generalization(halves("large"), halves("small"),
                                     {"large": (data["large"], data["large2"]), "small": (data["small"], data["small2"])},
                                     {"large": data["z"], "small": data["z"]}, narrow=halves("small"),
                                     early={10: halves("small")}, selection_latents=data["z_sel"],
                                     gaussian_pair=(data["small"], data["large"]), untrained=data["U"])
    words["halves"] = r.verdicts
    r = claims.linear_gaussian({"small": M["small"], "large": M["large"]}, {"small": data["small"], "large": data["large"]},
                               data["fit"], data["held"], data["z"], n_noise=4, target_error=None, untrained=data["U"])
    words["linear"] = r.verdicts
    for chapter, verdicts in words.items():
        for number in (1, 4, 6, 7, 8, 9, 12):
            assert verdicts.get(number, "absent") != "yes", (chapter, number, verdicts)
    assert words["linear"][4] == "no" and words["size"][6] == "not tested" and words["halves"][9] == "not tested"


def test_the_models_a_claim_describes_pass_its_informative_checks(data):
    """The positive side: D_M where a claim predicts memorization and D_G where it predicts Gaussian behaviour (a
    second copy standing for a second seed) pass every informative check, so these checks can succeed."""
    M, G = data["M"], data["G"]
    ideal = {"small": M["small"], "large": G["large"]}
    reps = {"small": [M["small"]], "large": [G["large"]]}
    r = claims.gaussian_shadow(**_sweep_inputs(data, ideal), replicates=reps)
    assert r.verdicts == {6: "yes"}, r.rows()
    r = claims.dataset_size(**_sweep_inputs(data, ideal), replicates=reps,
                            linearity_levels=gd.sampling.edm_sigmas(8)[:-1].tolist(), n_pairs=16)
    assert r.verdicts == {6: "yes", 12: "yes"}, r.rows()
    r = claims.model_capacity({"narrow": G["small"], "wide": M["small"]}, {"narrow": data["small"], "wide": data["small"]},
                              data["held"], data["z"], replicates={"narrow": [G["small"]], "wide": [M["small"]]},
                              untrained=data["U"], progress=False)
    assert r.verdicts[7] == "yes" and r.find("the price").why_uninformative == "no positive control", r.rows()
    series = {"early": G["small"], "middle": claims.Blend(M["small"], G["small"], 0.5), "end": M["small"]}
    r = claims.training_time(series, data["small"], (data["held"][:48], data["z_sel"]), (data["held"][48:], data["z"]),
                             replicates=[series], untrained=data["U"], progress=False)
    assert r.verdicts == {8: "yes"} and r.values["chosen"][0] == "early", r.rows()
    r = claims.linear_gaussian(ideal, {"small": data["small"], "large": data["large"]}, data["fit"], data["held"],
                               data["z"], n_noise=8, target_error=None, untrained=data["U"])
    closer = r.find("claim 4: over intermediate σ, the")
    assert closer.informative and closer.passed and r.find("claim 5: the memorizing").passed
    assert r.find("claim 3").why_uninformative == "untrained network also passes"   # linear maps fit themselves


def test_a_choice_is_never_judged_on_the_latents_that_made_it(data):
    """training_time and strong_generalization choose a snapshot on selection latents; handing them the judgement
    latents (or ones sharing a row with them) is refused with a message that says what to do."""
    M = data["M"]
    series = {"early": M["small"], "middle": M["small"], "end": M["small"]}
    overlap = torch.cat([data["z_sel"][:32], data["z"][:32]])
    for z in (data["z"], overlap):
        with pytest.raises(ValueError, match="selection latents are also judgement latents.*selection_latents"):
            claims.training_time(series, data["small"], (data["held"][:48], z), (data["held"][48:], data["z"]),
                                 untrained=data["U"], progress=False)
    halves = lambda k: ([M[k]], [M[k + "2"]])  # noqa: E731
    with pytest.raises(ValueError, match="32 selection latents are also judgement latents"):
        claims.strong_generalization(halves("large"), halves("small"),
                                     {"large": (data["large"], data["large2"]), "small": (data["small"], data["small2"])},
                                     {"large": data["z"], "small": data["z"]}, early={10: halves("small")},
                                     selection_latents=overlap, untrained=data["U"])
