"""Pilot: how a training recipe's network evolves, measured on EMA snapshots along one run.

For choosing the scale of the book's experiments before committing to it (which N and widths memorize,
how many steps a run needs to converge). Trains one run with snapshots every ``--every`` steps and, at each,
measures on held-out images: the EDM denoising loss, RMSE(D_theta, D_G) and RMSE(D_theta, D_M) averaged over the
intermediate sigma levels, and, from ``--samples`` Euler samples, the memorized fraction and the GL score.

A pilot *chooses* settings, so it measures on selection data, never on the data the book judges with: latents from
``gd.claims.SELECTION_SEED`` on and held-out images from position ``--heldout-offset`` (default 5000) of the test
split's seeded order, after every position a chapter uses.

    python benchmarks/pilot.py --res 8 --channels 64 --n 256 --steps 8000 --every 500 --out results/pilot-....json
"""
import argparse
import json
import time
from pathlib import Path

import torch

import gaussdiff_lib as gd


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--res", type=int, default=16)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--mult", default="1,2")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--every", type=int, required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--eval", type=int, default=256)
    p.add_argument("--heldout-offset", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--evaluate-only", action="store_true",
                   help="measure the snapshots already in the run folder (a pilot stopped early) without training")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    X = gd.data.load("fashion-mnist", split="train", resolution=a.res, n=a.n, seed=0, offset=a.offset)
    held = gd.data.load("fashion-mnist", split="test", resolution=a.res, n=a.eval, seed=0, offset=a.heldout_offset)
    mult = tuple(int(m) for m in a.mult.split(","))
    net = gd.networks.UNet(1, a.channels, a.res, mult, 1, 0.0, seed=a.seed)
    snaps = list(range(a.every, a.steps + 1, a.every))
    run_dir = Path(a.run_dir or gd.cache.cache_root() / "pilot"
                   / f"r{a.res}-w{a.channels}-n{a.n}-o{a.offset}-s{a.seed}-{a.steps}")
    t0 = time.time()
    if a.evaluate_only:
        snaps = sorted(int(f.stem.split("-")[1]) for f in run_dir.glob("snapshot-*.pt"))
        stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines() if line.strip()]
        train_s = stats[-1]["seconds"] if stats else None
    else:
        gd.training.train(net, X, steps=a.steps, batch_size=a.batch, lr=a.lr, seed=a.seed, snapshot_steps=snaps,
                          run_dir=run_dir, progress=False)
        train_s = time.time() - t0
    torch.set_grad_enabled(False)
    G = gd.denoisers.GaussianDenoiser.from_data(X)
    M = gd.denoisers.EmpiricalDenoiser(X)
    levels = [s for s in gd.sampling.edm_sigmas(10)[:-1].tolist() if 0.116 <= s <= 20]
    loss_levels = (torch.distributions.Normal(-1.2, 1.2).icdf((torch.arange(8) + 0.5) / 8)).exp().tolist()
    z = gd.claims.selection_latents(a.samples, (1, a.res, a.res))
    sched = gd.sampling.edm_sigmas(10)
    xg = gd.sampling.euler(G, z, sched)
    gl_held = gd.metrics.gl_score(held[: a.samples], X)
    # the memorizer's own distance from D_G on the same images and levels: a network generalizes in the book's sense
    # when its distance from D_G is below this (the dataset-size chapter's ratio RMSE(D, D_G) / RMSE(D_M, D_G) < 1)
    memorizer_G = gd.metrics.distance_curve(M, G, held, levels).mean().item()
    rows = []
    for s in snaps:
        D = gd.training.load_run(run_dir, snapshot=s)
        loss = sum(gd.metrics.denoising_loss(D, held, l) for l in loss_levels) / len(loss_levels)
        dg = gd.metrics.distance_curve(D, G, held, levels).mean().item()
        dm = gd.metrics.distance_curve(D, M, held, levels).mean().item()
        x = gd.sampling.euler(D, z, sched)
        rows.append({"step": s, "epoch": s * a.batch / a.n, "heldout_loss": loss, "rmse_G": dg, "rmse_M": dm,
                     "ratio_G": dg / memorizer_G,
                     "copies": gd.metrics.memorized_fraction(x, X), "gl": gd.metrics.gl_score(x, X),
                     "rmse_gauss_euler_samples": float(gd.metrics.sample_rmse(x, xg).mean())})
        print(json.dumps(rows[-1]), flush=True)
    stopped_early = a.evaluate_only and (not snaps or max(snaps) < a.steps)   # measured before the run's last step
    out = {"args": vars(a), "train_seconds": train_s, "stopped_early": stopped_early,
           "params": sum(p.numel() for p in net.parameters()),
           "gl_heldout": gl_held, "rmse_memorizer_G": memorizer_G, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
