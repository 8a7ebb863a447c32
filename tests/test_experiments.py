"""Experiments as data: run definitions, train-or-load, and the sweep analysis against exact oracles."""
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import gaussdiff_lib as gd

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "gaussdiff_lib" / "chapters"          # profiles, shipped reports
NOTEBOOKS_DIR = ROOT / "notebooks"                       # the chapter templates

CONVERGENCE = {"every": 0.5, "window": 0.5, "images": 8}   # snapshots at half and at the end of these short runs
PROFILE = {
    "experiments": {
        "convergence": CONVERGENCE,
        "defaults": {"dataset": "digits", "resolution": 8, "channels": 4, "steps": 6, "batch_size": 8, "lr": 2e-3},
        "runs": {
            "n32": {"n": 32, "snapshots": [2, 4]},
            "n32-half2": {"n": 32, "offset": 32, "seed": 1},
            "n32-seed1": {"n": 32, "seed": 1},
            "n32-sameseed": {"n": 32, "offset": 32},
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
    shutil.copytree(NOTEBOOKS_DIR, tmp_path / "notebooks")
    (tmp_path / "profiles" / "tiny.yml").write_text(yaml.safe_dump(PROFILE))
    monkeypatch.setenv("GAUSSDIFF_ROOT", str(tmp_path))

    def write(section, chapters=None):
        section = {"convergence": CONVERGENCE, **section} if section else section
        (tmp_path / "profiles" / "tiny.yml").write_text(yaml.safe_dump({"experiments": section, **(chapters or {})}))
    return write


def test_runs_merge_defaults_and_describe_themselves(project):
    r = gd.experiments.run("n32", "tiny")
    assert (r.n, r.channels, r.steps, r.batch_size, r.dataset, r.snapshots) == (32, 4, 6, 8, "digits", (2, 4))
    assert r.measured_steps == (3, 6) and r.kept_steps == (2, 3, 4)     # the criterion's snapshot joins the run's
    assert r.ema == 500_000 and r.convergence == gd.experiments.criterion("tiny")
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
    ({"runs": {"a": {"n": 4, "arch": "mlp"}}}, "arch must be one of"),
    ({"runs": {"a": {"n": 4}}, "sweeps": {"s": ["a", "b"]}}, r"sweep 's' of profile 'tiny' names undefined runs \['b'\]"),
    ({"runz": {}}, r"unknown keys \['runz'\]"),
    ({"runs": {"a": {"n": 4, "ema": 0.999}}}, "ema = 0.999 looks like a per-step decay"),
    ({"runs": {"a": {"n": 4, "steps": 1}}}, "run 'a' has 1 steps: too few for a convergence snapshot every 0.5"),
    ({"convergence": {"every": 0.5, "window": 0.25}}, "fewer than 2 points in the last 0.25"),
    ({"convergence": {"tolerence": 0.1}}, r"unknown keys \['tolerence'\] in 'convergence'"),
    ({"runs": {"a": {"n": 4, "checkpoint": "x.pkl", "checkpoint_sha256": "abc"}}}, "64 hexadecimal digits"),
    ({"runs": {"a": {"n": 4, "checkpoint_sha256": "a" * 64}}}, "and needs a checkpoint"),
    ({"runs": {"a": {"n": 4, "batch_size": 8, "accumulate": 3}}}, "accumulate = 3 micro-batches must divide its batch"),
])
def test_bad_definitions_are_named(project, section, msg):
    project({"runs": {"ok": {"n": 4}}, **section})
    with pytest.raises(ValueError, match=msg):
        gd.experiments.runs("tiny")
        gd.experiments.sweeps("tiny")


def test_unknown_names_list_the_defined_ones(project):
    with pytest.raises(ValueError, match=r"no run 'n16'; it defines \['lin', 'n32', 'n32-half2', 'n32-sameseed', "
                                         r"'n32-seed1', 'n64', 'overlap'\]"):
        gd.experiments.run("n16", "tiny")
    with pytest.raises(ValueError, match=r"no sweep 'width'; it defines \['halves', 'sizes'\]"):
        gd.experiments.sweep("width", "tiny")
    with pytest.raises(ValueError, match="keeps snapshots at steps \\[2, 3, 4\\], not 5"):
        gd.experiments.model("n32", "tiny", snapshot=5)


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
    """The Gaussian denoiser compared with itself is at distance 0 and, sampled by the same Euler sampler from
    the same latents as its reference, at sample distance exactly 0; the multi-delta denoiser copies every
    training image (memorized fraction 1, GL score 0 up to the sampler's last step). Every number carries an
    interval, and differences are paired over the same items."""
    X = gd.experiments.training_set("n32", "tiny")
    G = gd.denoisers.GaussianDenoiser.from_data(X)
    M = gd.denoisers.EmpiricalDenoiser(X)
    held = gd.data.load("digits", split="all", resolution=8, n=16, seed=9)
    z = gd.sampling.latents(range(12), (1, 8, 8))
    cmp = gd.experiments.compare({"G": G, "M": M}, {"G": X, "M": X}, held, z, linearity_levels=[1.0, 10.0],
                                 n_pairs=8, gaussians={"G": G, "M": G}, progress=False)
    g, m = cmp.rows
    assert float(cmp.distance["G"].abs().max()) < 1e-6
    assert g["RMSE(θ, G) intermediate σ"].hi < 1e-6 and g["min LS"].value > 0.9
    assert g["RMSE to Gaussian sample"].hi == 0.0                  # same model, same sampler, same latents
    assert m["memorized fraction"].value == 1.0 and m["GL score"].value < 1e-3
    assert float(cmp.delta_distance["M"].abs().max()) < 1e-6 and m["RMSE(θ, M) intermediate σ"].hi < 1e-6
    torch.testing.assert_close(cmp.delta_distance["G"], cmp.distance["M"])   # RMSE is symmetric
    torch.testing.assert_close(cmp.nearest["M"].double(), cmp.samples["M"].double(), atol=1e-3, rtol=0)
    torch.testing.assert_close(cmp.gaussian_samples["G"], cmp.samples["G"], atol=0, rtol=0)
    # the GL reference: held-out images against the training set, image by image
    torch.testing.assert_close(cmp.heldout_gl["G"], gd.metrics.gl_score(held, X, reduce=False))
    assert g["GL of held-out images"].lo <= float(cmp.heldout_gl["G"].mean()) <= g["GL of held-out images"].hi
    # paired differences: M's distance to D_G minus G's own (zero) distance is M's distance, with its interval
    d = cmp.difference("M", "G", "rmse_G_mid")
    assert d.value == pytest.approx(cmp.estimate("M", "rmse_G_mid").value) and d.lo > 0
    assert cmp.difference("M", "G", "copies").value == 1.0
    rows = cmp.figure_rows(n=3)
    assert list(rows) == [f"{k}: {w}" for k in ("G", "M") for w in ("samples", "nearest training", "Gaussian")]
    with pytest.raises(ValueError, match="same labels"):
        gd.experiments.compare({"G": G}, {"H": X}, held, z)
    with pytest.raises(ValueError, match="unknown measure 'fid'"):
        cmp.estimate("G", "fid")


def test_halves_need_disjoint_data_and_different_seeds(project):
    """A strong-generalization sweep lists S1, S2 and optionally F, F2: halves on disjoint positions of one order,
    cross pairs that differ in their seed, floors on the same images with another seed; anything else is refused."""
    def design(members):
        project({**PROFILE["experiments"], "sweeps": {"h": members}})
        return gd.experiments.halves_design("h", "tiny")
    with pytest.raises(ValueError, match="disjoint positions"):
        design(["n32", "overlap"])
    with pytest.raises(ValueError, match="share seed 0 .* inflates their agreement"):
        design(["n32", "n32-sameseed"])
    with pytest.raises(ValueError, match="must train on the same images"):
        design(["n32", "n32-half2", "n64"])
    with pytest.raises(ValueError, match="must differ in their seed"):
        design(["n32", "n32-half2", "n32"])
    with pytest.raises(ValueError, match="lists 1 runs"):
        design(["n32"])
    h1, h2 = design(["n32", "n32-half2", "n32-seed1", "n32-sameseed"])
    assert [r.name for r in h1] == ["n32", "n32-seed1"] and [r.name for r in h2] == ["n32-half2", "n32-sameseed"]


def test_halves_design_feeds_the_claim(project):
    """The chapter's path: the runs of a design, trained, go to gd.claims.strong_generalization, whose samples
    are those of the networks and of each half's Gaussian from the same latents with the same Euler sampler."""
    h1, h2 = gd.experiments.halves_design("halves", "tiny")
    z = gd.sampling.latents(range(6), (1, 8, 8))
    nets = ([gd.experiments.model(r) for r in h1], [gd.experiments.model(r) for r in h2])
    sets = (gd.experiments.training_set(h1[0]), gd.experiments.training_set(h2[0]))
    res = gd.claims.strong_generalization(nets, nets, {"large": sets, "small": sets}, {"large": z, "small": z})
    (s1, s2), (g1, g2) = res.samples["large"], res.gaussian_samples["large"]
    torch.testing.assert_close(s1[0], gd.sampling.euler(nets[0][0], z, gd.sampling.edm_sigmas(10)).cpu())
    torch.testing.assert_close(g2, gd.sampling.euler(gd.experiments.gaussian(h2[0]), z, gd.sampling.edm_sigmas(10)).cpu())
    rmse = gd.metrics.sample_rmse(s1[0], s2[0])
    assert res.values["RMSE(S1, S2) | large"].value == pytest.approx(float(rmse.mean()))


def test_certificate_measures_the_criterion_snapshots_once(project, monkeypatch):
    """A run's certificate measures the held-out loss and RMSE(D, D_G) at the criterion's steps (the same noisy
    held-out images each time), decides by the largest relative change over the window, and is stored beside
    the weights so that asking again measures nothing."""
    from gaussdiff_lib import convergence

    calls = []
    real = convergence.measure
    monkeypatch.setattr(convergence, "measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    cert = gd.experiments.certificate("n32", "tiny")
    assert [p["step"] for p in cert["points"]] == [3, 6] and len(calls) == 2
    final, half = cert["points"][1], cert["points"][0]
    change = abs(half["rmse_gaussian"] - final["rmse_gaussian"]) / final["rmse_gaussian"]
    assert cert["changes"]["rmse_gaussian"] == pytest.approx(change)
    generalizing = cert["changes"]["heldout_loss"] <= 0.05 and cert["changes"]["rmse_gaussian"] <= 0.05
    assert cert["converged"] == (cert["regime"] is not None) and (cert["regime"] == "generalizing") == generalizing
    assert {"train_loss", "copies"} <= set(final)            # the memorizing criterion's measures, at every point
    D = gd.experiments.model("n32", "tiny", snapshot=3)
    X = gd.experiments.training_set("n32", "tiny")
    held = gd.experiments.heldout_set("tiny", 8, seed=0)
    assert half["rmse_gaussian"] == pytest.approx(real(D, gd.experiments.gaussian("n32", "tiny"), held)["rmse_gaussian"])
    again = gd.experiments.certificate("n32", "tiny")
    assert again == cert and len(calls) == 2
    assert X.shape[0] == cert["n"] == 32 and cert["epochs"] == pytest.approx(1.5)
    row = gd.experiments.convergence_rows([cert])[0]
    assert row["converged"] in ("yes, generalizing", "yes, memorizing", "no") and row["Δ RMSE(θ, G)"].endswith("%")
    lin = gd.experiments.certificate("lin", "tiny")                # a one-level DAE is measured at its sigma
    assert len(lin["points"]) == 2


def test_certificates_are_bound_to_their_run(project):
    """Issue 28, item 1: a certificate copied from another run's folder, or written by hand, used to be trusted.
    Now each is bound to its run (key, options, the measured files' hashes, the library version) and the verdict
    is recomputed from the stored measurements."""
    import json

    from gaussdiff_lib import convergence

    a, b = gd.experiments.certificate("n32", "tiny"), gd.experiments.certificate("n64", "tiny")
    assert a["binding"]["run"] == "n32" and set(a["binding"]["files"]) == {"3", "6"}
    assert a["binding"]["key"] != b["binding"]["key"] and a["binding"]["files"] != b["binding"]["files"]
    run_a = gd.experiments.model("n32", "tiny").run_dir
    run_b = gd.experiments.model("n64", "tiny").run_dir
    (path_a,), (path_b,) = run_a.glob("convergence-*.json"), run_b.glob("convergence-*.json")
    assert path_a.name == path_b.name      # the same specification: only the binding tells them apart

    def measured_again(write):
        calls = []
        real = convergence.measure
        convergence.measure = lambda *x, **k: calls.append(1) or real(*x, **k)
        try:
            write()
            with pytest.warns(RuntimeWarning, match="measuring its snapshots again"):
                cert = gd.experiments.certificate("n32", "tiny")
        finally:
            convergence.measure = real
        assert len(calls) == 2 and cert["binding"] == a["binding"]
        return cert

    # another run's certificate copied in: its key and files differ, so it is measured again, not trusted
    cert = measured_again(lambda: path_a.write_text(path_b.read_text()))
    assert cert["points"] == a["points"] and cert["converged"] == a["converged"]
    # a hand-written verdict, and one missing its evidence
    measured_again(lambda: path_a.write_text(json.dumps({"converged": True})))
    stored = json.loads(path_a.read_text())
    measured_again(lambda: path_a.write_text(json.dumps({**stored, "points": stored["points"][:1]})))
    measured_again(lambda: path_a.write_text("[1, 2]"))
    # the verdict stored beside bound evidence is not read: it is recomputed from the measurements
    stored = json.loads(path_a.read_text())
    lie = {**stored, "converged": not stored["converged"], "regime": "memorizing", "changes": {}}
    path_a.write_text(json.dumps(lie))
    assert gd.experiments.certificate("n32", "tiny")["converged"] == a["converged"]
    del stored["changes"]                   # a missing field no longer stops anything (it used to be a KeyError)
    path_a.write_text(json.dumps(stored))
    assert gd.experiments.certificate("n32", "tiny")["changes"] == a["changes"]
    # weights that changed under the certificate (a snapshot replaced) unbind it
    snap = run_a / "snapshot-00000003.pt"
    blob = snap.read_bytes()
    snap.write_bytes(blob + b"\0")
    try:
        binding = gd.chapters.models._certificate_binding(gd.experiments.run("n32", "tiny"), run_a, "x")
        assert binding["files"]["3"] != a["binding"]["files"]["3"] and binding["files"]["6"] == a["binding"]["files"]["6"]
    finally:
        snap.write_bytes(blob)


@pytest.mark.parametrize("field, value, match", [
    ("lr", "fast", r"run 'n32': lr must be a number > 0, got 'fast' \(e\.g\. lr: 0\.001\)"),
    ("steps", -3, r"run 'n32': steps must be a positive integer, got -3 \(e\.g\. steps: 2000\)"),
    ("dataset", 7, r"dataset must be a string, got 7"),
    ("snapshots", [2, "x"], r"snapshots must be a list of positive integers"),
    ("dropout", True, r"dropout must be a number >= 0, got True")])
def test_profile_values_of_the_wrong_type_are_refused_before_anything_runs(project, monkeypatch, capsys, field,
                                                                           value, match):
    """Issue 28, item 2: ``lr: fast`` ended in a 34-line TypeError from inside training, ``steps: -3`` was not refused
    up front. Now the run's fields are checked against their kinds when the profile is read, in one line naming the
    key, the kind and an example, and `train` stops before training any run."""
    from gaussdiff_lib.__main__ import main

    project({**PROFILE["experiments"], "runs": {**PROFILE["experiments"]["runs"], "n32": {"n": 32, field: value}}})
    with pytest.raises(ValueError, match=match):
        gd.experiments.runs("tiny")
    monkeypatch.setattr(gd.chapters.models, "model", lambda *a, **k: pytest.fail("trained despite a bad profile"))
    assert main(["train", "--profile", "tiny", "--runs", "n64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: profiles/tiny.yml, run 'n32'")


def test_a_profile_that_is_not_valid_yaml_names_its_file_and_line(project):
    path = Path(gd.profiles.root()) / "profiles" / "tiny.yml"
    path.write_text("experiments:\n  defaults: {steps: 6\n  runs: {}\n")
    with pytest.raises(ValueError, match=r"tiny\.yml, line \d+, column \d+: not valid YAML"):
        gd.profiles.load("tiny")


def test_set_values_of_the_wrong_kind_are_refused_in_one_line(tmp_path):
    """Issue 27/28: ``--set x.n_samples=abc`` ended in a traceback from inside the notebook."""
    from gaussdiff_lib.chapters.execute import execute, parse_overrides

    for item, match in [("dataset_size.n_samples=abc", r"n_samples must be an integer, got a string \(e\.g\. "
                                                        r"dataset_size\.n_samples=\d+\)"),
                        ("dataset_size.n_show=true", "n_show must be an integer, got a boolean"),
                        ("dataset_size.sweep=[1, 2]", "sweep must be a string, got a list")]:
        with pytest.raises(ValueError, match=match):
            execute("smoke", tmp_path, only=["dataset_size"], overrides=parse_overrides([item]))
    assert not any(tmp_path.iterdir())                      # refused before anything ran or was written
    from gaussdiff_lib.chapters.execute import _check_types
    smoke = gd.profiles.parameters("emerging_linearity", "smoke")       # alphas2 is a string: '0.99,0.5'
    assert _check_types("emerging_linearity", {"alphas2": 0.9}, smoke, "--set") == {"alphas2": "0.9"}


def test_convergence_sentence_names_the_unconverged_runs():
    base = {"n": 8, "steps": 100, "epochs": 1.0, "points": [], "window": [75, 100], "tolerance": 0.05}
    ok = {**base, "run": "a", "changes": {"heldout_loss": 0.01, "rmse_gaussian": 0.02}, "converged": True}
    bad = {**base, "run": "b", "changes": {"heldout_loss": 0.12, "rmse_gaussian": 0.02}, "converged": False,
           "points": [{"step": 75, "heldout_loss": 0.8, "rmse_gaussian": 0.1},
                      {"step": 100, "heldout_loss": 0.9, "rmse_gaussian": 0.1}]}
    assert gd.experiments.convergence_sentence([ok]).startswith("All 1 trained networks")
    text = gd.experiments.convergence_sentence([ok, bad])
    assert "1 of the 2" in text and "b (12%" in text and "rises" in text
    pub = {"run": "p", "n": 8, "steps": 0, "epochs": None, "points": [], "changes": {}, "converged": None,
           "window": [], "tolerance": None}
    assert "published weights only" in gd.experiments.convergence_sentence([pub])
    assert gd.experiments.convergence_rows([pub])[0]["converged"] == "published weights"


def test_profiles_without_experiments_say_so(project):
    project({})
    (Path(gd.profiles.root()) / "profiles" / "tiny.yml").write_text("gaussian_shadow: {}\n")
    with pytest.raises(ValueError, match="defines no experiments"):
        gd.experiments.runs("tiny")


def test_train_command_shards_partition_the_runs(project, monkeypatch, capsys):
    from gaussdiff_lib.__main__ import main, shard

    names = list(gd.experiments.runs("tiny"))
    shares = [shard(names, f"{i}/3") for i in range(3)]
    assert sorted(sum(shares, [])) == sorted(names) and sum(map(len, shares)) == len(names)
    trained = []
    monkeypatch.setattr(gd.chapters.models, "model", lambda r, profile, device=None, progress=None: trained.append(r))
    monkeypatch.setattr(gd.chapters.models, "certificate", lambda r, profile, device=None, progress=None: {"converged": True})
    for i in range(2):
        assert main(["train", "--profile", "tiny", "--sweep", "sizes", "halves", "--shard", f"{i}/2"]) == 0
    assert sorted(trained) == ["n32", "n32-half2", "n64"]          # each run of the two sweeps once
    main(["train", "--profile", "tiny", "--shard", "1/2", "--dry-run"])
    assert len(trained) == 3 and "n32-half2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--profile", "tiny", "--shard", "2/2"])
    assert main(["train", "--profile", "tiny", "--runs", "n999"]) == 2
    assert "error: profile 'tiny' has no runs ['n999']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--profile", "tiny", "--jobs", "zero"])


