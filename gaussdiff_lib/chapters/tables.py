"""Tables for the book's pages, computed from a profile: the training plan and its cost, which networks each
chapter reads, where each data set comes from, and the device memory of the analyses; and the sampling facts of
linear fits (:func:`fit_rows`, :func:`image_limit`)."""
from __future__ import annotations

from . import profiles as _profiles
from .runs import runs, section, sweep

__all__ = ["training_plan", "chapter_networks", "data_sources", "analysis_memory", "fit_rows", "image_limit",
           "RUN_PARAMETERS"]


def training_plan(profile: str, throughput: dict) -> list[dict]:
    """Per run of ``profile``: images to train on and the time it takes at a measured throughput.

    ``throughput`` is the report of ``benchmarks/paper_throughput.py`` (``{"configs": {config_key: {"img_per_s",
    "peak_gib", "params"}}}``); runs that load a published checkpoint cost nothing, and so does a run that is
    ``part_of`` a longer one (0 steps of its own; ``part_of`` names the run whose training it is). Hours are for one GPU of the
    measured kind; data-parallel training on k GPUs divides them by about k.
    """
    configs = throughput.get("configs", {})
    rows = []
    for r in runs(profile).values():
        row = {"run": r.name, "dataset": r.dataset, "n": r.n, "arch": r.arch if not r.checkpoint else "published",
               "channels": r.channels, "steps": 0 if r.checkpoint or r.part_of else r.steps,
               "mimg": 0.0 if r.checkpoint or r.part_of else r.steps * r.batch_size / 1e6, "part_of": r.part_of,
               "epochs": None if r.checkpoint else r.epochs}
        measured = configs.get(r.config_key, {}) if not r.checkpoint else {}
        row["img_per_s"] = measured.get("img_per_s")
        row["peak_gib"] = measured.get("peak_gib")
        row["params"] = measured.get("params")
        row["hours"] = 0.0 if r.checkpoint or r.part_of else (row["mimg"] * 1e6 / row["img_per_s"] / 3600
                                                 if row["img_per_s"] else None)
        rows.append(row)
    return rows


RUN_PARAMETERS = ("large", "small", "run", "reference", "long_run")  # notebook parameters that name one run


def chapter_networks(profile: str) -> list[dict]:
    """Which networks each chapter uses under ``profile``: one row per chapter with its runs and where their
    weights come from (NVIDIA's published checkpoints, or trained by this project, and how)."""
    table = runs(profile)
    rows = []
    for nb in _profiles.notebooks():
        params = {**_profiles.defaults(nb.stem), **_profiles.parameters(nb.stem, profile)}
        names = []
        for key, value in params.items():
            if value is None:                   # left to a profile that does not set it: no network named
                continue
            if key in RUN_PARAMETERS:
                names.append(value)
            elif key == "sweep" or key.endswith(("_sweep", "_pair")):
                names.extend(sweep(value, profile))
        if not names:
            continue
        sources = []
        for name in dict.fromkeys(names):
            r = table[name]
            net = "affine" if r.arch == "linear" else r.arch
            sources.append("NVIDIA checkpoint " + r.checkpoint.rsplit("/", 1)[-1] if r.checkpoint else
                           f"trained here ({net})")
        rows.append({"chapter": nb.stem, "runs": ", ".join(dict.fromkeys(names)),
                     "weights": "; ".join(dict.fromkeys(sources))})
    return rows


def data_sources(profile: str) -> list[dict]:
    """The data a profile reads: each training dataset and held-out source, its runs, and whether it is
    present on this machine."""
    from pathlib import Path

    from ..data import DATASETS

    sec = section(profile)
    held = sec.get("heldout") or ""
    table: dict[str, dict] = {}
    for r in runs(profile).values():
        entry = table.setdefault(r.dataset, {"source": r.dataset, "role": "training", "runs": []})
        entry["runs"].append(r.name)
    for dataset in list(table):
        source = held.get(dataset) if isinstance(held, dict) else (held or None)
        if source and source != dataset:
            table.setdefault(source, {"source": source, "role": f"held out for {dataset}", "runs": []})
        else:
            table[dataset]["role"] = "training (its test split held out)"
    rows = []
    for entry in table.values():
        src = entry["source"]
        present = "registered name" if src in DATASETS else ("yes" if Path(src).expanduser().exists() else "no")
        rows.append({"source": src, "role": entry["role"], "runs": len(entry["runs"]), "present here": present})
    return rows


