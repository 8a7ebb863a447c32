"""Training: resumption equals an uninterrupted run, corrupt files are detected, the cache short-circuits."""
import json
import math
import os
from pathlib import Path

import pytest
import torch

import gaussdiff_lib as gd
from gaussdiff_lib import cache as gcache
from gaussdiff_lib import training


def _X(n=24):
    return gd.data.load("digits", n=n, seed=0)


def _net():
    return gd.networks.UNet(1, 8, 8, (1, 2), seed=0)


OPTS = dict(steps=12, batch_size=8, lr=2e-3, ema=100, seed=3, checkpoint_every=4, progress=False)


def _weights(D):
    return {k: v.clone() for k, v in D.net.state_dict().items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=f"parameter {k} differs")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _weights(training.train(_net(), _X(), run_dir=tmp_path_factory.mktemp("a"), **OPTS))


class _Interrupt(BaseException):
    pass


def _interrupt_after(monkeypatch, n_saves):
    real = gcache.save_atomic
    count = {"n": 0}

    def save(obj, path, **kwargs):
        real(obj, path, **kwargs)
        count["n"] += 1
        if count["n"] >= n_saves:
            raise _Interrupt()

    monkeypatch.setattr(gcache, "save_atomic", save)


def test_training_changes_weights_and_lowers_loss(uninterrupted):
    init = _net().state_dict()
    assert any(not torch.equal(init[k], uninterrupted[k]) for k in init)
    D = training.train(_net(), _X(), **{**OPTS, "steps": 150, "log_every": 25})
    assert D.stats[-1]["loss"] < D.stats[0]["loss"]


def test_resume_equals_uninterrupted(tmp_path, monkeypatch, uninterrupted):
    _interrupt_after(monkeypatch, 2)                  # dies right after the step-8 checkpoint
    with pytest.raises(_Interrupt):
        training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    monkeypatch.undo()
    assert [p.name for p in training._checkpoints(tmp_path)] == ["checkpoint-00000004.pt", "checkpoint-00000008.pt"]
    resumed = training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    _assert_same(_weights(resumed), uninterrupted)
    steps = [json.loads(line)["step"] for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))                # each logged step once


def test_corrupt_checkpoint_falls_back(tmp_path, monkeypatch, uninterrupted):
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(_Interrupt):
        training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    monkeypatch.undo()
    latest = tmp_path / "checkpoint-00000008.pt"
    latest.write_bytes(latest.read_bytes()[:-100])      # truncated by a crash or a bad copy
    with pytest.warns(RuntimeWarning, match="checkpoint-00000008.pt is corrupt"):
        resumed = training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    _assert_same(_weights(resumed), uninterrupted)


def test_finished_run_loads_without_training(tmp_path, monkeypatch, uninterrupted):
    training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    monkeypatch.setattr(training, "edm_loss", lambda *a, **k: pytest.fail("retrained a finished run"))
    _assert_same(_weights(training.train(_net(), _X(), run_dir=tmp_path, **OPTS)), uninterrupted)
    _assert_same(_weights(training.load_run(tmp_path)), uninterrupted)


def test_cache_true_trains_once(monkeypatch, uninterrupted):
    first = training.train(_net(), _X(), cache=True, **OPTS)
    assert first.run_dir is not None and (first.run_dir / "final.pt").exists()
    monkeypatch.setattr(training, "edm_loss", lambda *a, **k: pytest.fail("cache miss"))
    second = training.train(_net(), _X(), cache=True, **OPTS)
    assert second.run_dir == first.run_dir
    _assert_same(_weights(second), uninterrupted)
    monkeypatch.undo()
    other = training.train(_net(), _X(n=20), cache=True, **OPTS)   # other data: another key
    assert other.run_dir != first.run_dir