def test_train_command_runs_two_processes_and_certifies(project, monkeypatch, tmp_path):
    """--jobs 2 trains runs in two processes, each certified; the cache then serves them without training."""
    import os
    import subprocess
    import sys

    from gaussdiff_lib.__main__ import jobs_for

    assert jobs_for("3", None) == 3 and jobs_for("auto", "cpu") == min(2, os.cpu_count() or 1)
    assert jobs_for("auto", "cuda:0") == 1

    # the real command line (python -m): worker processes must be able to import the job they run; a cache of its
    # own, so that no earlier test has trained these runs already
    monkeypatch.setenv("GAUSSDIFF_CACHE", str(tmp_path / "cache"))
    record = tmp_path / "timings.json"
    command = [sys.executable, "-m", "gaussdiff_lib", "train", "--profile", "tiny", "--runs", "n32", "n64", "lin",
               "--jobs", "2", "--timings", str(record)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "training 3 runs in 2 processes" in out and out.count("converged") == 3
    # the time record: every run trained now, with its training and certificate seconds, and the phase
    data = gd.chapters.timings.load(record)
    runs = {r["name"]: r for r in data["runs"]}
    assert set(runs) == {"n32", "n64", "lin"} and all(r["trained"] for r in runs.values())
    assert all(r["training_seconds"] > 0 and r["certificate_seconds"] > 0 for r in runs.values())
    assert [p["name"] for p in data["phases"]] == ["training"] and data["phases"][0]["trained"] == 3
    assert data["phases"][0]["seconds"] >= max(r["seconds"] for r in runs.values())
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)   # warm: all from the cache
    assert again.returncode == 0 and again.stdout.count("(cached)") == 3, again.stderr
    data = gd.chapters.timings.load(record)
    assert not any(r["trained"] for r in data["runs"]) and data["phases"][0]["trained"] == 0
    assert {r["name"]: r["training_seconds"] for r in data["runs"]} == \
        {n: r["training_seconds"] for n, r in runs.items()}      # as recorded when trained, not this build's

    def no_training(*a, **k):
        raise AssertionError("a trained run was trained again")

    monkeypatch.setattr(gd.training, "edm_loss", no_training)
    gd.experiments.model("n64", "tiny")
    assert gd.experiments.certificate("lin", "tiny")["points"]


