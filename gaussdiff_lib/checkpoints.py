"""NVIDIA's published EDM networks, loaded without running the code stored inside their pickles.

EDM's ``.pkl`` files (e.g. ``edm-ffhq-64x64-uncond-ve.pkl``, the paper's main model, section 1) are
Python pickles written with EDM's ``torch_utils.persistence``: every network object is stored as a
*persistence record* ``{type, version, module_src, class_name, state}`` whose ``module_src`` is the
source code of the module that defined it. Loading them the usual way executes that source. Here a
restricted unpickler accepts only tensors, plain containers and those records; the records become
inert :class:`Record` objects (the source text is kept as text, never executed), the parameters are
collected by name and copied into this project's own implementation of the architecture
(:class:`gaussdiff_lib.edm_networks.SongUNet`: DDPM++ and NCSN++), wrapped in EDM preconditioning
(:class:`gaussdiff_lib.denoisers.EDMDenoiser`). Anything else in the file (a reference to ``os.system``,
an unknown class) stops the load with :class:`UnsafePickleError` before it is called.

Licence: NVIDIA's EDM weights are distributed under CC BY-NC-SA 4.0 (non-commercial, share-alike).
This module contains none of them; it reads files the user downloaded. Results computed from those
weights inherit their licence terms.

:func:`export_state_dict` writes the loaded network as a plain ``.pt`` file (tensors, numbers and
strings only) that ``torch.load(path, weights_only=True)`` reads and :func:`load_edm` accepts too.
"""
from __future__ import annotations

import collections
import inspect
import io
import json
import os
import pickle
import urllib.parse
from pathlib import Path

import torch

from .cache import CorruptFileError
from ._unpickling import ArrayUnpickler
from .data import download_file, file_hash
from .denoisers import EDMDenoiser
from .edm_networks import SongUNet

__all__ = ["load_edm", "export_state_dict", "read_pickle", "Record", "UnsafePickleError", "EDM_URL",
           "LICENSE_NOTE"]

#: where NVIDIA publishes EDM's pretrained pickles
EDM_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/"
#: the licence of NVIDIA's weights, shown wherever the book uses them
LICENSE_NOTE = ("NVIDIA's EDM weights are licensed CC BY-NC-SA 4.0 "
                "(https://creativecommons.org/licenses/by-nc-sa/4.0/): non-commercial use, share alike.")
EXPORT_FORMAT = "gaussdiff-edm-state-dict/1"
_PERSISTENCE = ("torch_utils.persistence", "_reconstruct_persistent_obj")


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for something other than tensors, containers and EDM persistence records."""


class Record:
    """An object from the pickle, kept as data: its class name and its stored attribute dict.

    ``kind`` is 'persistent' for EDM persistence records (``module_src`` holds their source text, which
    is never run) and 'torch' for plain ``torch.nn`` containers such as ``ModuleDict``."""

    def __init__(self, class_name: str = "", kind: str = "torch", state: dict | None = None, module_src: str = ""):
        self.class_name, self.kind, self.module_src = class_name, kind, module_src
        self.state = state if state is not None else {}

    def __setstate__(self, state):  # pickle's BUILD step for plain torch containers
        if not isinstance(state, dict):
            raise UnsafePickleError(f"{self.class_name}: expected an attribute dict as state, "
                                    f"got {type(state).__name__}")
        self.state = state

    def __repr__(self):
        return f"Record({self.class_name!r}, {self.kind})"

    @property
    def init_kwargs(self) -> dict:
        """The constructor arguments EDM recorded for a persistent object (``_init_kwargs``)."""
        return dict(self.state.get("_init_kwargs") or {})

    def children(self) -> dict:
        return {k: v for k, v in (self.state.get("_modules") or {}).items() if v is not None}

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every parameter and persistent buffer below this record, by its state-dict name."""
        out = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, t in (self.state.get(group) or {}).items():
                if t is not None and name not in skip:
                    if not isinstance(t, torch.Tensor):
                        raise ValueError(f"{prefix}{name} is a {type(t).__name__}, not a tensor")
                    out[prefix + name] = t.detach()
        for name, child in self.children().items():
            if not isinstance(child, Record):
                raise ValueError(f"{prefix}{name} is a {type(child).__name__}, not a stored module")
            out.update(child.tensors(f"{prefix}{name}."))
        return out


def _persistent_record(meta) -> Record:
    if not isinstance(meta, dict) or meta.get("type") != "class" or "class_name" not in meta:
        raise UnsafePickleError("malformed EDM persistence record (expected a dict with type='class' and class_name)")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise UnsafePickleError(f"persistence record {meta['class_name']!r} has no attribute dict")
    return Record(str(meta["class_name"]), "persistent", dict(state), str(meta.get("module_src", "")))