def test_corrupt_final_is_recomputed(tmp_path, uninterrupted):
    training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    final = tmp_path / "final.pt"
    final.write_bytes(final.read_bytes()[: len(final.read_bytes()) // 2])
    with pytest.warns(RuntimeWarning, match="final.pt is corrupt"):
        again = training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    _assert_same(_weights(again), uninterrupted)


def test_snapshots_are_kept(tmp_path):
    training.train(_net(), _X(), run_dir=tmp_path, snapshot_steps=[5, 12], **OPTS)
    assert sorted(p.name for p in tmp_path.glob("snapshot-*.pt")) == ["snapshot-00000005.pt", "snapshot-00000012.pt"]
    early = training.load_run(tmp_path, snapshot=5)
    assert isinstance(early, gd.denoisers.EDMDenoiser)
    with pytest.raises(FileNotFoundError, match="snapshot-00000007.pt not in"):
        training.load_run(tmp_path, snapshot=7)
    with pytest.raises(ValueError, match="snapshot_steps and until are kept in the run folder"):
        training.train(_net(), _X(), snapshot_steps=[5], **OPTS)


def test_run_dir_of_another_run_is_refused(tmp_path):
    training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    with pytest.raises(ValueError, match="holds a different run"):
        training.train(_net(), _X(), run_dir=tmp_path, **{**OPTS, "lr": 1e-3})


# ------------------------------------------------------------ fault injection: files of other runs, leftovers
@pytest.mark.parametrize("name", ["final.pt", "checkpoint-00000008.pt"])
def test_a_valid_file_of_another_run_is_not_used(tmp_path, uninterrupted, name):
    """Run B's final weights (or checkpoint) copied into run A's folder: A must not return or resume from B's
    weights. Every weights file carries its run's key in its digest, so B's file counts as corrupt in A."""
    a, b = tmp_path / "a", tmp_path / "b"
    training.train(_net(), _X(), run_dir=a, **OPTS)
    other = {**OPTS, "seed": 4}
    if name == "final.pt":
        training.train(_net(), _X(), run_dir=b, **other)
        (a / name).write_bytes((b / name).read_bytes())
    else:  # a checkpoint of B beside A's options, A's final gone: A would resume from B's step 8
        training.train(_net(), _X(), run_dir=b, until=8, **other)
        (a / "final.pt").unlink()
        (a / name).write_bytes((b / name).read_bytes())
    with pytest.warns(RuntimeWarning, match="corrupt or belongs to another run"):
        again = training.train(_net(), _X(), run_dir=a, **OPTS)
    _assert_same(_weights(again), uninterrupted)


def test_a_swapped_cache_entry_is_recomputed(tmp_path):
    one = gcache.cached("gaussian", {"data": 1}, lambda: {"mean": torch.zeros(3)}, root=tmp_path)
    two = gcache.cached("gaussian", {"data": 2}, lambda: {"mean": torch.ones(3)}, root=tmp_path)
    p1 = gcache.entry_path("gaussian", gcache.digest("gaussian", {"data": 1}), tmp_path)
    p2 = gcache.entry_path("gaussian", gcache.digest("gaussian", {"data": 2}), tmp_path)
    p1.write_bytes(p2.read_bytes())  # the other dataset's statistics under this dataset's name
    with pytest.warns(RuntimeWarning, match="corrupt or belongs to another run"):
        again = gcache.cached("gaussian", {"data": 1}, lambda: {"mean": torch.zeros(3)}, root=tmp_path)
    assert torch.equal(again["mean"], one["mean"]) and not torch.equal(again["mean"], two["mean"])


def test_files_written_before_keys_existed_still_load(tmp_path):
    legacy = tmp_path / "old.pt"
    buf = __import__("io").BytesIO()
    torch.save({"x": torch.arange(3)}, buf)
    payload = buf.getvalue()
    legacy.write_bytes(__import__("hashlib").sha256(payload).hexdigest().encode() + b"\n" + payload)
    assert torch.equal(gcache.load_verified(legacy, key="any-run")["x"], torch.arange(3))


def test_an_empty_options_file_is_recovered_and_named(tmp_path, uninterrupted):
    training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    (tmp_path / "options.json").write_text("")  # a kill inside a non-atomic write left it empty
    with pytest.raises(ValueError, match="options.json is unreadable.*train the run again"):
        training.load_run(tmp_path)
    with pytest.warns(RuntimeWarning, match="options.json was unreadable"):
        again = training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    _assert_same(_weights(again), uninterrupted)
    assert json.loads((tmp_path / "options.json").read_text())["steps"] == OPTS["steps"]
    _assert_same(_weights(training.load_run(tmp_path)), uninterrupted)


def test_text_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "stats.jsonl"
    path.write_text('{"step": 1}\n')

    def killed(fd):
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        gcache.write_text_atomic(path, '{"step": 1}\n{"step": 2}\n')
    assert path.read_text() == '{"step": 1}\n' and list(tmp_path.glob(".*.tmp")) == []


def test_leftovers_of_a_killed_run_are_cleaned(tmp_path, uninterrupted):
    training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    (tmp_path / ".checkpoint-00000008.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    # a kill between writing final.pt and removing the checkpoints leaves full checkpoints behind
    key = json.loads((tmp_path / "options.json").read_text())["key"]
    state = gcache.load_verified(tmp_path / "final.pt", key=key)
    for step in (4, 8):
        gcache.save_atomic({**state, "step": step, "opt": {}}, tmp_path / f"checkpoint-{step:08d}.pt", key=key)
    again = training.train(_net(), _X(), run_dir=tmp_path, **OPTS)
    _assert_same(_weights(again), uninterrupted)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("train.lock")) == \
        ["final.pt", "options.json", "stats.jsonl"]


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(X=torch.zeros(0, 1, 8, 8)), ValueError, r"X is an empty dataset \(0 images\)"),
    (dict(X=torch.zeros(4, 3, 8, 8)), ValueError, r"the network expects images shaped \[B, 1, 8, 8\]"),
    (dict(lr=0.0), ValueError, "lr must be a finite number > 0"),
    (dict(ema=0.995), ValueError, r"ema = 0.995 looks like a per-step decay.*half-life of 1106 images"),
    (dict(ema=-1.0), ValueError, r"ema is an EMA half-life in training images \(>= 0"),
    (dict(ema=float("nan")), ValueError, r"ema is an EMA half-life"),
    (dict(ema_rampup=2.0), ValueError, r"ema_rampup is a fraction of the images seen, in \(0, 1\]"),
    (dict(steps=0), ValueError, "steps must be a positive integer"),
    (dict(snapshot_steps=[20]), ValueError, r"snapshot_steps must lie in \[1, steps=12\]"),
])
def test_bad_training_input(kwargs, exc, msg):
    args = {**OPTS, "X": _X(), **kwargs}
    X = args.pop("X")
    with pytest.raises(exc, match=msg):
        training.train(_net(), X, **args)