def test_edm_architectures_train_and_published_checkpoints_load(project, tmp_path):
    from gaussdiff_lib import checkpoints
    from gaussdiff_lib.edm_networks import SongUNet

    kwargs = dict(img_resolution=8, in_channels=1, out_channels=1, model_channels=8, channel_mult=[1, 2],
                  num_blocks=1, embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
                  resample_filter=[1, 3, 3, 1], attn_resolutions=[4], dropout=0.0)
    net = SongUNet(**kwargs)
    ckpt = tmp_path / "published.pt"
    torch.save({"format": checkpoints.EXPORT_FORMAT, "precond": {"sigma_data": 0.5}, "model_kwargs": kwargs,
                "state_dict": net.state_dict()}, ckpt)
    project({"defaults": {"dataset": "digits", "resolution": 8, "channels": 4, "steps": 3, "batch_size": 4},
             "runs": {"ncsn": {"n": 16, "arch": "ncsnpp", "channel_mult": "1,2"},
                      "edm": {"n": 16, "checkpoint": str(ckpt)}}})
    D = gd.experiments.model("ncsn", "tiny", progress=False)
    assert isinstance(D.net, SongUNet) and D.net.config["arch"] == "ncsnpp"
    with pytest.warns(gd.experiments.LicenseNotice, match="CC BY-NC-SA"):
        E = gd.experiments.model("edm", "tiny")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(E(x, 2.0), gd.denoisers.EDMDenoiser(net)(x, 2.0))
    assert E.run.name == "edm" and E.step is None
    project({"runs": {"bad": {"n": 16, "checkpoint": str(ckpt), "snapshots": [1]}}})
    with pytest.raises(ValueError, match="published checkpoint"):
        gd.experiments.run("bad", "tiny")