class _AttrDict(dict):
    """Stands in for EDM's ``dnnlib.EasyDict`` (a dict with attribute access)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _storage_from_bytes(data: bytes):
    """A tensor storage that torch.save wrote into the pickle, read back with torch's weights-only loader."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("a stored tensor's bytes are not bytes")
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` restricted to the inert record classes (protocol 0/1 pickles)."""
    if not (isinstance(cls, type) and issubclass(cls, (Record, dict)) and base is object):
        raise UnsafePickleError(f"refusing to rebuild {cls!r} from the pickle")
    obj = cls.__new__(cls)
    if state is not None:
        obj.__setstate__(state) if isinstance(obj, Record) else obj.update(state)
    return obj


# torch's dtypes by name, read from the module's own namespace: looking a name up with getattr(torch, name) would
# import whatever submodule the pickle names (``torch._inductor`` pulls in hundreds of modules) before refusing it
_DTYPES = {name: value for name, value in vars(torch).items() if isinstance(value, torch.dtype)}


class _EDMUnpickler(pickle.Unpickler):
    ALLOWED = ArrayUnpickler.ALLOWED
    """Resolves only tensor rebuilders, containers, dtypes and persistence records; refuses the rest."""

    _TORCH_UTILS = {"_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"}

    def find_class(self, module: str, name: str):
        if (module, name) == _PERSISTENCE:
            return _persistent_record
        if module == "torch._utils" and name in self._TORCH_UTILS:
            return getattr(torch._utils, name)
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _storage_from_bytes
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("builtins", "set"), ("builtins", "frozenset")):
            return set if name == "set" else frozenset
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if (module, name) == ("dnnlib.util", "EasyDict"):
            return _AttrDict
        if (module, name) == ("copyreg", "_reconstructor"):
            return _reconstructor
        if (module, name) in ArrayUnpickler.ALLOWED:  # numpy scalars/arrays (EDM stores np.float64 attributes)
            return ArrayUnpickler.find_class(self, module, name)
        if module.startswith("torch.nn.modules."):  # ModuleDict, ModuleList ...: kept as inert records
            return type(name, (Record,), {"__init__": lambda self: Record.__init__(self, name, "torch")})
        raise UnsafePickleError(
            f"refusing to load {module}.{name}: an EDM checkpoint may only contain tensors, containers and "
            "torch_utils.persistence records, and nothing it names is ever called. This file asks for other "
            "code; do not open it with pickle.load either.")


def read_pickle(path_or_file) -> object:
    """Unpickle an EDM-style file with the restricted unpickler: network objects come back as :class:`Record`."""
    if hasattr(path_or_file, "read"):
        return _EDMUnpickler(path_or_file).load()
    with open(path_or_file, "rb") as f:
        try:
            return _EDMUnpickler(f).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path_or_file} is not a readable EDM pickle ({type(exc).__name__}: {exc})") from exc


def download_path(url: str) -> Path:
    """Where a downloaded checkpoint is kept: under ``$GAUSSDIFF_CACHE/downloads``, by host and path, so that a
    file fetched from another address never answers this one."""
    from .cache import cache_root

    parts = urllib.parse.urlparse(url)
    path = [p for p in parts.path.split("/") if p not in ("", ".", "..")] or ["checkpoint.pkl"]
    return cache_root() / "downloads" / (parts.hostname or "local") / Path(*path)


def _check_sha256(path: Path, expected: str | None, url: str, got: str | None = None) -> None:
    """Refuse a file whose SHA-256 (``got``, when already computed) is not the pinned one."""
    if expected:
        got = got or file_hash(path)
        if got != expected:
            raise CorruptFileError(f"{path} (from {url}) has SHA-256 {got}, not the pinned {expected}; "
                                   f"delete it and download it again")


def _fetch(url: str, download: bool | None, sha256: str | None = None) -> Path:
    """The local copy of ``url``: downloaded once into ``download_path``, with a record of the address and the
    SHA-256 it had; on every later use the file is checked against that record (and against ``sha256`` when
    given), so a file edited, truncated or copied in from elsewhere is never taken for the download."""
    from .cache import write_text_atomic
    from ._checks import downloads_off
    dest = download_path(url)
    record = dest.with_name(dest.name + ".source.json")
    if dest.is_file():
        try:
            meta = json.loads(record.read_text())
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict) or meta.get("url") != url:
            raise CorruptFileError(f"{dest} has no record of being downloaded from {url} ({record.name} is missing "
                                   "or names another address); delete it to download again, or pass a file you "
                                   "trust by its path instead of the URL")
        got = file_hash(dest)
        if got != meta.get("sha256"):
            raise CorruptFileError(f"{dest} changed since it was downloaded from {url} (SHA-256 {got}, recorded "
                                   f"{meta.get('sha256')}); delete it and download it again")
        _check_sha256(dest, sha256, url, got)
        return dest
    if downloads_off(download):
        raise FileNotFoundError(f"{url} is not in {dest.parent} and downloads are switched off "
                                "(download=False or GAUSSDIFF_OFFLINE=1); download it elsewhere and pass the file's "
                                "path instead of the URL")
    download_file(url, dest, md5=None)
    got = file_hash(dest)
    if sha256 and got != sha256:
        dest.unlink()
        raise CorruptFileError(f"the download of {url} has SHA-256 {got}, not the pinned {sha256}; it was deleted. "
                               "Try again later; if it persists, the published file has changed")
    write_text_atomic(record, json.dumps({"url": url, "sha256": got}, indent=1))
    return dest


# The preconditioners EDM's pickles use (EDM's own and the baselines of its Table 1), and the keyword arguments of
# their network that are not SongUNet's.
_PRECONDS = {"EDMPrecond": "edm", "VEPrecond": "ve", "VPPrecond": "vp"}
_PRECOND_KEYS = {"img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min", "sigma_max", "sigma_data",
                 "model_type", "beta_d", "beta_min", "M", "epsilon_t"}


def _check_vp_schedule(precond: Record) -> None:
    """A VPPrecond record must use the schedule :func:`gaussdiff_lib.denoisers.preconditioning` implements."""
    from .denoisers import VP_BETA_D, VP_BETA_MIN, VP_EPSILON_T, VP_M

    expected = {"beta_d": VP_BETA_D, "beta_min": VP_BETA_MIN, "M": VP_M, "epsilon_t": VP_EPSILON_T}
    stored = {k: precond.state.get(k, precond.init_kwargs.get(k, v)) for k, v in expected.items()}
    off = {k: v for k, v in stored.items() if not isinstance(v, (int, float)) or float(v) != float(expected[k])}
    if off:
        raise ValueError(f"the VPPrecond checkpoint uses the schedule {off}; gaussdiff's VP preconditioning is EDM's "
                         f"baseline with {expected}")


def _network_from_records(precond: Record) -> tuple[SongUNet, dict]:
    if precond.class_name not in _PRECONDS:
        hint = (" (iDDPM's preconditioning uses a discrete noise schedule with learned variances; gaussdiff analyses "
                "EDM's and the VE and VP baselines)" if precond.class_name.endswith("Precond") else "")
        raise ValueError(f"the checkpoint's network is a {precond.class_name!r}, expected one of "
                         f"{tuple(_PRECONDS)}{hint}")
    if precond.class_name == "VPPrecond":
        _check_vp_schedule(precond)
    model = precond.children().get("model")
    if not isinstance(model, Record):
        raise ValueError(f"{precond.class_name} record holds no 'model' network")
    if model.class_name != "SongUNet":
        raise ValueError(f"the checkpoint's network is {model.class_name!r}; gaussdiff implements EDM's SongUNet "
                         "(DDPM++ and NCSN++, the paper's architectures), not ADM's DhariwalUNet")
    kwargs = model.init_kwargs
    if not kwargs:
        raise ValueError("the SongUNet record carries no constructor arguments (_init_kwargs)")
    unknown = set(kwargs) - set(inspect.signature(SongUNet).parameters)
    if unknown:
        raise ValueError(f"the SongUNet record has arguments this implementation does not know: {sorted(unknown)}")
    net = SongUNet(**kwargs)
    info = {"precond": {k: v for k, v in precond.init_kwargs.items() if k in _PRECOND_KEYS},
            "model_kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}}
    info["precond"]["sigma_data"] = float(precond.state.get("sigma_data", info["precond"].get("sigma_data", 0.5)))
    info["precond"]["kind"] = _PRECONDS[precond.class_name]
    _copy_into(net, model.tensors(), "the checkpoint")
    return net, info


def _copy_into(net: torch.nn.Module, tensors: dict, source: str):
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ValueError(f"{source} does not match the architecture it describes: missing {missing[:6]}"
                         f"{' ...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
                         f"{' ...' if len(unexpected) > 6 else ''}")
    bad = [k for k in own if tuple(own[k].shape) != tuple(tensors[k].shape)]
    if bad:
        raise ValueError(f"{source}: shapes differ for {bad[:4]} (e.g. {tuple(tensors[bad[0]].shape)} stored, "
                         f"{tuple(own[bad[0]].shape)} expected)")
    net.load_state_dict({k: tensors[k].to(torch.float32) for k in own})


def load_edm(path_or_url: str | os.PathLike, device=None, key: str = "ema",
             download: bool | None = None, sha256: str | None = None) -> EDMDenoiser:
    """An EDM network from NVIDIA's pickle (or from :func:`export_state_dict`'s ``.pt``), as an
    :class:`~gaussdiff_lib.denoisers.EDMDenoiser` D(x; sigma) in eval mode.

    Args:
        path_or_url: a local ``.pkl`` / ``.pt`` file, or an ``http(s)`` URL (downloaded once into
            ``download_path``, under ``$GAUSSDIFF_CACHE``, and checked against the SHA-256 recorded then on
            every use), e.g. ``gd.checkpoints.EDM_URL + 'edm-ffhq-64x64-uncond-ve.pkl'``.
        device: where the network lives (default CPU).
        key: which network of the pickle's dict (EDM stores the EMA weights under 'ema').
        download: allow (True) or forbid (False) downloading; None follows ``GAUSSDIFF_OFFLINE``.
        sha256: the file's expected SHA-256 (a profile's ``checkpoint_sha256``); a file that differs is refused.

    EDM's models (``EDMPrecond``) and its published baselines (``VEPrecond``, ``VPPrecond``, e.g.
    ``baseline-cifar10-32x32-uncond-ve.pkl``) load with their own preconditioning, reported as ``.precond``
    ("edm", "ve", "vp"). The result carries ``.edm_info`` (the preconditioner's and network's constructor
    arguments) and ``.source``. No code stored in the file is executed (see the module docstring); the weights keep
    NVIDIA's licence (:data:`LICENSE_NOTE`).
    """
    src = str(path_or_url)
    if sha256 is not None:
        from ._checks import as_sha256

        sha256 = as_sha256(sha256)
    remote = src.startswith(("http://", "https://"))
    path = _fetch(src, download, sha256) if remote else Path(src).expanduser()
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".pkl", ".pt"))
        raise ValueError(f"{path} is a folder; pass one checkpoint file in it ({inside or 'it holds no .pkl or .pt'})")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; EDM's checkpoints are listed at {EDM_URL}")
    if sha256 and not remote:
        _check_sha256(path, sha256, src)
    if device is not None:
        from ._checks import as_device

        device = as_device(device)
    with open(path, "rb") as f:
        zip_magic = f.read(4) == b"PK\x03\x04"
    if zip_magic:  # a torch.save file: ours from export_state_dict
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path} is a torch file but not a plain state dict ({exc})") from exc
        if not isinstance(blob, dict) or blob.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path} was not written by gd.checkpoints.export_state_dict "
                             f"(no format {EXPORT_FORMAT!r})")
        missing = [k for k in ("model_kwargs", "state_dict", "precond") if not isinstance(blob.get(k), dict)]
        if missing:
            raise ValueError(f"{path} is an export without {', '.join(missing)} (a file edited or written by "
                             "hand); export the network again with gd.checkpoints.export_state_dict")
        try:
            net = SongUNet(**blob["model_kwargs"])
        except TypeError as exc:
            raise ValueError(f"{path}: its model_kwargs do not build EDM's SongUNet ({exc}); export the network "
                             "again with gd.checkpoints.export_state_dict") from None
        _copy_into(net, blob["state_dict"], str(path))
        info = {"precond": blob["precond"], "model_kwargs": blob["model_kwargs"]}
    else:
        top = read_pickle(path)
        precond = top.get(key) if isinstance(top, dict) else top
        if not isinstance(precond, Record):
            have = sorted(top) if isinstance(top, dict) else type(top).__name__
            raise ValueError(f"{path} holds no network under {key!r} (it has {have})")
        net, info = _network_from_records(precond)
    if info["model_kwargs"].get("label_dim"):
        raise ValueError(f"{path} is a class-conditional model ({info['model_kwargs']['label_dim']} classes); "
                         "gaussdiff's denoiser contract D(x; sigma) covers unconditional models")
    den = EDMDenoiser(net.eval().requires_grad_(False), sigma_data=info["precond"].get("sigma_data", 0.5),
                      precond=info["precond"].get("kind", "edm"))
    den = den.to(device or "cpu")
    den.edm_info, den.source = info, src
    return den


def export_state_dict(denoiser: EDMDenoiser, path: str | os.PathLike) -> Path:
    """Write a loaded EDM denoiser as a plain ``.pt`` (format, constructor arguments, float32 state dict) that
    ``torch.load(path, weights_only=True)`` reads and :func:`load_edm` rebuilds. Written atomically."""
    info = getattr(denoiser, "edm_info", None)
    if info is None or not isinstance(denoiser.net, SongUNet):
        raise ValueError("export_state_dict takes a denoiser returned by gd.checkpoints.load_edm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": EXPORT_FORMAT, "precond": dict(info["precond"]), "model_kwargs": dict(info["model_kwargs"]),
            "state_dict": {k: v.detach().cpu() for k, v in denoiser.net.state_dict().items()},
            "license": LICENSE_NOTE}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path

