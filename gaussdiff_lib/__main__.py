"""The command line ``gaussdiff`` (the same as ``python -m gaussdiff_lib``); ``gaussdiff`` alone shows where to
start, and each subcommand's ``--help`` its options, defaults and examples.

- ``gaussdiff list``: the profiles, the chapters with their parameters, the named runs and sweeps;
- ``gaussdiff data`` / ``gaussdiff assets``: make sure the book's data / the offline book's pinned scripts are present;
- ``gaussdiff execute --only gaussian_shadow --profile smoke --out /tmp/smoke``: run chapters with papermill
  (``--all`` runs every chapter);
- ``gaussdiff train --profile paper --shard 0/4``: train a profile's runs into the model cache and certify their
  convergence, one share of them per process (the way to spread a sweep of small runs over several GPUs; ``--jobs
  2`` trains two runs at a time in one call, which on a 2-core CPU does more work per second than one run on both
  cores);
- ``gaussdiff new gaussian_shadow mywork``: copy a chapter's template and the profiles into a folder to edit;
- ``gaussdiff timings``: the build's time record.

Nothing heavy is imported before a command needs it: ``gaussdiff --version`` and ``--help`` do not import torch.
Ctrl-C ends any command with one line and exit status 130; a mistake ends it with one line ``error: ...`` and exit
status 2 (``GAUSSDIFF_TRACEBACK=1`` shows the traceback instead).
"""
import argparse
import os
import sys

PROG = "gaussdiff"
INTERRUPTED = {
    "execute": "interrupted; files already written are kept, notebooks being executed were not replaced",
    "diagnose": "interrupted; the report was not written (a previous one in that folder is kept)",
    "train": "interrupted; files already written are kept, a run being trained resumes from its last checkpoint "
             "next time",
}


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
    """A rough relative cost of training a run (for scheduling the longest first, and the ETA)."""
    if r.checkpoint or getattr(r, "part_of", ""):  # published weights; or a longer run's training serves it
        return 0.0
    width = 1.0 if r.arch == "linear" else r.channels ** 1.5
    return r.steps * r.batch_size * (r.resolution or 32) ** 2 * width


def jobs_for(spec: str, device: str | None) -> int:
    """``--jobs``: an integer, or 'auto' = one process on a GPU, min(2, cores) on a CPU."""
    if spec == "auto":
        import torch

        gpu = (device or "").startswith("cuda") or (device is None and torch.cuda.is_available())
        return 1 if gpu else max(1, min(2, os.cpu_count() or 1))
    try:
        n = int(spec)
    except ValueError:
        raise ValueError(f"--jobs takes a number of processes or 'auto', got {spec!r}") from None
    if n < 1:
        raise ValueError(f"--jobs must be at least 1, got {n}")
    return n


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class _Progress:
    """The train command's progress lines: runs done / total, the runs now training, elapsed time and an ETA from
    the runs' relative costs (:func:`_cost`), calibrated on the runs this call actually trained (runs served by
    the cache cost nothing, so until one run has trained there is no ETA)."""

    def __init__(self, table: dict, names: list[str], jobs: int):
        import time

        self.table, self.names, self.jobs = table, names, jobs
        self.t0, self.done = time.time(), []
        self.seconds_per_cost = []          # (seconds, cost) of the runs trained by this call

    def elapsed(self) -> float:
        import time

        return time.time() - self.t0

    def running(self) -> list[str]:
        """The runs being trained now: the pool takes them in order, ``jobs`` at a time."""
        started = self.names[:len(self.done) + self.jobs]
        return [n for n in started if n not in self.done]

    def eta(self) -> str:
        left = [n for n in self.names if n not in self.done]
        if not left:
            return "0 s"
        if not self.seconds_per_cost:
            return "unknown until a run has trained"
        seconds = sum(s for s, _ in self.seconds_per_cost)
        cost = sum(c for _, c in self.seconds_per_cost)
        if cost <= 0:
            return "unknown"
        return f"about {_duration(seconds / cost * sum(_cost(self.table[n]) for n in left) / self.jobs)}"

    def start(self, name: str) -> None:
        r = self.table[name]
        what = "published weights" if r.checkpoint else f"{r.steps} steps of {r.batch_size}"
        print(f"[{len(self.done)}/{len(self.names)}] now: {name} ({what}); {_duration(self.elapsed())} elapsed",
              flush=True)

    def finished(self, row: dict) -> None:
        name = row["name"]
        self.done.append(name)
        if row["trained"]:
            self.seconds_per_cost.append((row["seconds"], _cost(self.table[name])))
        state = {True: "converged", False: "NOT converged", None: "published weights"}[row["converged"]]
        how = (f"trained, {row.get('steps') or self.table[name].steps} steps" if row["trained"] else
               f"part of {row['part_of']}" if row.get("part_of") else "cached")
        now = self.running()
        print(f"[{len(self.done)}/{len(self.names)}] {name}: {row['seconds']:.0f} s ({how}), {state}; "
              f"{_duration(self.elapsed())} elapsed, ETA {self.eta()}"
              + (f"; now: {', '.join(now)}" if now and self.jobs > 1 else ""), flush=True)


