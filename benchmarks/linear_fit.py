"""Closed-form linear fit vs the official Adam recipe on the same trained network, images and sigma.

Both are scored by the relative Frobenius error of W against a high-sample closed-form reference
(fit_linear on many more images and noise draws), measured in this run on this machine. Also: the
moment accumulation's throughput as a ratio to a bare torch.matmul of the same shape.

The network is the `cpu` profile's generalizing network of the book (loaded from $GAUSSDIFF_CACHE when
the book has been built, trained otherwise).

    .venv/bin/python benchmarks/linear_fit.py [--sigma 1.5017] [--epochs 100]
"""
from __future__ import annotations

import argparse
import time

import torch

import gaussdiff_lib as gd


def accumulation_vs_matmul(d: int, batch: int, repeats: int, device) -> tuple[float, float]:
    xa = torch.randn(batch, d + 1, dtype=torch.float64, device=device)
    out = torch.randn(batch, d, dtype=torch.float64, device=device)
    A = torch.zeros(d + 1, d + 1, dtype=torch.float64, device=device)
    B = torch.zeros(d + 1, d, dtype=torch.float64, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync()
        return (time.perf_counter() - t0) / repeats

    t_acc = timed(lambda: (A.addmm_(xa.T, xa), B.addmm_(xa.T, out)))
    t_mm = timed(lambda: (torch.matmul(xa.T, xa), torch.matmul(xa.T, out)))
    return t_acc, t_mm


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sigma", type=float, default=1.5017)
    p.add_argument("--images", type=int, default=2048, help="held-out images for both fits")
    p.add_argument("--n-noise", type=int, default=4)
    p.add_argument("--ref-images", type=int, default=8192)
    p.add_argument("--ref-noise", type=int, default=8)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    X = gd.data.load("fashion-mnist", resolution=16, n=16384, seed=0)
    net = gd.training.train_unet(X, channels=16, channel_mult="1,2", steps=2000, batch_size=64, lr=0.002,
                                 seed=0, device=device)
    held = gd.data.load("fashion-mnist", split="test", resolution=16, n=args.ref_images, seed=1)
    images = held[: args.images]
    s = args.sigma
    print(f"device {device}, d = {images[0].numel()}, sigma = {s}, {args.images} images\n")

    t0 = time.perf_counter()
    ref = gd.linear_fit.fit_linear(net, held, [s], n_noise=args.ref_noise, device=device, seed=7, progress=False)
    t_ref = time.perf_counter() - t0
    W_ref = ref.weight(s)

    closed = []   # (samples, seconds, error) for growing sample counts
    for n_img, n_noise in ((320, 1), (640, 1), (args.images // 2, 1), (args.images, 1), (args.images, args.n_noise)):
        t0 = time.perf_counter()
        cf = gd.linear_fit.fit_linear(net, images[:n_img], [s], n_noise=n_noise, device=device, seed=0,
                                      progress=False)
        closed.append((n_img * n_noise, time.perf_counter() - t0, gd.metrics.weight_distance(cf.weight(s), W_ref)))
    t_cf, e_cf = closed[-1][1], closed[-1][2]

    trace = []
    t0 = time.perf_counter()
    gd.linear_fit.fit_linear_adam(net, images, [s], epochs=args.epochs, device=device, seed=0, progress=False,
                                  callback=lambda e, _, W, b: trace.append(
                                      (e, time.perf_counter() - t0, gd.metrics.weight_distance(W, W_ref))))
    t_adam, e_adam = trace[-1][1], trace[-1][2]

    print(f"{'method':<38} {'seconds':>9} {'rel. error of W':>16}")
    print(f"{'reference: closed form, ' + str(args.ref_images * args.ref_noise) + ' samples':<38} {t_ref:>9.2f} {0:>16.4f}")
    for m, t, e in closed:
        print(f"{'closed form, ' + str(m) + ' samples':<38} {t:>9.2f} {e:>16.4f}")
    for e, t, err in trace:
        if e in (1, 10, args.epochs // 2, args.epochs):
            print(f"{'Adam recipe, ' + str(args.images) + ' images, epoch ' + str(e):<38} {t:>9.2f} {err:>16.4f}")
    match = next(((m, t) for m, t, e in closed if e <= e_adam), None)
    if match is not None:
        print(f"\nequal error: the closed form reaches Adam's final error ({e_adam:.3f}) with {match[0]} samples in "
              f"{match[1]:.2f} s, {t_adam / match[1]:.0f}x sooner than Adam's {args.epochs} epochs ({t_adam:.1f} s)")
    reached = next((t for _, t, e in trace if e <= e_cf), None)
    if reached is None:
        print(f"Adam never reached the closed form's error with {closed[-1][0]} samples ({e_cf:.3f}) in "
              f"{args.epochs} epochs: after {t_adam / t_cf:.0f}x its time, its error is {e_adam / e_cf:.1f}x larger")
    else:
        print(f"Adam reached the closed form's error after {reached:.1f} s, {reached / t_cf:.0f}x later")

    d = images[0].numel()
    t_acc, t_mm = accumulation_vs_matmul(d, 512, 50, device)
    print(f"\nmoment accumulation, batch 512, d = {d}: {t_acc * 1e3:.3f} ms per batch; bare matmul of the same "
          f"shapes {t_mm * 1e3:.3f} ms; ratio {t_acc / t_mm:.2f}")


if __name__ == "__main__":
    main()