def test_heldout_sources_per_dataset(project, tmp_path):
    import numpy as np

    np.save(tmp_path / "held.npy", np.full((5, 8, 8), 255, dtype=np.uint8))
    base = {"defaults": {"dataset": "digits", "resolution": 8}, "runs": {"a": {"n": 4}}}
    project({**base, "heldout": str(tmp_path / "held.npy")})
    assert torch.all(gd.experiments.heldout_set("tiny", 3) == 1)                  # the default dataset's source
    project({**base, "heldout": {"digits": str(tmp_path / "held.npy")}})
    assert torch.all(gd.experiments.heldout_set("tiny", 3, dataset="digits") == 1)
    other = gd.experiments.heldout_set("tiny", 3, dataset=str(tmp_path / "held.npy"), resolution=4)
    assert other.shape == (3, 1, 4, 4)                                              # no entry: that dataset itself
    project(base)
    torch.testing.assert_close(gd.experiments.heldout_set("tiny", 3),
                               gd.data.load("digits", split="test", n=3, resolution=8))


def test_training_plan_and_memory_follow_their_formulas(project, tmp_path):
    project({"defaults": {"dataset": "digits", "resolution": 8, "channels": 4, "steps": 1000, "batch_size": 50},
             "runs": {"a": {"n": 10}, "b": {"n": 20, "channels": 8}, "p": {"n": 30, "checkpoint": "x.pkl"}}})
    r = gd.experiments.run("a", "tiny")
    measured = {"configs": {r.config_key: {"img_per_s": 25.0, "peak_gib": 1.5, "params": 99}}}
    plan = {row["run"]: row for row in gd.experiments.training_plan("tiny", measured)}
    assert plan["a"]["mimg"] == pytest.approx(0.05) and plan["a"]["hours"] == pytest.approx(1000 * 50 / 25 / 3600)
    assert plan["a"]["peak_gib"] == 1.5 and plan["a"]["epochs"] == pytest.approx(5000)
    assert plan["b"]["hours"] is None                       # its configuration was not measured
    assert plan["p"]["hours"] == 0 and plan["p"]["arch"] == "published"