# --------------------------------------------------------------------------------- the cache module
def test_cache_detects_and_recomputes_corrupt_entry(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(1000.0)}

    a = gcache.cached("thing", {"p": 1}, compute, root=tmp_path)
    b = gcache.cached("thing", {"p": 1}, compute, root=tmp_path)
    assert len(calls) == 1 and torch.equal(a["w"], b["w"])
    path = gcache.entry_path("thing", gcache.digest("thing", {"p": 1}), tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(gcache.CorruptFileError, match="is corrupt: its content does not match its SHA-256"):
        gcache.load_verified(path)
    with pytest.warns(RuntimeWarning, match="recomputing"):
        c = gcache.cached("thing", {"p": 1}, compute, root=tmp_path)
    assert len(calls) == 2 and torch.equal(c["w"], a["w"])
    gcache.cached("thing", {"p": 2}, compute, root=tmp_path)
    assert len(calls) == 3


def test_foreign_file_is_rejected(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"a": 1}, bad)
    with pytest.raises(gcache.CorruptFileError, match="not a gaussdiff artifact"):
        gcache.load_verified(bad)


def test_digest_is_content_based():
    a = torch.arange(6.0).reshape(2, 3)
    assert gcache.digest(a) == gcache.digest(a.clone())
    assert gcache.digest(a) != gcache.digest(a.reshape(3, 2))
    assert gcache.digest(a) != gcache.digest(a.double())
    assert gcache.digest({"x": 1, "y": 2}) == gcache.digest({"y": 2, "x": 1})
    with pytest.raises(TypeError, match="cannot hash a object"):
        gcache.digest(object())