def _train_worker_init() -> None:
    """A training worker ignores Ctrl-C (the main process stops the pool: no traceback from each worker) and, told
    to stop (SIGTERM), leaves through SystemExit, so that what it holds is released (no leaked semaphores)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))


def _estimate(table, names, n_jobs, args) -> int:
    """``train --estimate``: the projected cost of training ``names`` (:mod:`gaussdiff_lib.chapters.cost`)."""
    from .chapters import cost

    runs_ = [table[n] for n in names]   # a run part of a longer one not named here trains it up to its own steps
    rows = cost.project(runs_, cost.probe(runs_, jobs=n_jobs, device=args.device))
    text, totals = cost.table(rows, n_jobs, order=names)
    width = max(len(t[0]) for t in text)
    print(f"{'run':<{width}}  {'steps':>8}  {'training':>16}  {'certificate':>11}")
    for name, steps, train_s, cert_s in text:
        print(f"{name:<{width}}  {steps:>8}  {train_s:>16}  {cert_s:>11}")
    hours = lambda s: f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"  # noqa: E731
    print(f"projected: training {hours(totals['training'])} and certificates {hours(totals['certificates'])} of "
          f"compute; with {n_jobs} process{'es' if n_jobs > 1 else ''} (longest first) the training phase takes about "
          f"{hours(totals['wall'])} wall-clock on this machine, if nothing is cached. Not counted: loading data, "
          "writing weights, other work on the machine", flush=True)
    return 0


def _train(args) -> int:
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
    if args.estimate:
        return _estimate(table, names, n_jobs, args)
    threads = max(1, (os.cpu_count() or 1) // n_jobs) if n_jobs > 1 else 0
    work = [(args.profile, name, args.device, threads) for name in names]
    t0 = time.time()
    print(f"training {len(work)} runs in {n_jobs} process{'es' if n_jobs > 1 else ''} (longest first); a line per "
          f"run as it ends, with the ETA", flush=True)
    progress = _Progress(table, names, n_jobs)
    rows = []
    if n_jobs == 1:
        for job in work:
            progress.start(job[1])
            rows.append(models.train_job(job))
            progress.finished(rows[-1])
    else:
        import importlib
        import multiprocessing as mp

        os.environ["GAUSSDIFF_PROGRESS"] = "0"
        # the initializer by its importable name: under `python -m gaussdiff_lib` this module is __main__, which
        # spawned workers do not import
        init = importlib.import_module("gaussdiff_lib.__main__")._train_worker_init
        pool = mp.get_context("spawn").Pool(n_jobs, initializer=init)
        try:
            print(f"[0/{len(names)}] now: {', '.join(progress.running())}", flush=True)
            for row in pool.imap_unordered(models.train_job, work):
                rows.append(row)
                progress.finished(row)
        except BaseException:
            pool.terminate()
            pool.join()
            raise
        pool.close()
        pool.join()
    if args.timings:
        from .chapters import timings

        timings.set_items(args.timings, "runs", rows)
        timings.phase(args.timings, "training", time.time() - t0, jobs=n_jobs, runs=len(rows),
                      trained=sum(r["trained"] for r in rows))
        print(f"time record: {os.path.abspath(args.timings)}", flush=True)
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


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written; each option's default shown, except where there is none to show (the help then
    says what leaving the option out means)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """A mistake in the command line is one line, ``error: ...``, naming the ``--help`` to read (exit status 2)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def _wrap(text: str) -> str:
    """A paragraph of a --help (the formatter keeps the text as written, for the examples)."""
    import shutil
    import textwrap

    return textwrap.fill(text.strip(), width=min(100, shutil.get_terminal_size().columns) - 2)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _chapters_and_profiles() -> tuple[list[str], list[str]]:
    """The chapter names and profile names, from the files alone (no torch, no YAML parsed)."""
    from .chapters import profiles

    return [p.stem for p in profiles.notebooks()], profiles.names()


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    chapters, names = _chapters_and_profiles()
    one_of = f"one of {', '.join(names)}"
    parser = _Parser(
        prog=PROG, formatter_class=_Formatter,
        description=_wrap("Run the book's chapters, train its networks, and copy a chapter to make it your own. Each "
                          "command's --help shows its options, their defaults and examples."),
        epilog="start here:\n" + "\n".join(f"  {line}" for line in (
            "# the profiles, the chapters and their parameters, the named runs",
            f"{PROG} list",
            "# one chapter under the smallest profile (its numbers are not meaningful)",
            f"{PROG} execute --only gaussian_shadow --profile smoke --out /tmp/smoke",
            "# a copy of a chapter to edit, and the command that runs the copy",
            f"{PROG} new gaussian_shadow mywork",
            "# your own model against the Gaussian and memorizing optima of its training set",
            f"{PROG} diagnose ./my-diffusers-pipeline --train cifar10 --out diagnosis",
            "# every chapter, as `make book` does (what it cost: `gaussdiff timings show` after a build)",
            f"{PROG} train --profile cpu --jobs auto && {PROG} execute --all --profile cpu --out book")) +
        "\n\n" + _wrap("profiles: smoke (the smallest scale that runs every cell, numbers not meaningful), cpu (the "
                        "book, on a 2-core CPU), paper (the paper's settings, for a GPU)"))
    parser.add_argument("--version", action="version", version=f"gaussdiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    parser.commands = {}          # each command's own parser, for its usage and its one-line errors

    def command(name: str, help: str, description: str, *examples: str) -> argparse.ArgumentParser:
        parser.commands[name] = sub.add_parser(name, help=help, epilog=_examples(*examples), formatter_class=_Formatter,
                                               description=_wrap(f"{help[0].upper()}{help[1:]}. {description}"))
        return parser.commands[name]

    ls = command("list", "show the profiles, the chapters with their parameters, and the named runs and sweeps",
                 "The chapters' parameters are the profile's values, else the template's.",
                 f"{PROG} list", f"{PROG} list --profile paper")
    ls.add_argument("--profile", default="cpu", help=one_of)

    command("data", "locate (or download) Fashion-MNIST, the book's default data",
            "Looks in $GAUSSDIFF_DATA, /usr/share/datasets/fashion-mnist (Debian's package) and the cache; by "
            "default downloads into the cache ($GAUSSDIFF_CACHE, else ~/.cache/gaussdiff) when the files are "
            "missing (GAUSSDIFF_OFFLINE=1: never).",
            f"{PROG} data", f"GAUSSDIFF_DATA=~/datasets {PROG} data")

    command("assets", "fetch and verify the pinned MathJax, require.js and widget manager for the offline book",
            "Written into .assets/ by default ($GAUSSDIFF_ASSETS to choose another folder).", f"{PROG} assets")

    ex = command("execute", "run chapters under a profile with papermill, each into its executed notebook",
                 "Name the chapters with --only, or pass --all for every chapter. A chapter whose executed copy is "
                 "up to date (same template, parameters, runs and library) is skipped. Each notebook is written "
                 "under a temporary name and moved into place when complete. chapters: " + ", ".join(chapters),
                 f"{PROG} execute --only gaussian_shadow --profile smoke --out /tmp/smoke",
                 f"{PROG} execute --only scale dataset_size --profile cpu --progress",
                 f"{PROG} execute --all --profile cpu --out book --jobs auto   # every chapter, as make book",
                 f"{PROG} execute --only dataset_size --profile paper --set dataset_size.sweep=dataset_size_cifar")
    ex.add_argument("--profile", default=None, help=f"{one_of} (default: cpu)")
    ex.add_argument("--only", nargs="+", metavar="CHAPTER", help="the chapters to run (names without .ipynb)")
    ex.add_argument("--all", action="store_true", help="run every chapter")
    ex.add_argument("--out", default="book", help="folder for the executed notebooks")
    ex.add_argument("--force", action="store_true", help="re-execute notebooks that are up to date")
    ex.add_argument("--keep-going", action="store_true", help="run the other notebooks when one fails (and exit 1 "
                                                              "at the end, naming it)")
    ex.add_argument("--set", dest="overrides", action="append", metavar="NOTEBOOK.PARAMETER=VALUE",
                    help="override one parameter of the profile, e.g. dataset_size.sweep=dataset_size_cifar")
    ex.add_argument("--timeout", type=int, default=3600, help="the most seconds one cell may run")
    ex.add_argument("--jobs", default="1", help="notebooks executed at a time: a number, or 'auto' (1 on a GPU, up to "
                                                 "2 on a CPU, each kernel with its share of the cores)")
    ex.add_argument("--timings", default=None, metavar="FILE", help="add each notebook's seconds and the execution "
                                                                    "phase to this time record (make book: "
                                                                    "_build/timings.json; default: none)")
    ex.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="a bar of each notebook's cells on stderr (default: when stderr is a terminal)")

    tm = command("timings", "start, close a phase of, or show the build's time record",
                 "The record is what each phase of `make book`, each run and each notebook cost.",
                 f"{PROG} timings show", f"{PROG} timings start --phase set-up",
                 f"{PROG} timings mark --phase rendering")
    tm.add_argument("action", choices=["start", "mark", "show"], help="start: a new record (with --since, the set-up "
                    "before it is its first phase); mark: close the phase named by --phase; show: print the record")
    tm.add_argument("--file", default=None, help="the record (default: _build/timings.json)")
    tm.add_argument("--phase", default=None, help="the name of the phase that ends now (default: none)")
    tm.add_argument("--since", default=None, help="start: a Unix time, or a file holding one, when the build began "
                                                  "(default: now)")

    tr = command("train", "train a profile's runs into the model cache (the chapters then load them)",
                 "Runs already in the cache are loaded, not trained again; each run's convergence is certified. "
                 "Prints a line per run as it ends, with the runs done, the time elapsed and an ETA.",
                 f"{PROG} train --profile cpu --jobs auto", f"{PROG} train --profile smoke --runs n8 n512",
                 f"{PROG} train --profile paper --shard 0/4 --device cuda:0   # a quarter of the runs on GPU 0",
                 f"{PROG} train --profile cpu --sweep dataset_size --dry-run",
                 f"{PROG} train --profile cpu --jobs auto --estimate   # what training will cost on this machine")
    tr.add_argument("--profile", default="cpu", help=one_of)
    tr.add_argument("--runs", nargs="*", help="run names (default: every run of the profile)")
    tr.add_argument("--sweep", nargs="*", help="train the runs of these sweeps instead (default: none)")
    tr.add_argument("--shard", default="0/1", help="i/k: train every k-th run starting at i (one process per GPU)")
    tr.add_argument("--device", default=None, help="e.g. cuda:1 (default: CUDA when present)")
    tr.add_argument("--jobs", default="1", help="training processes: a number, or 'auto' (1 on a GPU, up to 2 on "
                                                 "a CPU, each with its share of the cores)")
    tr.add_argument("--dry-run", action="store_true", help="list this shard's runs without training")
    tr.add_argument("--estimate", action="store_true", help="time a few steps of each distinct network here and "
                                                            "project each run's training and certificate and the "
                                                            "phase's wall-clock with --jobs; trains nothing")
    tr.add_argument("--timings", default=None, metavar="FILE", help="add each run's seconds and the training phase "
                                                                    "to this time record (default: none)")

    nw = command("new", "copy a chapter's template and the profiles into a folder, to edit and run your copy",
                 "Writes FOLDER/notebooks/CHAPTER.ipynb and FOLDER/profiles/*.yml (each profile's named runs and "
                 "this chapter's parameters), plus the files the chapter reads; with GAUSSDIFF_ROOT=FOLDER the "
                 "commands use the copy. Existing files are not overwritten without --force. chapters: "
                 + ", ".join(chapters),
                 f"{PROG} new gaussian_shadow mywork",
                 f"GAUSSDIFF_ROOT=mywork {PROG} execute --only gaussian_shadow --profile smoke --out mywork/out")
    nw.add_argument("chapter", metavar="CHAPTER", help="the chapter to copy")
    nw.add_argument("folder", metavar="FOLDER", help="where to put the copy (created if missing)")
    nw.add_argument("--profile", default="cpu", help=f"{one_of}: the profile the printed next command runs under "
                                                     "(every profile is copied)")
    nw.add_argument("--force", action="store_true", help="overwrite files the folder already holds")

    dg = command("diagnose", "diagnose a diffusion model against the Gaussian and memorizing optima of its training set",
                 "Executes the report template (notebooks/tools/diagnose.ipynb) into the --out folder: diagnose.ipynb, "
                 "diagnose.html and diagnose.json (every number with its interval, every check with its controls). "
                 "MODEL is a diffusers save_pretrained folder (a pipeline with unet/ and scheduler/), an EDM "
                 "checkpoint (.pkl, or a .pt export), or run:NAME for a trained run of --profile. The training images "
                 "(--train) must be the set the model was trained on: the optima are built on all of them. The "
                 "report states its measured cost before the long part starts.",
                 f"{PROG} diagnose run:n16 --profile cpu --out diag-n16",
                 f"{PROG} diagnose ./my-ddpm --train ~/data/cifar-10-python.tar.gz --heldout ~/data/cifar-test.npz "
                 "--out diag",
                 f"{PROG} diagnose ./tiny-unet --train fashion-mnist --resolution 8 --n-train 512 --setting smoke "
                 "--out /tmp/d")
    dg.add_argument("model", metavar="MODEL", help="a diffusers folder, an EDM .pkl/.pt, or run:NAME")
    dg.add_argument("--train", default=None, help="the model's training images: a dataset name (fashion-mnist, "
                                                  "digits, cifar10), an image folder, a .zip, .npz or .npy file "
                                                  "(default: the run's own, for run:NAME)")
    dg.add_argument("--heldout", default=None, help="images the model did not see, in the same forms (default: the "
                                                    "test split of a named --train or of the CIFAR-10 archive, or "
                                                    "the profile's held-out images for run:NAME)")
    dg.add_argument("--resolution", type=int, default=None, help="resize the images to this size (default: as read)")
    dg.add_argument("--scheduler", default=None, help="a diffusers scheduler folder, for a network folder saved "
                                                      "without one (default: the pipeline's scheduler/)")
    dg.add_argument("--value-range", default=None, metavar="LO,HI",
                    help="the range float pixels of an array file lie in, e.g. 0,1 (default: read from the data)")
    dg.add_argument("--n-heldout", type=int, default=None,
                    help="held-out images that judge the distances (default: the setting's; the next images, at "
                         "least two, fit the linear approximations)")
    dg.add_argument("--n-train", type=int, default=None, help="a seeded subset of that many training images (only if "
                                                              "the model was trained on exactly it; default: all)")
    dg.add_argument("--profile", default="cpu", help=f"for run:NAME, the profile that defines the run; {one_of}")
    dg.add_argument("--setting", default="full", choices=["smoke", "full"],
                    help="the report's sizes: smoke (held-out images, latents and pairs cut to a minimum, so its "
                         "intervals are wide) or full")
    dg.add_argument("--seed", type=int, default=0, help="seed of the latents, the noise and the linearity pairs")
    dg.add_argument("--out", default="diagnosis", help="the folder for diagnose.ipynb, .html and .json")
    dg.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="a bar of the notebook's cells on stderr (default: when stderr is a terminal)")
    return parser


