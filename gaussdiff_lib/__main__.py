"""Command line: ``python -m gaussdiff_lib data`` (make sure the book's data is present),
``python -m gaussdiff_lib assets`` (the pinned scripts the offline book needs),
``python -m gaussdiff_lib execute --profile cpu --out book`` (run the notebooks with papermill) and
``python -m gaussdiff_lib train --profile paper --shard 0/4`` (train a profile's runs into the model cache and
certify their convergence, one share of them per process: the way to spread a sweep of small runs over several
GPUs; ``--jobs 2`` trains two runs at a time in one call, which on a 2-core CPU does more work per second than
one run on both cores)."""
import argparse
import sys

from . import data
from .chapters import profiles


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


def _cost(r) -> float:
    """A rough relative cost of training a run (for scheduling the longest first)."""
    if r.checkpoint:
        return 0.0
    width = 1.0 if r.arch == "linear" else r.channels ** 1.5
    return r.steps * r.batch_size * (r.resolution or 32) ** 2 * width


def jobs_for(spec: str, device: str | None) -> int:
    """``--jobs``: an integer, or 'auto' = one process on a GPU, min(2, cores) on a CPU."""
    import os

    import torch

    if spec == "auto":
        gpu = (device or "").startswith("cuda") or (device is None and torch.cuda.is_available())
        return 1 if gpu else max(1, min(2, os.cpu_count() or 1))
    try:
        n = int(spec)
    except ValueError:
        raise ValueError(f"--jobs takes a number of processes or 'auto', got {spec!r}") from None
    if n < 1:
        raise ValueError(f"--jobs must be at least 1, got {n}")
    return n


def _train(args) -> int:
    import os
    import time

    from .chapters import models, runs

    table = runs.runs(args.profile)
    if args.sweep:
        names = [n for s in args.sweep for n in runs.sweep(s, args.profile)]
    else:
        names = list(args.runs or table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"profile {args.profile!r} has no runs {unknown}; it defines {sorted(table)}")
    names = shard(list(dict.fromkeys(names)), args.shard)
    n_jobs = jobs_for(args.jobs, args.device)
    names.sort(key=lambda n: _cost(table[n]), reverse=True)  # longest first, so the pool ends together
    for name in names:
        r = table[name]
        print(f"[{args.shard}] {name}: n={r.n} {r.arch} channels={r.channels} steps={r.steps}", flush=True)
    if args.dry_run:
        return 0
    threads = max(1, (os.cpu_count() or 1) // n_jobs) if n_jobs > 1 else 0
    work = [(args.profile, name, args.device, threads) for name in names]
    t0 = time.time()
    print(f"training {len(work)} runs in {n_jobs} process{'es' if n_jobs > 1 else ''}", flush=True)
    if n_jobs == 1:
        results = map(models.train_job, work)
    else:
        import multiprocessing as mp

        os.environ["GAUSSDIFF_PROGRESS"] = "0"
        pool = mp.get_context("spawn").Pool(n_jobs)
        results = pool.imap_unordered(models.train_job, work)
    rows = []
    try:
        for i, row in enumerate(results, 1):
            rows.append(row)
            state = {True: "converged", False: "NOT converged", None: "published weights"}[row["converged"]]
            how = "trained" if row["trained"] else "cached"
            print(f"[{i}/{len(work)}] {row['name']}: {row['seconds']:.0f} s ({how}), {state} "
                  f"({time.time() - t0:.0f} s so far)", flush=True)
    finally:
        if n_jobs > 1:
            pool.close()
            pool.join()
    if args.timings:
        from .chapters import timings

        timings.set_items(args.timings, "runs", rows)
        timings.phase(args.timings, "training", time.time() - t0, jobs=n_jobs, runs=len(rows),
                      trained=sum(r["trained"] for r in rows))
        print(f"time record: {args.timings}", flush=True)
    return 0


def _timings(args) -> None:
    from pathlib import Path

    from .chapters import timings

    path = Path(args.file) if args.file else timings.RECORD
    if args.action == "start":
        since = args.since
        if since is not None and Path(since).exists():
            since = Path(since).read_text().strip()
        try:
            since = None if since is None else float(since)
        except ValueError:
            raise ValueError(f"--since takes a Unix time or a file holding one, got {args.since!r}") from None
        timings.start(path, since, args.phase)
    elif args.action == "mark":
        if not args.phase:
            raise ValueError("timings mark needs --phase NAME, the phase that ends now")
        seconds = timings.mark(path, args.phase)["phases"][-1]["seconds"]
        print(f"{args.phase}: {seconds:.0f} s (time record: {path})")
    else:
        data = timings.load(path)
        print(timings.summary(data) if data else f"no time record at {path}")


def main(argv=None) -> int:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="python -m gaussdiff_lib")
    parser.add_argument("--version", action="version", version=f"gaussdiff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="the profiles, the chapters with their parameters under a profile, and the "
                                     "profile's named runs and sweeps")
    ls.add_argument("--profile", default="cpu", help=f"one of {profiles.names()}")
    sub.add_parser("data", help="locate (or download) Fashion-MNIST, the book's default data")
    sub.add_parser("assets", help="fetch and verify the pinned MathJax, require.js and widget manager for the "
                                  "offline book (into .assets/)")
    ex = sub.add_parser("execute", help="execute the notebooks under a profile with papermill")
    ex.add_argument("--profile", default="cpu", help=f"one of {profiles.names()}")
    ex.add_argument("--out", default="book", help="folder for the executed notebooks (default: ./book)")
    ex.add_argument("--only", nargs="*", help="notebook names (without .ipynb) to run")
    ex.add_argument("--force", action="store_true", help="re-execute notebooks that are up to date")
    ex.add_argument("--keep-going", action="store_true", help="run the other notebooks when one fails (and exit 1 "
                                                              "at the end, naming it)")
    ex.add_argument("--set", dest="overrides", action="append", metavar="NOTEBOOK.PARAMETER=VALUE",
                    help="override one parameter of the profile, e.g. dataset_size.sweep=dataset_size_cifar")
    ex.add_argument("--timeout", type=int, default=3600, help="the most seconds one cell may run (default 3600)")
    ex.add_argument("--jobs", default="1", help="notebooks executed at a time: a number, or 'auto' (1 on a GPU, up to "
                                                 "2 on a CPU, each kernel with its share of the cores)")
    ex.add_argument("--timings", default=None, metavar="FILE", help="add each notebook's seconds and the execution "
                                                                    "phase to this time record (make book: "
                                                                    "_build/timings.json)")
    ex.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="a bar of each notebook's cells on stderr (default: when stderr is a terminal)")
    tm = sub.add_parser("timings", help="the build's time record (_build/timings.json): start it, close a phase, "
                                        "or show it")
    tm.add_argument("action", choices=["start", "mark", "show"], help="start: a new record (with --since, the set-up "
                    "before it is its first phase); mark: close the phase named by --phase; show: print the record")
    tm.add_argument("--file", default=None, help="the record (default: _build/timings.json)")
    tm.add_argument("--phase", default=None, help="the name of the phase that ends now")
    tm.add_argument("--since", default=None, help="start: a Unix time, or a file holding one, when the build began")
    tr = sub.add_parser("train", help="train a profile's runs into the model cache (the notebooks then load them)")
    tr.add_argument("--profile", default="cpu", help=f"one of {profiles.names()}")
    tr.add_argument("--runs", nargs="*", help="run names (default: every run of the profile)")
    tr.add_argument("--sweep", nargs="*", help="train the runs of these sweeps instead")
    tr.add_argument("--shard", default="0/1", help="i/k: train every k-th run starting at i (one process per GPU)")
    tr.add_argument("--device", default=None, help="e.g. cuda:1 (default: CUDA when present)")
    tr.add_argument("--jobs", default="1", help="training processes: a number, or 'auto' (1 on a GPU, up to 2 on "
                                                 "a CPU, each with its share of the cores)")
    tr.add_argument("--dry-run", action="store_true", help="list this shard's runs without training")
    tr.add_argument("--timings", default=None, metavar="FILE", help="add each run's seconds and the training phase "
                                                                    "to this time record (make book: _build/timings.json)")
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except RuntimeError as exc:  # --keep-going: some notebooks failed
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError, KeyError) as exc:
        # a mistake in the command line or the profile, or missing data, a download that failed, a cache that
        # cannot be written: one line that says what to do (GAUSSDIFF_TRACEBACK=1 shows where it happened)
        import os

        if os.environ.get("GAUSSDIFF_TRACEBACK"):
            raise
        message = str(exc) if not isinstance(exc, KeyError) else f"unknown name {exc}"
        print(f"error: {message}", file=sys.stderr)
        return 2


