"""Experiments as data: run definitions, train-or-load, and the sweep analysis against exact oracles."""
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import gaussdiff_lib as gd

ROOT = Path(__file__).resolve().parent.parent

PROFILE = {
    "experiments": {
        "defaults": {"dataset": "digits", "resolution": 8, "channels": 4, "steps": 6, "batch_size": 8, "lr": 2e-3},
        "runs": {
            "n32": {"n": 32, "snapshots": [2, 4]},
            "n32-half2": {"n": 32, "offset": 32},
            "n64": {"n": 64},
            "overlap": {"n": 32, "offset": 16},
            "lin": {"n": 64, "arch": "linear", "fixed_sigma": 0.5, "ema": 0.0},
        },
        "sweeps": {"sizes": ["n32", "n64"], "halves": ["n32", "n32-half2"]},
    },
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with one profile 'tiny' (and the real notebooks) for gd.profiles.root()."""
    (tmp_path / "profiles").mkdir()
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    (tmp_path / "profiles" / "tiny.yml").write_text(yaml.safe_dump(PROFILE))
    monkeypatch.setenv("GAUSSDIFF_ROOT", str(tmp_path))

    def write(section):
        (tmp_path / "profiles" / "tiny.yml").write_text(yaml.safe_dump({"experiments": section}))
    return write


def test_runs_merge_defaults_and_describe_themselves(project):
    r = gd.experiments.run("n32", "tiny")
    assert (r.n, r.channels, r.steps, r.batch_size, r.dataset, r.snapshots) == (32, 4, 6, 8, "digits", (2, 4))
    assert r.epochs == pytest.approx(6 * 8 / 32) and r.epoch(4) == pytest.approx(1.0)
    assert gd.experiments.sweep("sizes", "tiny") == ["n32", "n64"]
    assert gd.experiments.run("lin", "tiny").fixed_sigma == 0.5


def test_halves_are_disjoint_and_sizes_nested(project):
    flat = lambda x: {tuple(v) for v in x.reshape(x.shape[0], -1).tolist()}  # noqa: E731
    s1, s2, big = (flat(gd.experiments.training_set(n, "tiny")) for n in ("n32", "n32-half2", "n64"))
    assert not s1 & s2                      # disjoint halves
    assert s1 | s2 == big                   # together: the first 64 of the same seeded order
    idx = gd.data.subset(100, 10, seed=3, offset=10)
    assert not set(idx.tolist()) & set(gd.data.subset(100, 10, seed=3).tolist())
    with pytest.raises(ValueError, match="after offset 95 but the split holds only 100"):
        gd.data.subset(100, 10, offset=95)


@pytest.mark.parametrize("section, msg", [
    ({"runs": {"a": {"n": 4, "widht": 8}}}, r"run 'a' of profile 'tiny': unknown fields \['widht'\]"),
    ({"runs": {"a": {"channels": 8}}}, "has no training-set size 'n'"),
    ({"runs": {"a": {"n": 0}}}, "n must be a positive integer"),
    ({"runs": {"a": {"n": 4, "snapshots": [9000]}}}, r"snapshots \[9000\] go past its 2000 steps"),
    ({"runs": {"a": {"n": 4, "arch": "linear"}}}, "give it fixed_sigma"),
    ({"runs": {"a": {"n": 4, "arch": "mlp"}}}, "arch must be 'unet' or 'linear'"),
    ({"runs": {"a": {"n": 4}}, "sweeps": {"s": ["a", "b"]}}, r"sweep 's' of profile 'tiny' names undefined runs \['b'\]"),
    ({"runz": {}}, r"unknown keys \['runz'\]"),
])
def test_bad_definitions_are_named(project, section, msg):
    project(section)
    with pytest.raises(ValueError, match=msg):
        gd.experiments.runs("tiny")
        gd.experiments.sweeps("tiny")


def test_unknown_names_list_the_defined_ones(project):
    with pytest.raises(ValueError, match=r"no run 'n16'; it defines \['lin', 'n32', 'n32-half2', 'n64', 'overlap'\]"):
        gd.experiments.run("n16", "tiny")
    with pytest.raises(ValueError, match=r"no sweep 'width'; it defines \['halves', 'sizes'\]"):
        gd.experiments.sweep("width", "tiny")
    with pytest.raises(ValueError, match="keeps snapshots at steps \\[2, 4\\], not 3"):
        gd.experiments.model("n32", "tiny", snapshot=3)


def test_model_trains_once_then_loads(project, monkeypatch):
    D = gd.experiments.model("n32", "tiny", progress=False)
    assert D.step == 6 and D.epoch == pytest.approx(1.5) and D.run.name == "n32"
    calls = []
    real = gd.training._run
    monkeypatch.setattr(gd.training, "_run", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = gd.experiments.model("n32", "tiny", progress=False)
    for k, v in D.net.state_dict().items():
        torch.testing.assert_close(again.net.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="X holds 64 images but run 'n32' trains on n = 32"):
        gd.experiments.model("n32", "tiny", X=gd.experiments.training_set("n64", "tiny"))
    snap = gd.experiments.model("n32", "tiny", snapshot=2, progress=False)
    assert snap.step == 2 and all(row["step"] <= 2 for row in snap.stats)
    assert any((a - b).abs().max() > 0 for a, b in zip(snap.net.parameters(), D.net.parameters()))


def test_compare_against_exact_models(project):
    """The Gaussian denoiser compared with itself is at distance 0; the multi-delta denoiser copies every
    training image (memorized fraction 1, GL score 0 up to the sampler's last step)."""
    X = gd.experiments.training_set("n32", "tiny")
    G = gd.denoisers.GaussianDenoiser.from_data(X)
    M = gd.denoisers.EmpiricalDenoiser(X)
    held = gd.data.load("digits", split="all", resolution=8, n=16, seed=9)
    z = gd.sampling.latents(range(12), (1, 8, 8))
    cmp = gd.experiments.compare({"G": G, "M": M}, {"G": X, "M": X}, held, z, linearity_levels=[1.0, 10.0],
                                 n_pairs=8, gaussians={"G": G, "M": G}, progress=False)
    g, m = cmp.rows
    assert float(cmp.distance["G"].abs().max()) < 1e-6
    assert g["RMSE(θ, G) intermediate σ"] < 1e-6 and g["min LS"] > 0.9
    assert g["RMSE to Gaussian sample"] < 0.5          # 10 Euler steps against the exact trajectory
    assert m["memorized fraction"] == 1.0 and m["GL score"] < 1e-3
    assert float(cmp.delta_distance["M"].abs().max()) < 1e-6 and m["RMSE(θ, M) intermediate σ"] < 1e-6
    torch.testing.assert_close(cmp.delta_distance["G"], cmp.distance["M"])   # RMSE is symmetric
    torch.testing.assert_close(cmp.nearest["M"].double(), cmp.samples["M"].double(), atol=1e-3, rtol=0)
    rows = cmp.figure_rows(n=3)
    assert list(rows) == [f"{k}: {w}" for k in ("G", "M") for w in ("samples", "nearest training", "Gaussian")]
    with pytest.raises(ValueError, match="same labels"):
        gd.experiments.compare({"G": G}, {"H": X}, held, z)


def test_overlapping_halves_are_refused(project):
    z = gd.sampling.latents(range(2), (1, 8, 8))
    with pytest.raises(ValueError, match="overlapping positions"):
        gd.experiments.compare_halves("n32", "overlap", z, profile="tiny")


def test_profiles_without_experiments_say_so(project):
    project({})
    (Path(gd.profiles.root()) / "profiles" / "tiny.yml").write_text("gaussian_shadow: {}\n")
    with pytest.raises(ValueError, match="defines no experiments"):
        gd.experiments.runs("tiny")
