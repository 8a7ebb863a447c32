"""Train or load the runs of a profile (:mod:`gaussdiff_lib.chapters.runs`), and certify their convergence.

:func:`model` trains a run into the cache (or loads it, or NVIDIA's published weights for a run with a
``checkpoint``); :func:`certificate` measures whether it converged by its profile's criterion
(:mod:`gaussdiff_lib.convergence`) and stores the result beside the weights.
"""
from __future__ import annotations

import warnings

import torch
from tqdm.auto import tqdm

from .._checks import as_device, show_progress
from .runs import Run, as_run, heldout_set, section, sweep, training_set

__all__ = ["network", "model", "models", "gaussian", "certificate", "certificates", "train_job", "convergence_rows",
           "convergence_sentence", "convergence_gates", "LicenseNotice"]


def network(r: Run, X: torch.Tensor):
    """The run's network, initialised from its seed, sized for its images X."""
    from ..networks import make

    return make(r.arch, int(X.shape[1]), int(X.shape[-1]), r.channels, r.channel_mult, r.num_blocks, r.dropout,
                r.patch, seed=r.seed)


def model(r: Run | str, profile: str | None = None, snapshot: int | None = None, device=None,
          progress: bool | None = None, X: torch.Tensor | None = None, until: int | None = None):
    """Train a run, or load it from the cache, and return its EMA denoiser (an ``EDMDenoiser``).

    Args:
        r: a run name (with ``profile``) or a :class:`~gaussdiff_lib.chapters.runs.Run`.
        snapshot: a step listed in the run's ``snapshots``: the EMA weights at that step.
        device: where to train and evaluate (default: CUDA when present).
        progress: show the training progress bar (None: unless ``$GAUSSDIFF_PROGRESS`` is 0).
        X: the run's training set when the caller already holds it (skips reloading).
        until: with ``snapshot``, train only as far as this step when the run is not finished yet (a checkpoint is
            kept there, and asking for the run later continues from it). A run that is ``part_of`` a longer one
            trains that run this way, so asking for the shorter run costs only its own steps.

    The result carries ``.run`` (this :class:`~gaussdiff_lib.chapters.runs.Run`), ``.step`` and ``.epoch`` besides the training log.
    """
    from ..training import default_device, load_run, train

    r = as_run(r, profile)
    if snapshot is not None and int(snapshot) not in (*r.kept_steps, r.steps):
        raise ValueError(f"run {r.name!r} keeps snapshots at steps {list(r.kept_steps) or 'none'}, not {snapshot}; "
                         "add the step to its 'snapshots' in the profile")
    if snapshot is not None and int(snapshot) == r.steps:
        snapshot = None
    device = as_device(device) if device is not None else default_device()
    if r.checkpoint:
        return _published(r, device)
    if r.part_of:  # the longer run's weights at this run's steps: one training serves both
        from .runs import run as _run

        den = model(_run(r.part_of, r.profile), snapshot=r.steps if snapshot is None else int(snapshot), device=device,
                    progress=progress, X=X, until=r.steps)
        den.run, den.epoch = r, r.epoch(den.step)
        return den
    if X is not None and X.shape[0] != r.n:
        raise ValueError(f"X holds {X.shape[0]} images but run {r.name!r} trains on n = {r.n}; pass the run's own "
                         "training set (gd.experiments.training_set) or leave X out")
    if until is not None and (snapshot is None or not int(snapshot) <= int(until) < r.steps):
        raise ValueError(f"until = {until} needs a snapshot at or before it and must stop before the run's {r.steps} "
                         f"steps (run {r.name!r}, snapshot {snapshot})")
    X = training_set(r) if X is None else X
    def train_or_load():  # a fresh network each time: the run's key is that of its initial weights
        return train(network(r, X), X, steps=r.steps, batch_size=r.batch_size, lr=r.lr, ema=r.ema, seed=r.seed,
                     snapshot_steps=r.kept_steps, fixed_sigma=r.fixed_sigma, precond=r.precond, device=device,
                     progress=progress, cache=True, accumulate=r.accumulate, warmup_steps=r.warmup, until=until)

    den = train_or_load()
    if snapshot is not None:
        from ..cache import CorruptFileError

        stats, trained = den.stats, bool(getattr(den, "trained", False))
        try:
            den = load_run(den.run_dir, snapshot=int(snapshot), device=device)
        except CorruptFileError as exc:  # removed, then rebuilt by training to that step again
            import warnings

            warnings.warn(f"{exc}; rebuilding it", RuntimeWarning, stacklevel=2)
            (den.run_dir / f"snapshot-{int(snapshot):08d}.pt").unlink()
            if until is not None and not (den.run_dir / "final.pt").exists():
                # an unfinished run resumes past the snapshot: start it again (training is deterministic per step)
                for old in den.run_dir.glob("checkpoint-*.pt"):
                    old.unlink()
            train_or_load()
            den = load_run(den.run_dir, snapshot=int(snapshot), device=device)
        den.stats = [s for s in stats if s["step"] <= int(snapshot)]
        den.trained = trained
    den.run = r
    den.step = r.steps if snapshot is None else int(snapshot)
    den.epoch = r.epoch(den.step)
    return den