def _list(profile: str) -> None:
    """Print what a profile offers: chapters and their parameters (the profile's value, else the template's), runs
    and sweeps."""
    from .chapters import runs

    print(f"profiles: {', '.join(profiles.names())}  (shown: {profile})")
    values = profiles.load(profile)
    print("\nchapters (parameter = value under this profile):")
    for nb in profiles.notebooks():
        params = {**profiles.defaults(nb.stem), **values.get(nb.stem, {}), "profile": profile}
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items() if k != "profile")
        print(f"  {nb.stem}: {shown or '(only profile)'}")
    if profiles.EXPERIMENTS in values:
        print("\nruns:")
        for name, r in runs.runs(profile).items():
            what = f"published {r.checkpoint.rsplit('/', 1)[-1]}" if r.checkpoint else \
                f"{r.arch}-{r.channels}, {r.steps} steps of {r.batch_size}"
            print(f"  {name}: {r.dataset} N = {r.n}, {what}")
        print("\nsweeps:")
        for name, members in runs.sweeps(profile).items():
            print(f"  {name}: {', '.join(members)}")


def _run(parser, args) -> int:
    if args.command == "list":
        _list(args.profile)
    elif args.command == "data":
        for split in ("train", "test"):
            print("fashion-mnist", split, *data.find_fashion_mnist(split))
    elif args.command == "assets":
        from .chapters import assets

        try:
            print(assets.fetch())
        except assets.AssetError as exc:
            raise ValueError(str(exc)) from None
    elif args.command == "timings":
        _timings(args)
    elif args.command == "train":
        try:
            shard([], args.shard)
            jobs_for(args.jobs, args.device)
        except ValueError as exc:
            parser.error(str(exc))
        return _train(args)
    else:
        try:
            from .chapters.execute import parse_overrides

            overrides = parse_overrides(args.overrides)
        except ValueError as exc:
            parser.error(str(exc))
        from .chapters.execute import execute

        execute(args.profile, args.out, args.only, force=args.force, overrides=overrides,
                keep_going=args.keep_going, timeout=args.timeout, progress=args.progress,
                jobs=jobs_for(args.jobs, None), timings=args.timings)
    return 0


def console() -> None:
    """The ``gaussdiff`` command an installed package provides (the same as ``python -m gaussdiff_lib``)."""
    sys.exit(main())


if __name__ == "__main__":
    console()