def test_chapters_say_where_their_weights_come_from(project):
    # a profile naming every run and sweep the templates' defaults ask for; the first chapter's large run
    # is a published checkpoint
    names, sweeps, chapters = set(), set(), {}
    cpu = yaml.safe_load((TEMPLATES / "profiles" / "cpu.yml").read_text())
    for nb in gd.profiles.notebooks():                  # the run and sweep names the cpu profile gives each chapter
        params = {**gd.profiles.defaults(nb.stem), **cpu.get(nb.stem, {})}
        for key, value in params.items():
            if key in gd.experiments.RUN_PARAMETERS:
                names.add(value)
                chapters.setdefault(nb.stem, {})[key] = value
            elif key == "sweep" or key.endswith(("_sweep", "_pair")):
                sweeps.add(value)
                chapters.setdefault(nb.stem, {})[key] = value
    large = cpu["gaussian_shadow"]["large"]
    runs = {name: {"n": 16} for name in names | {"s1"}}
    runs[large] = {"n": 16, "checkpoint": "https://example.org/edm-ffhq-64x64-uncond-ve.pkl"}
    project({"defaults": {"dataset": "digits", "resolution": 8}, "runs": runs,
             "sweeps": {name: ["s1"] for name in sweeps}}, chapters)
    rows = {r["chapter"]: r for r in gd.experiments.chapter_networks("tiny")}
    assert rows["gaussian_shadow"]["weights"].startswith("NVIDIA checkpoint edm-ffhq-64x64-uncond-ve.pkl")
    assert rows["gaussian_shadow"]["runs"].startswith(large)
    assert rows["training_time"]["weights"] == "trained here (unet)"
    assert "scale" not in rows                                # names no networks
    assert gd.experiments.data_sources("tiny") == [
        {"source": "digits", "role": "training (its test split held out)", "runs": len(runs),
         "present here": "registered name"}]