class LicenseNotice(UserWarning):
    """Shown when a chapter uses weights published under another licence."""


def _published(r: Run, device):
    import warnings

    from ..checkpoints import LICENSE_NOTE, load_edm

    warnings.warn(f"run {r.name!r} uses NVIDIA's published network {r.checkpoint}. {LICENSE_NOTE}", LicenseNotice,
                  stacklevel=3)
    den = load_edm(r.checkpoint, device=device, sha256=r.checkpoint_sha256 or None)
    if den.precond != r.precond:
        raise ValueError(f"run {r.name!r} says precond: {r.precond}, but {r.checkpoint} holds a model with "
                         f"{den.precond!r} preconditioning; correct the run's precond in profiles/{r.profile}.yml")
    den.run, den.step, den.epoch, den.stats = r, None, None, []
    return den


def models(names, profile: str, device=None, progress: bool | None = None) -> dict:
    """{name: denoiser} for a list of run names (or a sweep's name), training what is not cached yet."""
    if isinstance(names, str):
        names = sweep(names, profile)
    names = list(names)
    out = {}
    bar = tqdm(names, desc="runs", disable=not show_progress(progress) or len(names) < 2, leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        out[name] = model(name, profile, device=device, progress=progress)
    return out


def gaussian(r: Run | str, profile: str | None = None, device=None, X: torch.Tensor | None = None):
    """The Gaussian denoiser D_G of a run's training set (cached statistics)."""
    from ..denoisers import GaussianDenoiser

    r = as_run(r, profile)
    return GaussianDenoiser.from_data(training_set(r) if X is None else X, device=device, cache=True)



# ------------------------------------------------------------------------------- convergence
def certificate(r: Run | str, profile: str | None = None, device=None, progress: bool | None = None) -> dict:
    """Whether a run converged by its profile's criterion (:mod:`gaussdiff_lib.convergence`), with the evidence.

    Trains or loads the run, measures the held-out loss and RMSE(D_theta, D_G) over intermediate sigma at each of
    the criterion's snapshots, with the training loss and the memorized fraction of 64 samples from selection
    latents (the memorizing criterion), and returns {"run", "n", "steps", "epochs", "points" (one dict per measured
    step), "changes" (largest change of each measure over the window), "converged", "regime" ("generalizing",
    "memorizing", "linear" for a linear autoencoder, or None), "window", "tolerance", "seconds" (what measuring took),
    "binding"}.
    The measurements are stored beside the run's weights, so they are taken once. The stored file is bound to its
    run (``binding``: the run's name and key, the hash of its options, the SHA-256 of each weights file measured,
    the library version, the measurement's specification): one copied from another run, written by hand, cut short
    or lacking a measurement is measured again with a warning, and the verdict is always recomputed from the
    stored measurements, never read from the file. Runs that load published weights
    return ``converged = None`` (trained elsewhere; not assessed here).
    """
    import json
    import time

    from .. import cache as _cache
    from ..convergence import assess, measure

    r = as_run(r, profile)
    base = {"run": r.name, "n": r.n, "steps": r.steps, "epochs": None if r.checkpoint else r.epochs}
    if r.checkpoint or r.convergence is None:
        return {**base, "points": [], "changes": {}, "converged": None, "window": [], "tolerance": None}
    crit = r.convergence
    X = training_set(r)
    final = model(r, device=device, progress=progress, X=X)
    held_spec = {"profile_heldout": section(r.profile).get("heldout") or "", "dataset": r.dataset,
                 "resolution": r.resolution, "criterion": crit.as_dict(), "fixed_sigma": r.fixed_sigma,
                 "measures": "heldout_loss, rmse_gaussian, train_loss (of its drop), copies"}
    key = _cache.digest(held_spec, [s for s in r.measured_steps])
    path = final.run_dir / f"convergence-{key[:16]}.json"
    binding = _certificate_binding(r, final.run_dir, key)
    if path.exists():
        stored, why = _read_certificate(path, binding, r)
        if stored is not None:  # bound to this run and its files: the verdict is recomputed from its evidence
            return {**base, "points": stored["points"], **assess(stored["points"], crit, r.steps, exact_gaussian=r.arch == "linear"),
                    "seconds": stored.get("seconds"), "binding": binding}
        warnings.warn(f"{path.name} of run {r.name!r} is not used ({why}); measuring its snapshots again",
                      RuntimeWarning, stacklevel=2)
        path.unlink()
    held = heldout_set(r.profile, crit.images, seed=crit.seed, resolution=r.resolution, dataset=r.dataset)
    G = gaussian(r, X=X, device=device)
    from ..claims import selection_latents

    z = selection_latents(min(64, crit.images), tuple(X.shape[1:]), seed=crit.seed, device=device)
    points, t0 = [], time.time()
    with torch.no_grad():
        for step in r.measured_steps:
            D = final if step == r.steps else model(r, snapshot=step, device=device, X=X)
            points.append({"step": step, "epoch": r.epoch(step),
                           **measure(D, G, held, fixed_sigma=r.fixed_sigma, seed=crit.seed, train=X, latents=z)})
    result = {"points": points, **assess(points, crit, r.steps, exact_gaussian=r.arch == "linear"), "seconds": round(time.time() - t0, 3),
              "binding": binding}
    _cache.write_text_atomic(path, json.dumps(result, indent=1))
    return {**base, **result}


def _certificate_binding(r: Run, run_dir, spec: str) -> dict:
    """What a certificate is bound to: the run's name and key (its options, data and initial weights), the hash
    of its ``options.json``, the SHA-256 of each weights file it measured, the library version and the hash of
    the measurement's specification. A certificate whose binding differs was computed for something else."""
    import json

    from .. import cache as _cache
    from .._version import __version__
    from ..data import file_hash

    options = json.loads((run_dir / "options.json").read_text())
    files = {str(step): file_hash(run_dir / ("final.pt" if step == r.steps and not r.part_of
                                             else f"snapshot-{step:08d}.pt"))
             for step in r.measured_steps}
    return {"run": r.name, "key": options.get("key"), "options": _cache.digest(options, version=False),
            "files": files, "library": __version__, "spec": spec}


def _read_certificate(path, binding: dict, r: Run) -> tuple[dict | None, str]:
    """A stored certificate if it is bound to this run and holds its evidence (a point with every measure at each
    measured step), else ``(None, why not)``. Its verdict is never read: the caller recomputes it from the points."""
    import json

    from ..convergence import MEASURES

    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, "unreadable or cut short"
    if not isinstance(stored, dict):
        return None, "not a JSON object"
    if stored.get("binding") != binding:
        old = stored.get("binding")
        if not isinstance(old, dict):
            return None, "it is bound to no run (written by hand or by an older version)"
        diff = sorted(k for k in binding if old.get(k) != binding[k])
        return None, f"it was computed for another run or other files ({', '.join(diff)} differ)"
    points = stored.get("points")
    steps = {p.get("step") for p in points if isinstance(p, dict)} if isinstance(points, list) else set()
    if not isinstance(points, list) or set(r.measured_steps) - steps or not all(
            isinstance(p, dict) and all(isinstance(p.get(m), (int, float)) for m in MEASURES) for p in points):
        return None, f"it lacks the measurements at steps {list(r.measured_steps)} it must be computed from"
    return stored, ""


def train_job(job: tuple) -> dict:
    """Train (or load) one run and certify it: ``job = (profile, name, device, threads)``. The unit of work of
    ``python -m gaussdiff_lib train --jobs k`` (a module-level function, so worker processes can import it).

    Returns the run's row of the build's time record (:mod:`gaussdiff_lib.chapters.timings`): ``name``,
    ``seconds`` (this call, wall-clock), ``converged``, ``trained`` (its weights were written by this call, not
    loaded from the cache), ``training_seconds`` (the training time its log recorded, whenever it was trained; None
    for a run that is part of a longer one, with ``part_of`` naming it, whose row holds the training),
    ``certificate_seconds`` (the time its certificate took when measured) and ``steps``."""
    import time

    from .timings import run_seconds

    profile, name, device, threads = job
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    den = model(name, profile, device=device, progress=False)
    cert = certificate(name, profile, device=device, progress=False)
    run_dir = getattr(den, "run_dir", None)
    trained = bool(getattr(den, "trained", False))  # set by training: False when the cache served the weights
    part_of = as_run(name, profile).part_of
    return {"name": name, "seconds": round(time.time() - t0, 1), "converged": cert["converged"], "trained": trained,
            "training_seconds": run_seconds(run_dir) if run_dir is not None and not part_of else None,
            **({"part_of": part_of} if part_of else {}),
            "certificate_seconds": cert.get("seconds"), "steps": cert.get("steps")}


def certificates(names, profile: str, device=None, progress: bool | None = None) -> list[dict]:
    """:func:`certificate` of each run (a list of names, or a sweep's name)."""
    if isinstance(names, str):
        names = sweep(names, profile)
    return [certificate(n, profile, device=device, progress=progress) for n in dict.fromkeys(names)]


def convergence_rows(certs: list[dict]) -> list[dict]:
    """One table row per certificate: run, N, steps, epochs, the last-window changes, converged yes/no."""
    rows = []
    for c in certs:
        changes = c["changes"]
        rows.append({"run": c["run"], "N": f"{c['n']:,}", "steps": f"{c['steps']:,}",
                     "epochs": "" if c["epochs"] is None else f"{c['epochs']:,.0f}",
                     "Δ held-out loss": f"{100 * changes['heldout_loss']:.1f}%" if changes else "",
                     "Δ RMSE(θ, G)": f"{100 * changes['rmse_gaussian']:.1f}%" if changes else "",
                     "Δ training loss (of its drop)": f"{100 * changes['train_loss']:.1f}%" if "train_loss" in changes
                     else "",
                     "Δ memorized fraction": f"{100 * changes['copies']:.0f} points" if "copies" in changes else "",
                     "converged": {True: f"yes, {c.get('regime') or ''}".rstrip(", "), False: "no",
                                   None: "published weights"}[c["converged"]]})
    return rows


_MEASURE_NAMES = {"heldout_loss": "held-out loss", "rmse_gaussian": "RMSE(D_θ, D_G)", "train_loss": "training loss",
                  "copies": "memorized fraction"}


def _drift(c: dict) -> str:
    """How an unconverged run is still moving: each measure over its tolerance and the sign of its change."""
    from ..convergence import COPIES_TOLERANCE, MEASURES

    pts = {p["step"]: p for p in c["points"]}
    first, last = (pts.get(s) for s in (c["window"][0], c["window"][-1]))
    parts = []
    for m, change in c["changes"].items():
        if change <= (COPIES_TOLERANCE if m == "copies" else c["tolerance"]):
            continue
        word = "moves"
        if first is not None and last is not None:
            word = "still rises" if last[m] > first[m] else "still falls"
        parts.append(f"{_MEASURE_NAMES[m]} {word}")
    worst = max(c["changes"][m] for m in MEASURES)
    return f"{c['run']} ({100 * worst:.0f}%, {' and '.join(parts)})"


def convergence_sentence(certs: list[dict]) -> str:
    """Computed prose on the convergence of a chapter's runs: all converged (and by which criterion), or which did
    not, by how much and in which direction they were still moving."""
    from ..convergence import COPIES_TOLERANCE

    trained = [c for c in certs if c["converged"] is not None]
    if not trained:
        return "This chapter uses published weights only; their convergence is not assessed here."
    tol = trained[0]["tolerance"]
    window = trained[0]["window"]
    share = (window[-1] - window[0]) / window[-1] if window[-1] else 0
    bad = [c for c in trained if not c["converged"]]
    crit = (f"over the last {100 * share:.0f}% of training either neither the held-out loss nor RMSE(D_θ, D_G) over "
            f"intermediate σ moves by more than {100 * tol:.0f}% (a generalizing network), or most samples copy a "
            f"training image while the memorized fraction moves by at most {100 * COPIES_TOLERANCE:.0f} points and the "
            f"training loss by at most {100 * tol:.0f}% of its drop over the run (a memorizer that has stopped memorizing "
            "more)")
    mem = [c["run"] for c in trained if c.get("regime") == "memorizing"]
    lin = [c["run"] for c in trained if c.get("regime") == "linear"]
    how = "; ".join([*([f"{len(mem)} of them as memorizers: {', '.join(mem)}"] if mem else []),
                     *([f"{len(lin)} as linear models, whose RMSE(D_θ, D_G) heads for zero and is judged against its "
                        f"drop over the run: {', '.join(lin)}"] if lin else [])])
    how = f" ({how})" if how else ""
    if not bad:
        return f"All {len(trained)} trained networks of this chapter meet the convergence criterion{how}: {crit}."
    text = (f"{len(bad)} of the {len(trained)} trained networks of this chapter do not meet the convergence criterion "
            f"({crit}): {'; '.join(_drift(c) for c in bad)}.")
    text += " Their numbers describe networks still in training, not their end points; claims that rest on them are " \
            "not tested."
    return text



def convergence_gates(certs: list[dict], numbers) -> list:
    """One gate per claim number: every trained network the claim's checks rest on (``certs``, their
    certificates) is converged by the profile's criterion, as a generalizing network or as a memorizer. A network
    still in training could show a trend for the wrong reason, so a failed gate leaves the claim not tested.
    Published weights are not assessed here and do not fail the gate."""
    from ..claims import gate

    trained = [c for c in certs if c["converged"] is not None]
    bad = [c["run"] for c in trained if not c["converged"]]
    text = (f"{len(trained) - len(bad)} of {len(trained)} converged" + (f"; not: {', '.join(bad)}" if bad else "")
            if trained else "published weights only")
    return [gate(f"regime for claim {n}: the networks its checks rest on are converged", n, not bad, text)
            for n in sorted({int(n) for n in numbers})]