def analysis_memory(n: int, d: int, n_sigmas: int = 1, chunk_size: int = 8192, batch_size: int = 512,
                    weight_bytes: int = 8) -> dict[str, float]:
    """GiB that each analysis holds at its peak for N training images of dimension d (all float64), counted
    from what the code allocates and checked against peaks measured on the CPU (tests/test_memory.py):

    - multi-delta (:class:`~gaussdiff_lib.denoisers.EmpiricalDenoiser`): the training set (N d) plus two chunks
      of ``chunk_size`` images while squared norms and distances are formed;
    - Gaussian fit (:meth:`~gaussdiff_lib.denoisers.GaussianDenoiser.from_data`): the larger of the
      accumulation phase (covariance d^2 plus two chunks) and the eigensolver phase (covariance, eigenvectors,
      LAPACK's 2 d^2 workspace and the reordered copy: 6 d^2), plus the input checks' N d bytes;
    - linear fit (:func:`~gaussdiff_lib.linear_fit.fit_linear`): the fitted weights (one d^2 per sigma, of
      ``weight_bytes`` each: 8, or 4 with ``fit_linear(..., dtype=torch.float32)``) and
      13 d^2 of moment matrices, half-split moments, Cholesky factors and solutions for the sigma being
      solved, plus three batches of ``batch_size`` inputs and outputs.
    """
    gib = 8 / 2 ** 30
    c = min(n, chunk_size)
    return {"multi-delta": (n * d + 2 * c * d) * gib,
            "gaussian": max(d * d + 2 * c * d, 6 * d * d) * gib + n * d / 2 ** 30,
            "linear fit": ((n_sigmas * weight_bytes / 8 + 13) * d * d + 3 * batch_size * d) * gib}



def _dash(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def fit_rows(fits: dict) -> list[dict]:
    """One row per fitted σ of the sampling facts of each named linear fit (``{name: LinearDenoiser}`` from
    ``fit_linear``, all at the same levels): the network passes spent, the relative W error and output error the
    fit estimates for itself, and where a target was missed the floor the images leave and the images that would
    reach the target ("–" where the target was met)."""
    infos = {k: f.info for k, f in fits.items()}
    levels = [i["sigma"] for i in next(iter(infos.values()))]
    if any([i["sigma"] for i in info] != levels for info in infos.values()):
        raise ValueError("fit_rows compares fits at the same noise levels; these were fitted at different ones")
    return [{"σ": s, **{f"{k}: {col}": value for k, info in infos.items() for col, value in (
                ("inputs", info[j]["samples"]), ("W error", info[j]["rel_error"]),
                ("output error", info[j]["rmse_error"]), ("image floor", _dash(info[j]["floor"], ".3f")),
                ("images for the target", _dash(info[j]["images_needed"], ",")))}}
            for j, s in enumerate(levels)]


def image_limit(info: list[dict], n_images: int, target: float) -> str:
    """A sentence on how far ``n_images`` held-out images, not the noise draws, limit a linear fit's levels
    (``fit_linear``'s ``info`` with ``limited_by``; ``target`` its ``target_error``)."""
    hit = [i for i in info if i["limited_by"] == "images"]
    if not hit:
        return f"no level is limited by the {n_images:,} images"
    worst = max(hit, key=lambda i: i["floor"])
    return (f"{len(hit)} of the {len(info)} levels are limited by the {n_images:,} images, "
            f"not the draws: their own spread leaves a relative W error of up to {worst['floor']:.3f} (at σ = "
            f"{worst['sigma']:.3g}) however many draws are added, and about "
            f"{max(i['images_needed'] for i in hit):,} held-out images would be needed to bring those levels to "
            f"{target:g}")