def test_bars_and_template_defaults():
    ax = gd.plotting.bars({"a": 1.0, "b": 10.0}, xlabel="hours", logx=True)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"] and ax.get_xscale() == "log"
    assert gd.profiles.defaults("scale")["target"] == "paper"
    with pytest.raises(ValueError, match="no notebook 'nope'"):
        gd.profiles.defaults("nope")


def test_a_run_s_accumulation_reaches_training_and_changes_memory_not_the_run(project, monkeypatch):
    project({"defaults": {"dataset": "digits", "resolution": 8, "channels": 4, "steps": 4, "batch_size": 8},
             "runs": {"a": {"n": 32}, "b": {"n": 32, "accumulate": 4}}})
    seen = []
    real = gd.training.train
    monkeypatch.setattr(gd.training, "train", lambda *a, **k: seen.append(k["accumulate"]) or real(*a, **k))
    b = gd.experiments.model("b", "tiny", device="cpu", progress=False)
    assert seen == [4]                           # trained in four micro-batches of 2
    a = gd.experiments.model("a", "tiny", device="cpu", progress=False)
    assert a.run_dir == b.run_dir                # and it is the same run: a finds b's weights


def test_fit_tables_show_each_fit_s_sampling_facts():
    """The linear chapter's fit table and its image-limit sentence, from fit_linear's info, by hand."""
    from types import SimpleNamespace

    def info(sigma, samples, err, floor=None, needed=None, limited=None):
        return {"sigma": sigma, "samples": samples, "rel_error": err, "rmse_error": err / 10, "floor": floor,
                "images_needed": needed, "limited_by": limited}

    a = SimpleNamespace(info=[info(1.5, 800, 0.04), info(0.5, 1600, 0.09, 0.081, 5200, "images")])
    b = SimpleNamespace(info=[info(1.5, 800, 0.06, 0.02, 300, "draws"), info(0.5, 1600, 0.2, 0.19, 31000, "images")])
    rows = gd.experiments.fit_rows({"large": a, "small": b})
    assert rows[0] == {"σ": 1.5, "large: inputs": 800, "large: W error": 0.04, "large: output error": 0.004,
                       "large: image floor": "–", "large: images for the target": "–", "small: inputs": 800,
                       "small: W error": 0.06, "small: output error": 0.006, "small: image floor": "0.020",
                       "small: images for the target": "300"}
    assert rows[1]["small: images for the target"] == "31,000" and rows[1]["large: image floor"] == "0.081"
    assert gd.experiments.image_limit(a.info, 400, 0.05) == (
        "1 of the 2 levels are limited by the 400 images, not the draws: their own spread leaves a relative W error "
        "of up to 0.081 (at σ = 0.5) however many draws are added, and about 5,200 held-out images would be needed "
        "to bring those levels to 0.05")
    assert gd.experiments.image_limit(a.info[:1], 400, 0.05) == "no level is limited by the 400 images"
    with pytest.raises(ValueError, match="same noise levels"):
        gd.experiments.fit_rows({"large": a, "other": SimpleNamespace(info=a.info[:1])})