def main(argv=None) -> int:
    command = None
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        command = args.command
        if extra:   # named by the command's own parser, so the hint points at its --help
            parser.commands.get(command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
        if command is None:   # `gaussdiff` alone: where to start
            parser.print_help(sys.stderr)
            return 2
        return _run(parser, args)
    except KeyboardInterrupt:
        import logging

        # the kernel client's pending tasks would be reported by asyncio at exit, a screen of tracebacks
        logging.getLogger("asyncio").disabled = True
        print(INTERRUPTED.get(command, "interrupted; files already written are kept"), file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:      # `gaussdiff list | head`: the reader has gone, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except RuntimeError as exc:  # --keep-going: some notebooks failed
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except (ValueError, OSError, KeyError, ImportError) as exc:
        # a mistake in the command line or the profile, or missing data, a download that failed, a cache that
        # cannot be written: one line that says what to do (GAUSSDIFF_TRACEBACK=1 shows where it happened)
        if os.environ.get("GAUSSDIFF_TRACEBACK"):
            raise
        message = _one_line(exc) if not isinstance(exc, KeyError) else f"unknown name {exc}"
        print(f"error: {message}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    import re

    return re.sub(r"\s*\n\s*", " ", str(exc).strip())


def _list(profile: str) -> None:
    """Print what a profile offers: chapters and their parameters (the profile's value, else the template's), runs
    and sweeps."""
    from .chapters import profiles, runs

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


def _execute(parser, args) -> int:
    from .chapters import profiles
    from .chapters.execute import execute, parse_overrides

    sub = parser.commands["execute"]
    try:
        overrides = parse_overrides(args.overrides)
    except ValueError as exc:
        sub.error(str(exc))
    for stem, values in overrides.items():   # a mistake in what was given comes before the usage
        known = set(profiles.defaults(stem)) - {"profile"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"--set sets parameters that {stem} does not have: {unknown}; its parameters are "
                             f"{sorted(known)}")
    if args.all and args.only:
        sub.error("--all runs every chapter; leave it out to run only the chapters --only names")
    if not args.only and not args.all and args.profile is None:
        # nothing chosen: show how to choose, rather than start building the whole book
        sub.print_help(sys.stderr)
        print(f"\n{PROG} execute: name the chapters with --only CHAPTER ..., or pass --all to run every chapter",
              file=sys.stderr)
        return 2
    profile = args.profile or "cpu"
    if not args.only and not args.all:
        print(f"no --only given: running every chapter under profile {profile} (--all says so explicitly)",
              flush=True)
    written = execute(profile, args.out, args.only, force=args.force, overrides=overrides,
                      keep_going=args.keep_going, timeout=args.timeout, progress=args.progress,
                      jobs=jobs_for(args.jobs, None), timings=args.timings)
    print(f"{len(written)} executed notebook{'s' if len(written) != 1 else ''} in {os.path.abspath(args.out)}",
          flush=True)
    if args.timings:
        print(f"time record: {os.path.abspath(args.timings)}", flush=True)
    return 0


def _profile_for(text: str, chapter: str) -> str:
    """A profile's text with only its named runs (``experiments``) and ``chapter``'s section, comments kept: the
    executor refuses a profile that names chapters the folder does not hold."""
    import yaml

    from .chapters.profiles import EXPERIMENTS

    keep = {EXPERIMENTS, chapter}
    blocks, current, pending = [[]], None, []      # blocks[0]: the file's opening comments
    for line in text.splitlines(keepends=True):
        top = line[:1] not in ("", " ", "\t", "#", "\n", "\r")
        if top:
            current = line.split(":", 1)[0].strip().strip("'\"")
            blocks.append((current, pending + [line]))
            pending = []
        elif current is None:
            blocks[0].append(line)
        elif line.startswith("#") or not line.strip():
            pending.append(line)                   # comments before the next section belong to it
        else:
            blocks[-1][1].extend(pending + [line])
            pending = []
    out = "".join(blocks[0]) + "".join("".join(lines) for name, lines in blocks[1:] if name in keep)
    whole = yaml.safe_load(text) or {}
    want = {k: v for k, v in whole.items() if k in keep}
    if (yaml.safe_load(out) or {}) != want:        # a layout this reader does not follow: rewrite it plainly
        out = yaml.safe_dump(want, sort_keys=False)
    return out


def _new(args) -> int:
    import json
    import shlex
    from pathlib import Path

    from .chapters import profiles

    chapter = args.chapter.removesuffix(".ipynb")
    chapters = [p.stem for p in profiles.notebooks()]
    if chapter not in chapters:
        raise ValueError(f"no chapter named {chapter!r}; the chapters are {', '.join(chapters)}")
    if args.profile not in profiles.names():
        raise ValueError(f"unknown profile {args.profile!r}; choose one of {profiles.names()}")
    src, folder = profiles.root(), Path(args.folder)
    template = profiles.templates() / f"{chapter}.ipynb"
    depends = json.loads(template.read_text()).get("metadata", {}).get("gaussdiff", {}).get("depends", [])
    # a chapter that reads a whole profile (the scale chapter plans every chapter's runs) needs every chapter the
    # profiles name; any other gets its own template and, of each profile, the named runs and its own section
    whole = any(Path(p).parts[:1] == ("profiles",) for p in depends)
    files = {folder / "notebooks" / template.name: template.read_bytes()}
    if whole:
        files.update({folder / "notebooks" / nb.name: nb.read_bytes() for nb in profiles.notebooks()})
    for name in profiles.names():
        text = (src / "profiles" / f"{name}.yml").read_text()
        files[folder / "profiles" / f"{name}.yml"] = (text if whole else _profile_for(text, chapter)).encode()
    for pattern in depends:                        # e.g. the measured reports the scale chapter reads
        for path in sorted(src.glob(pattern)):
            rel = path.relative_to(src)
            if path.is_file() and rel.parts[0] != "profiles":
                files[folder / rel] = path.read_bytes()
    existing = [p for p in files if p.exists()]
    if existing and not args.force:
        what = f"{existing[0]} and {len(existing) - 1} more files already exist" if len(existing) > 1 else \
            f"{existing[0]} already exists"
        raise FileExistsError(f"{what}; pass --force to overwrite, or choose another folder")
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    print(f"wrote {len(files)} files into {folder.resolve()}:"
          + (f" ({chapter} reads every chapter's parameters, so every chapter's template is there too)" if whole
             else ""))
    for path in files:
        print(f"  {path}")
    root, out = shlex.quote(str(folder.resolve())), shlex.quote(str((folder / "out").resolve()))
    print(f"\nedit {folder / 'notebooks' / template.name} (in Jupyter: jupyter lab {shlex.quote(str(folder))}), "
          "then run your copy:")
    print(f"  GAUSSDIFF_ROOT={root} {PROG} execute --only {chapter} --profile smoke --out {out}   # the smallest scale")
    if args.profile != "smoke":
        print(f"  GAUSSDIFF_ROOT={root} {PROG} execute --only {chapter} --profile {args.profile} --out {out}")
    return 0


def _diagnose(args) -> int:
    from .chapters import report

    profiles = _chapters_and_profiles()[1]
    if args.profile not in profiles:
        raise ValueError(f"unknown profile {args.profile!r}; choose one of {profiles}")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    value_range = None
    if args.value_range is not None:
        try:
            value_range = tuple(float(v) for v in args.value_range.split(","))
            assert len(value_range) == 2
        except (ValueError, AssertionError):
            raise ValueError(f"--value-range takes LO,HI, e.g. 0,1; got {args.value_range!r}") from None
    paths = report.run(args.model, args.out, train=args.train, heldout=args.heldout, resolution=args.resolution,
                       n_train=args.n_train, profile=args.profile, setting=args.setting, seed=args.seed,
                       progress=progress, scheduler=args.scheduler, value_range=value_range,
                       n_heldout=args.n_heldout)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _run(parser, args) -> int:
    if args.command == "list":
        _list(args.profile)
    elif args.command == "data":
        from . import data

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
        sub = parser.commands["train"]
        try:
            shard([], args.shard)
            jobs_for(args.jobs, args.device)
        except ValueError as exc:
            sub.error(str(exc))
        return _train(args)
    elif args.command == "new":
        return _new(args)
    elif args.command == "diagnose":
        return _diagnose(args)
    else:
        return _execute(parser, args)
    return 0


def console() -> None:
    """The ``gaussdiff`` command an installed package provides (the same as ``python -m gaussdiff_lib``)."""
    sys.exit(main())


if __name__ == "__main__":
    console()