def test_gaussian_statistics_cache(monkeypatch):
    X = _X(50)
    G1 = gd.denoisers.GaussianDenoiser.from_data(X, cache=True)
    monkeypatch.setattr(gd.denoisers.GaussianDenoiser, "statistics",
                        staticmethod(lambda *a, **k: pytest.fail("recomputed cached statistics")))
    G2 = gd.denoisers.GaussianDenoiser.from_data(X, rank=10, cache=True)
    torch.testing.assert_close(G2.eigenvalues, G1.eigenvalues[:10])


_CONCURRENT = """
import sys, torch
import gaussdiff_lib as gd
X = gd.data.load("digits", n=24, seed=0)
net = gd.networks.UNet(1, 8, 8, (1, 2), seed=0)
D = gd.training.train(net, X, steps=40, batch_size=8, lr=2e-3, ema=100, seed=3, progress=False, cache=True)
print(gd.cache.digest(D.net.state_dict()), D.run_dir)
"""


def test_two_processes_share_one_cached_run(tmp_path):
    """Two processes asking for the same cached model: one trains, the other waits and loads it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "GAUSSDIFF_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]                                  # same weights, same run folder
    steps = [json.loads(line)["step"] for line in (Path(outs[0][1]) / "stats.jsonl").read_text().splitlines()]
    assert steps == [40]                                       # trained once (log_every = 50: one final entry)


def test_train_unet_shares_the_cached_run():
    D = training.train_unet(_X(), channels=8, channel_mult="1,2", steps=12, batch_size=8, lr=2e-3, ema=100,
                            seed=0, progress=False)
    net = gd.networks.UNet(1, 8, 8, (1, 2), seed=0)
    same = training.train(net, _X(), steps=12, batch_size=8, lr=2e-3, ema=100, seed=0, progress=False, cache=True)
    assert D.run_dir == same.run_dir


_KILLABLE = """
import sys, torch, gaussdiff_lib as gd
from gaussdiff_lib import training
X = gd.data.load("digits", n=24, seed=0)
net = gd.networks.UNet(1, 8, 8, (1, 2), seed=0)
training.train(net, X, run_dir=sys.argv[1], steps=400, batch_size=8, lr=2e-3, ema=100, seed=3,
               checkpoint_every=7, progress=False, log_every=1)
