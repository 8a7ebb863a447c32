"""Training under torchrun: two gloo processes on the CPU take the steps of one process with the same batch."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import gaussdiff_lib as gd
from gaussdiff_lib import training

WORKER = textwrap.dedent("""
    import sys, torch
    import gaussdiff_lib as gd
    run_dir, until, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    accumulate = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    X = gd.data.load("digits", n=32, seed=0)
    net = gd.networks.UNet(1, 8, 8, (1, 2), seed=0)
    D = gd.training.train(net, X, steps=6, batch_size=8, lr=2e-3, ema=100, seed=3, checkpoint_every=100,
                          run_dir=run_dir, until=until or None, device="cpu", progress=False, log_every=1,
                          accumulate=accumulate)
    rank, world = gd.training.distributed()
    assert world == 2, world
    torch.save({"ema": D.net.state_dict(), "stats": D.stats}, f"{out}.{rank}")
""")
OPTS = dict(steps=6, batch_size=8, lr=2e-3, ema=100, seed=3, checkpoint_every=100, device="cpu", progress=False,
            log_every=1)


def _single(run_dir=None, **kw):
    X = gd.data.load("digits", n=32, seed=0)
    return training.train(gd.networks.UNet(1, 8, 8, (1, 2), seed=0), X, run_dir=run_dir, **{**OPTS, **kw})


def _torchrun(tmp_path, run_dir, until=0, accumulate=1):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "result"
    env = {**os.environ, "GAUSSDIFF_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), str(run_dir), str(until), str(out), str(accumulate)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1)]


def _close(a, b):
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=f"parameter {k} differs")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_processes_match_one_and_resume_on_any_world_size(tmp_path):
    single = _single(tmp_path / "single")
    ranks = _torchrun(tmp_path, tmp_path / "ddp")
    # both ranks end with the same EMA weights, equal to the single-process run with the same global batch
    _close(ranks[0]["ema"], ranks[1]["ema"])
    _close(ranks[0]["ema"], single.net.state_dict())
    # rank 0 logged the global mean loss, once per step, as the single process did
    assert [s["step"] for s in ranks[0]["stats"]] == list(range(1, 7))
    for a, b in zip(ranks[0]["stats"], single.stats):
        assert abs(a["loss"] - b["loss"]) < 1e-4 * b["loss"]
    run = tmp_path / "ddp"
    assert (run / "final.pt").exists() and not list(run.glob("checkpoint-*"))
    lines = (run / "stats.jsonl").read_text().splitlines()
    assert len(lines) == 6  # written by rank 0 only

    # resume across world sizes: 2 processes stop at step 3, one process finishes the run
    part = _torchrun(tmp_path, tmp_path / "chunked", until=3)
    assert [p.name for p in (tmp_path / "chunked").glob("checkpoint-*")] == ["checkpoint-00000003.pt"]
    early = _single(until=3, run_dir=tmp_path / "single-early")
    _close(part[0]["ema"], early.net.state_dict())
    resumed = _single(tmp_path / "chunked")
    _close(resumed.net.state_dict(), single.net.state_dict())
    assert [s["step"] for s in resumed.stats] == list(range(1, 7))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_processes_accumulating_micro_batches_match_one_process(tmp_path):
    """Each of 2 ranks takes 4 images of the global 8 in 2 micro-batches of 2 (gradients synchronised once, at the
    last): the weights are the single process's with the whole batch."""
    single = _single(tmp_path / "single")
    ranks = _torchrun(tmp_path, tmp_path / "ddp-acc", accumulate=2)
    _close(ranks[0]["ema"], ranks[1]["ema"])
    _close(ranks[0]["ema"], single.net.state_dict())
    for a, b in zip(ranks[0]["stats"], single.stats):
        assert abs(a["loss"] - b["loss"]) < 1e-4 * b["loss"]


def test_uneven_batch_and_until_are_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "distributed", lambda backend=None: (0, 3))
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        _single(tmp_path / "a")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="until must lie in"):
        _single(tmp_path / "b", until=7)
    with pytest.raises(ValueError, match="until are kept in the run folder"):
        _single(None, until=3)


def test_until_trains_in_chunks_to_the_same_weights(tmp_path):
    whole = _single(tmp_path / "whole")
    first = _single(tmp_path / "chunks", until=2)
    assert first.net.state_dict().keys() == whole.net.state_dict().keys()
    assert not (tmp_path / "chunks" / "final.pt").exists()
    _single(tmp_path / "chunks", until=4)
    done = _single(tmp_path / "chunks")
    for k, v in whole.net.state_dict().items():
        assert torch.equal(v, done.net.state_dict()[k]), k