def test_a_run_that_is_part_of_a_longer_one_is_that_run_s_snapshot(project, monkeypatch, tmp_path):
    """Issue 26 (share work between runs): a run with ``part_of`` is the longer run's EMA weights at its own steps,
    so a run and its longer control cost one training. Oracles: the same recipe trained on its own for those steps
    (training depends on the total only through the warm-up, which the shorter run takes from the longer one), and
    the longer run trained in one go."""
    project({"defaults": {"dataset": "digits", "resolution": 8, "channels": 4, "steps": 6, "batch_size": 8,
                          "lr": 2e-3},
             "runs": {"alone": {"n": 32, "warmup": 2}, "short": {"n": 32, "part_of": "long"},
                      "long": {"n": 32, "steps": 12, "warmup": 2}}})
    short, long_ = gd.experiments.run("short", "tiny"), gd.experiments.run("long", "tiny")
    assert short.warmup_steps == 2 and short.trained_as == "long" and long_.trained_as == "long"
    assert {6, *short.measured_steps} <= set(long_.kept_steps) and long_.measured_steps == (6, 12)
    steps = []                                                   # optimizer steps taken, one loss each
    real = gd.training.edm_loss
    monkeypatch.setattr(gd.training, "edm_loss", lambda *a, **k: steps.append(1) or real(*a, **k))
    D = gd.experiments.model("short", "tiny", progress=False)
    assert len(steps) == 6 and D.run.name == "short" and D.step == 6 and D.epoch == pytest.approx(6 * 8 / 32)
    assert D.stats and D.stats[-1]["step"] == 6                  # its loss is logged up to its own last step
    alone = gd.experiments.model("alone", "tiny", progress=False)
    for k, v in alone.net.state_dict().items():                  # bit for bit the 6-step run's EMA weights
        torch.testing.assert_close(D.net.state_dict()[k], v, rtol=0, atol=0)
    L = gd.experiments.model("long", "tiny", progress=False)
    assert len(steps) == 6 + 6 + 6 and L.step == 12              # the longer run continued from step 6
    X = gd.experiments.training_set("long", "tiny")
    one_go = gd.training.train(gd.chapters.models.network(long_, X), X, steps=12, batch_size=8, lr=2e-3, seed=0,
                               warmup_steps=2, snapshot_steps=long_.kept_steps, run_dir=tmp_path / "one-go",
                               progress=False)
    for k, v in one_go.net.state_dict().items():
        torch.testing.assert_close(L.net.state_dict()[k], v, rtol=0, atol=0)
    assert any((a - b).abs().max() > 0 for a, b in zip(L.net.parameters(), D.net.parameters()))
    again = gd.experiments.model("short", "tiny", progress=False)   # now read from the finished run: no training
    assert len(steps) == 18 + 12
    assert again.stats[-1]["step"] == 6 and all(row["step"] <= 6 for row in again.stats)
    for k, v in D.net.state_dict().items():
        torch.testing.assert_close(again.net.state_dict()[k], v, rtol=0, atol=0)
    early = gd.experiments.model("short", "tiny", snapshot=3, progress=False)
    assert early.step == 3 and early.run.name == "short" and all(row["step"] <= 3 for row in early.stats)
    cert = gd.experiments.certificate("short", "tiny")
    assert [p["step"] for p in cert["points"]] == [3, 6] and set(cert["binding"]["files"]) == {"3", "6"}
    assert cert["binding"]["files"]["6"] == gd.data.file_hash(L.run_dir / "snapshot-00000006.pt")
    row = gd.chapters.models.train_job(("tiny", "short", None, 0))
    assert row["part_of"] == "long" and row["training_seconds"] is None and not row["trained"]
    table = gd.chapters.timings.tables({"runs": [row]})[0][2][0]
    assert "part of long" in table
    with pytest.raises(ValueError, match="until = 12 needs a snapshot at or before it and must stop before"):
        gd.experiments.model("long", "tiny", snapshot=6, until=12)