"""


def test_sigkill_at_a_random_step_then_resume_matches_uninterrupted(tmp_path):
    """A run killed with SIGKILL (no chance to clean up) resumes from its last checkpoint and ends
    with exactly the weights of a run that was never interrupted."""
    import random
    import signal
    import subprocess
    import sys
    import time

    opts = dict(steps=400, batch_size=8, lr=2e-3, ema=100, seed=3, checkpoint_every=7, progress=False, log_every=1)
    reference = _weights(training.train(_net(), _X(), run_dir=tmp_path / "reference", **opts))
    run_dir = tmp_path / "killed"
    kill_at = random.Random().randint(20, 300)  # a random step, different on each run of the suite
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(run_dir)], env=os.environ.copy())
    stats, deadline = run_dir / "stats.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        lines = stats.read_text().count("\n") if stats.exists() else 0
        if lines >= kill_at:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the child finished or failed before step {kill_at} (exit {proc.returncode})"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "final.pt").exists()
    assert list(run_dir.glob("checkpoint-*.pt")), f"no checkpoint written before the kill at step ~{kill_at}"
    resumed = training.train(_net(), _X(), run_dir=run_dir, **opts)
    _assert_same(_weights(resumed), reference)
    assert [row["step"] for row in resumed.stats] == list(range(1, 401))  # each step logged once


def _affine_weight(D, sigma: float, shape) -> torch.Tensor:
    """The matrix W of an affine denoiser D(x) = W x + b, read off column by column (float64)."""
    d = math.prod(shape)
    with torch.no_grad():
        b = D(torch.zeros(1, *shape), sigma).reshape(d)
        return (D(torch.eye(d).reshape(d, *shape), sigma).reshape(d, d) - b).T.double()


def test_fixed_sigma_trains_a_one_level_autoencoder(tmp_path):
    """Theorem 1: the linear DAE trained at one sigma converges to the Gaussian denoiser of its training set at
    that sigma. Discriminating: the trained W must be much nearer W_G(sigma) than W_G at 20% lower or higher sigma
    (a DAE trained at the wrong level, or one that stops short, fails this; "closer than the identity" did not)."""
    X = gd.data.load("digits", n=512, seed=0)
    sigma = 1.0
    D = training.train(gd.networks.LinearNet(1, 8), X, steps=2000, batch_size=512, lr=1e-2, ema=20000,
                       fixed_sigma=sigma, progress=False)
    G = gd.denoisers.GaussianDenoiser.from_data(X)
    W = _affine_weight(D, sigma, (1, 8, 8))
    dist = {s: float((W - G.weight(s)).norm() / G.weight(s).norm()) for s in (sigma / 1.2, sigma, sigma * 1.2)}
    assert dist[sigma] < 0.1, dist                                   # measured 0.049
    assert dist[sigma] < 0.5 * min(dist[sigma / 1.2], dist[sigma * 1.2]), dist      # measured 0.17 and 0.22
    with pytest.raises(ValueError, match="sigmas must be"):
        training.train(_net(), X, steps=2, fixed_sigma=0.0, progress=False)


def test_linear_dae_reaches_w_g_up_to_its_own_seed_noise():
    """The linear DAE as the positive control of the training recipe (claim 10): trained long enough, its W differs
    from W_G by no more than the noise of the run itself. The tolerance is derived from the run at that step count:
    two seeds whose W both sit at W_G with independent noise of size e lie about sqrt(2) e apart, so each lies within
    their spread of W_G; a W that has not yet reached W_G (too few steps) carries a bias both seeds share and lies
    several spreads away. Measured on the 8 x 8 digits at sigma = 1: 2000 steps, distances 0.049 and 0.051 against a
    spread of 0.067; 500 steps, 0.294 against 0.083."""
    X = gd.data.load("digits", n=512, seed=0)
    WG = gd.denoisers.GaussianDenoiser.from_data(X).weight(1.0)

    def run(steps):
        Ws = [_affine_weight(training.train(gd.networks.LinearNet(1, 8), X, steps=steps, batch_size=512, lr=1e-2,
                                            ema=20000, fixed_sigma=1.0, seed=seed, progress=False), 1.0, (1, 8, 8))
              for seed in (0, 1)]
        dist = [float((W - WG).norm() / WG.norm()) for W in Ws]
        return dist, float((Ws[0] - Ws[1]).norm() / WG.norm())
    dist, spread = run(2000)
    assert max(dist) <= spread, (dist, spread)                  # converged: only the run's own noise is left
    dist, spread = run(500)
    assert min(dist) > 2 * spread, (dist, spread)               # stopped short: a shared bias the test must see


def test_linear_net_is_affine_and_rebuilt_from_its_config(tmp_path):
    net = gd.networks.LinearNet(1, 8)
    with torch.no_grad():
        net.weight.normal_(generator=torch.Generator().manual_seed(0))
        net.bias.normal_(generator=torch.Generator().manual_seed(1))
    a, b = torch.randn(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    c = torch.zeros(3)
    torch.testing.assert_close(net(a + b, c) - net(b, c), net(a, c) - net(torch.zeros_like(a), c))
    rebuilt = gd.networks.build(net.config)
    assert isinstance(rebuilt, gd.networks.LinearNet) and rebuilt.config == net.config
    assert isinstance(gd.networks.build(_net().config), gd.networks.UNet)
    with pytest.raises(ValueError, match="unknown network architecture"):
        gd.networks.build({"arch": "transformer"})


def _hand_beta(k, batch, halflife, rampup):
    """EDM's EMA decay after k steps, written out independently of the library (Karras et al. 2022, app. F)."""
    h = halflife if rampup is None else min(halflife, rampup * k * batch)
    return 0.5 ** (batch / max(h, 1e-8))


