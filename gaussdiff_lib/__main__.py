"""Command line: ``python -m gaussdiff_lib data`` (make sure the book's data is present),
``python -m gaussdiff_lib assets`` (the pinned scripts the offline book needs),
``python -m gaussdiff_lib execute --profile cpu --out book`` (run the notebooks with papermill) and
``python -m gaussdiff_lib train --profile paper --shard 0/4`` (train a profile's runs into the model cache,
one share of them per process: the way to spread a sweep of small runs over several GPUs)."""
import argparse
import sys

from . import data, profiles


def shard(names: list[str], spec: str) -> list[str]:
    """The share ``i/k`` of a list of run names: every k-th name starting at i (round-robin, so long and
    short runs mix). The k shares partition the list."""
    try:
        i, k = (int(v) for v in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes i/k with integers 0 <= i < k, e.g. 0/4; got {spec!r}") from None
    if not 0 <= i < k:
        raise ValueError(f"--shard {spec}: need 0 <= i < k")
    return names[i::k]


def _train(args) -> int:
    from . import experiments

    table = experiments.runs(args.profile)
    if args.sweep:
        names = [n for s in args.sweep for n in experiments.sweep(s, args.profile)]
    else:
        names = list(args.runs or table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"profile {args.profile!r} has no runs {unknown}; it defines {sorted(table)}")
    names = shard(list(dict.fromkeys(names)), args.shard)
    for name in names:
        r = table[name]
        print(f"[{args.shard}] {name}: n={r.n} {r.arch} channels={r.channels} steps={r.steps}", flush=True)
        if not args.dry_run:
            experiments.model(r, device=args.device)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gaussdiff_lib")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("data", help="locate (or download) Fashion-MNIST, the book's default data")
    sub.add_parser("assets", help="fetch and verify the pinned MathJax, require.js and widget manager for the "
                                  "offline book (into .assets/)")
    ex = sub.add_parser("execute", help="execute the notebooks under a profile with papermill")
    ex.add_argument("--profile", default="cpu", help=f"one of {profiles.names()}")
    ex.add_argument("--out", default=str(profiles.root() / "book"), help="folder for the executed notebooks")
    ex.add_argument("--only", nargs="*", help="notebook names (without .ipynb) to run")
    ex.add_argument("--force", action="store_true", help="re-execute notebooks that are up to date")
    ex.add_argument("--set", dest="overrides", action="append", metavar="NOTEBOOK.PARAMETER=VALUE",
                    help="override one parameter of the profile, e.g. dataset_size.sweep=dataset_size_cifar")
    tr = sub.add_parser("train", help="train a profile's runs into the model cache (the notebooks then load them)")
    tr.add_argument("--profile", default="cpu", help=f"one of {profiles.names()}")
    tr.add_argument("--runs", nargs="*", help="run names (default: every run of the profile)")
    tr.add_argument("--sweep", nargs="*", help="train the runs of these sweeps instead")
    tr.add_argument("--shard", default="0/1", help="i/k: train every k-th run starting at i (one process per GPU)")
    tr.add_argument("--device", default=None, help="e.g. cuda:1 (default: CUDA when present)")
    tr.add_argument("--dry-run", action="store_true", help="list this shard's runs without training")
    args = parser.parse_args(argv)
    if args.command == "data":
        for split in ("train", "test"):
            print("fashion-mnist", split, *data.find_fashion_mnist(split))
    elif args.command == "assets":
        from . import book_assets

        try:
            print(book_assets.fetch())
        except book_assets.AssetError as exc:
            raise SystemExit(f"error: {exc}") from None
    elif args.command == "train":
        try:
            shard([], args.shard)
        except ValueError as exc:
            parser.error(str(exc))
        return _train(args)
    else:
        try:
            overrides = profiles.parse_overrides(args.overrides)
        except ValueError as exc:
            parser.error(str(exc))
        profiles.execute(args.profile, args.out, args.only, force=args.force, overrides=overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