def test_a_shorter_run_trained_first_is_counted_once_and_its_snapshot_rebuilt(project, monkeypatch, tmp_path):
    """The shorter run asked for first trains the longer run's first steps; the time record says so, and the longer
    run's row counts both starts of its training (each start's clock begins at zero). A corrupt snapshot of the
    unfinished longer run is rebuilt by training again, to the same weights."""
    import json

    monkeypatch.setenv("GAUSSDIFF_CACHE", str(tmp_path / "cache"))     # nothing trained by an earlier test
    project({"defaults": {"dataset": "digits", "resolution": 8, "channels": 4, "steps": 6, "batch_size": 8,
                          "lr": 2e-3},
             "runs": {"short": {"n": 32, "part_of": "long"}, "long": {"n": 32, "steps": 12, "warmup": 2}}})
    first = gd.chapters.models.train_job(("tiny", "short", None, 0))
    assert first["trained"] and first["part_of"] == "long" and first["training_seconds"] is None
    D = gd.experiments.model("short", "tiny", progress=False)
    snap = D.run_dir / "snapshot-00000006.pt"
    snap.write_bytes(snap.read_bytes()[:100])                       # cut short
    with pytest.warns(RuntimeWarning, match="rebuilding it"):
        again = gd.experiments.model("short", "tiny", progress=False)
    for k, v in D.net.state_dict().items():
        torch.testing.assert_close(again.net.state_dict()[k], v, rtol=0, atol=0)
    second = gd.chapters.models.train_job(("tiny", "long", None, 0))
    log = [json.loads(line) for line in (D.run_dir / "stats.jsonl").read_text().splitlines()]
    ends = {}
    for entry in log:                                                # each start's clock begins at zero
        ends[entry["from"]] = entry["seconds"]
    assert set(ends) == {0, 6}                                       # started at 0, resumed at 6
    assert second["trained"] and second["training_seconds"] == pytest.approx(sum(ends.values()))
    assert second["training_seconds"] > log[-1]["seconds"]


@pytest.mark.parametrize("runs, msg", [
    ({"s": {"n": 4, "part_of": "nope"}}, r"part_of 'nope' names no run of the profile"),
    ({"s": {"n": 4, "part_of": "m"}, "m": {"n": 4, "part_of": "l"}, "l": {"n": 4, "steps": 4000}},
     r"part_of 'm' is itself part of 'l'; name the run that is trained, 'l'"),
    ({"s": {"n": 4, "part_of": "l"}, "l": {"n": 4}}, r"its 2000 steps must be fewer than the 2000 of 'l'"),
    ({"s": {"n": 4, "part_of": "l"}, "l": {"n": 4, "steps": 4000, "lr": 1e-3}}, r"differs from 'l' in \['lr'\]"),
    ({"s": {"n": 4, "part_of": "l", "warmup": 200}, "l": {"n": 4, "steps": 4000}},
     r"warmup 200 differs from the 400 warm-up steps of 'l'"),
    ({"s": {"n": 4, "warmup": 0}}, r"warmup must be a positive integer or null, got 0"),
])
def test_part_of_definitions_that_cannot_share_a_training_are_named(project, runs, msg):
    project({"runs": runs})
    with pytest.raises(ValueError, match=msg):
        gd.experiments.runs("tiny")