@pytest.mark.parametrize("halflife, rampup", [(200.0, 0.05), (40.0, None), (1e6, 0.5)])
def test_ema_equals_an_average_computed_by_hand(tmp_path, halflife, rampup):
    """The raw weights after every step (a run with ema=0 keeps them as snapshots) averaged by hand with EDM's
    ramped-up decay give exactly the EMA weights of a run with the same seed, at its snapshots and at the end."""
    steps, batch = 9, 8
    opts = dict(steps=steps, batch_size=batch, lr=5e-3, seed=3, progress=False)
    raw = training.train(_net(), _X(), ema=0, snapshot_steps=range(1, steps + 1), run_dir=tmp_path / "raw", **opts)
    thetas = [{k: v.double() for k, v in _net().state_dict().items()}]
    for k in range(1, steps + 1):
        thetas.append({k_: v.double() for k_, v in training.load_run(raw.run_dir, snapshot=k).net.state_dict().items()})
    averaged = training.train(_net(), _X(), ema=halflife, ema_rampup=rampup, snapshot_steps=[2, 5],
                              run_dir=tmp_path / "ema", **opts)
    hand = dict(thetas[0])
    by_step = {}
    for k in range(1, steps + 1):
        beta = _hand_beta(k, batch, halflife, rampup)
        hand = {name: beta * hand[name] + (1 - beta) * thetas[k][name] for name in hand}
        by_step[k] = hand
    for k, D in ((2, training.load_run(averaged.run_dir, snapshot=2)), (5, training.load_run(averaged.run_dir, 5)),
                 (steps, averaged)):
        got = D.net.state_dict()
        for name, value in by_step[k].items():
            torch.testing.assert_close(got[name].double(), value, atol=2e-6, rtol=1e-5,
                                       msg=f"EMA of {name} at step {k}")
    for k in range(1, steps + 1):
        assert training.ema_beta(k * batch, batch, halflife, rampup) == pytest.approx(_hand_beta(k, batch, halflife, rampup))


def test_ema_rampup_forgets_the_initial_weights():
    """With EDM's ramp-up the weight left on the initial network after k steps is prod beta_i, below 1e-6 at
    every step; a fixed per-step decay of 0.995 kept 78% after 50 steps (the defect this replaces)."""
    for steps in (1, 50, 100, 250):
        kept = math.prod(training.ema_beta(i * 64, 64) for i in range(1, steps + 1))
        assert kept < 1e-6
    assert math.prod(training.ema_beta(i * 64, 64, rampup=None) for i in range(1, 51)) > 0.99
    assert training.ema_beta(640, 64, halflife=0) == 0.0


_HOLD = """
import sys, time
from gaussdiff_lib import cache
with cache.file_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(2)
"""


def test_a_process_waiting_for_a_lock_says_who_holds_it(tmp_path, capfd):
    import subprocess
    import sys
    import time

    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path / "entry")], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(gd.__file__).parent.parent)})
    assert holder.stdout.readline().strip() == "held"
    t0 = time.time()
    with gcache.file_lock(tmp_path / "entry"):
        waited = time.time() - t0
    holder.wait(timeout=30)
    err = capfd.readouterr().err
    assert waited > 0.5 and f"held by pid {holder.pid} on " in err and "waiting for" in err
    with gcache.file_lock(tmp_path / "entry"):   # free now: no message
        pass
    assert "waiting for" not in capfd.readouterr().err


def test_a_deleted_or_corrupt_snapshot_is_rebuilt(tmp_path):
    """The old error said 'delete it and recompute', and after deleting it loading failed for good. A missing
    snapshot is now rebuilt by training to its step again, bit for bit the weights it held."""
    opts = {**OPTS, "snapshot_steps": [5, 9]}
    training.train(_net(), _X(), run_dir=tmp_path, **opts)
    original = {t: _weights(training.load_run(tmp_path, snapshot=t)) for t in (5, 9)}
    (tmp_path / "snapshot-00000005.pt").unlink()
    with pytest.raises(FileNotFoundError):
        training.load_run(tmp_path, snapshot=5)
    with pytest.warns(RuntimeWarning, match=r"snapshots at steps \[5\] are missing; rebuilding"):
        training.train(_net(), _X(), run_dir=tmp_path, **opts)
    _assert_same(_weights(training.load_run(tmp_path, snapshot=5)), original[5])
    _assert_same(_weights(training.load_run(tmp_path, snapshot=9)), original[9])
    assert not (tmp_path / ".rebuild").exists()


def test_a_corrupt_snapshot_of_a_profile_run_is_rebuilt(tmp_path, monkeypatch):
    from gaussdiff_lib import experiments

    monkeypatch.setenv("GAUSSDIFF_CACHE", str(tmp_path))
    r = gd.chapters.runs._make("s", "x", {"n": 16, "dataset": "digits", "resolution": 8, "channels": 8, "steps": 12,
                                     "batch_size": 8, "snapshots": [6]})
    first = experiments.model(r, snapshot=6, device="cpu", progress=False)
    snap = first.run_dir / "snapshot-00000006.pt"
    snap.write_bytes(snap.read_bytes()[:-50])
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        again = experiments.model(r, snapshot=6, device="cpu", progress=False)
    _assert_same(_weights(again), _weights(first))


# ------------------------------------------------------------------ the fast path: accumulation and bf16 (issue 15)

def test_accumulated_micro_batches_train_like_one_batch():
    """k micro-batches of b images are one batch of k b: the same noise levels and noise (drawn for the whole
    batch and sliced), gradients summed before the step. Weights after 20 steps agree to float32 rounding."""
    opts = dict(steps=20, batch_size=16, lr=2e-3, ema=100, seed=5, progress=False)
    one = _weights(training.train(_net(), _X(64), **opts))
    for k in (2, 4):
        acc = _weights(training.train(_net(), _X(64), accumulate=k, **opts))
        for name in one:
            torch.testing.assert_close(acc[name], one[name], rtol=1e-4, atol=2e-6, msg=f"{name} with accumulate={k}")
    # the tolerance catches a real difference: another seed's batch moves the weights far more than rounding does
    other = _weights(training.train(_net(), _X(64), **{**opts, "seed": 6}))
    assert max(float((other[n] - one[n]).abs().max()) for n in one) > 1e-3


def test_accumulation_does_not_change_the_run_and_must_divide_the_batch(tmp_path):
    opts = dict(steps=6, batch_size=8, lr=2e-3, ema=100, seed=3, progress=False, run_dir=tmp_path / "r")
    first = training.train(_net(), _X(), **opts)
    again = training.train(_net(), _X(), accumulate=2, **opts)              # same key: loaded, not retrained
    _assert_same(_weights(again), _weights(first))
    with pytest.raises(ValueError, match="accumulate = 3 micro-batches must divide the batch of 8 images"):
        training.train(_net(), _X(), steps=2, batch_size=8, accumulate=3, progress=False)


def test_bf16_autocast_trains_close_to_float32_and_is_its_own_run():
    X = _X(64)
    D = gd.denoisers.EDMDenoiser(_net())
    y = X[:16]
    g = lambda: torch.Generator().manual_seed(0)       # noqa: E731
    with torch.no_grad():
        ref = training.edm_loss(D, y, g())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = training.edm_loss(D, y, g())
    assert low.dtype in (torch.float32, torch.bfloat16)
    assert abs(float(low) - float(ref)) < 0.03 * float(ref)               # bfloat16 keeps about 3 digits
    opts = dict(steps=40, batch_size=16, lr=2e-3, ema=0, seed=1, progress=False, log_every=10, cache=True)
    fp = training.train(_net(), X, **opts)
    bf = training.train(_net(), X, precision="bf16", **opts)
    assert bf.run_dir != fp.run_dir                                          # bf16 is another run ...
    assert training.train(_net(), X, precision="fp32", **opts).run_dir == fp.run_dir   # ... float32 keeps its key
    assert all(torch.isfinite(v).all() for v in bf.net.state_dict().values())
    assert all(p.dtype == torch.float32 for p in bf.net.parameters())        # weights and EMA stay float32
    lf, lb = fp.stats[-1]["loss"], bf.stats[-1]["loss"]
    assert abs(lb - lf) < 0.1 * lf, (lf, lb)
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        training.train(_net(), X, steps=1, precision="fp16", progress=False)


def test_tf32_is_switched_on_only_while_training_and_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with training._tf32(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_the_logged_loss_is_edms_logged_loss_and_its_gradient_edms_up_to_the_pixel_count():
    """Issue 28, item 4: EDM's loss (EDMLoss) returns lambda(sigma) (D(y + sigma n; sigma) - y)^2 per element; its
    training loop logs the mean over every element of the batch (training_stats' Loss/loss) and back-propagates the
    sum divided by the batch. Written here from those definitions on a fixed batch: our logged loss equals the logged
    one, and our gradient times C*H*W equals the back-propagated one (the same direction; Adam is invariant to the
    scale up to its epsilon)."""
    with torch.enable_grad():
        _logged_loss_against_edm()


def _logged_loss_against_edm():
    net = gd.networks.UNet(in_channels=1, channels=8, resolution=8, seed=0)
    D = gd.denoisers.EDMDenoiser(net, sigma_data=0.5)
    y = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours = training.edm_loss(D, y, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)                   # the same draws, in the same order as edm_loss makes them
    sigma = (torch.randn(6, generator=g, dtype=torch.float64) * 1.2 - 1.2).exp()
    n = torch.randn(y.shape, generator=g, dtype=torch.float32)
    s = sigma.float().view(-1, 1, 1, 1)
    weight = (s ** 2 + 0.5 ** 2) / (s * 0.5) ** 2
    per_element = weight * (D(y + s * n, sigma) - y) ** 2
    logged = per_element.detach().flatten().double().mean()
    assert training.LOSS_CONVENTION.startswith("mean over")
    torch.testing.assert_close(ours.detach().double(), logged, rtol=1e-5, atol=0)
    objective = per_element.sum() / y.shape[0]
    grads_edm = torch.autograd.grad(objective, list(net.parameters()))
    grads_ours = torch.autograd.grad(training.edm_loss(D, y, torch.Generator().manual_seed(3)), list(net.parameters()))
    pixels = y[0].numel()
    for a, b in zip(grads_ours, grads_edm):
        torch.testing.assert_close(a * pixels, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("steps, expected", [(3, 1), (40, 4), (4999, 499), (8000, 500)])
def test_the_default_warmup_is_a_tenth_of_the_run_between_1_and_500_steps(steps, expected):
    assert training.default_warmup(steps) == expected


def test_training_and_profile_runs_take_their_default_warmup_from_one_function(tmp_path, monkeypatch):
    """train() records and ramps over the same default warm-up that a profile run without a ``warmup`` field reports
    (a run that is part of a longer one is checked against the longer run's warm-up field by field): both read
    :func:`training.default_warmup`, so replacing it changes both."""
    monkeypatch.setattr(training, "default_warmup", lambda steps: 7)
    assert gd.chapters.runs.Run(name="r", profile="test", n=24, steps=40).warmup_steps == 7
    lrs = []
    real = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    training.train(gd.networks.LinearNet(1, 8), _X(), steps=10, batch_size=8, lr=1e-3, fixed_sigma=1.0,
                   run_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / "options.json").read_text())["warmup_steps"] == 7
    assert lrs == pytest.approx([1e-3 * min(1.0, (t + 1) / 7) for t in range(10)])
