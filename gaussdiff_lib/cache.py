"""Content-addressed artifacts: key = hash of the parameters + library version; atomic, verified files.

Every artifact file is a 64-character SHA-256 hex digest of its payload, a newline, then the payload
written by ``torch.save``. A file saved with a ``key`` (the run or cache entry it belongs to) has the key
hashed into its digest, so a valid file of another run or entry, copied or moved into place, fails the check
like a corrupt one (files written before keys were stored, with a plain digest, are still accepted). Writes go to a temporary file in the same folder and are moved into place
with ``os.replace``, so a reader sees either the old complete file or the new one; a file whose digest
does not match (truncated, overwritten, half-copied) raises :class:`CorruptFileError` and
:func:`cached` recomputes it. A lock file serialises concurrent writers of the same key.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ._version import __version__

__all__ = ["cache_root", "make_dirs", "digest", "save_atomic", "load_verified", "write_text_atomic", "cached", "CorruptFileError"]


class CorruptFileError(RuntimeError):
    """An artifact or checkpoint failed its integrity check (truncated, edited or not ours)."""


def cache_root() -> Path:
    """Folder of cached artifacts: ``$GAUSSDIFF_CACHE`` if set, else ``~/.cache/gaussdiff``."""
    root = os.environ.get("GAUSSDIFF_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "gaussdiff"


def make_dirs(folder: str | os.PathLike) -> Path:
    """``mkdir -p`` with an error that says what to do: a folder that cannot be created (read-only, a file in
    the way, ``$GAUSSDIFF_CACHE`` pointing somewhere unusable) names the cache root and how to move it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the folder {folder} ({exc.strerror}); gaussdiff keeps its cache "
                                 f"under {cache_root()}: set $GAUSSDIFF_CACHE to a writable folder") from None
    return folder


def _feed(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"tensor:{t.dtype}:{tuple(t.shape)}:".encode())
        t = t.reshape(-1)  # a channels-last [o, i, 1, 1] tensor is "contiguous" with a stride-8 last dimension
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, np.ndarray):
        _feed(h, torch.from_numpy(np.ascontiguousarray(obj)))
    elif isinstance(obj, dict):
        h.update(b"dict{")
        for k in sorted(obj, key=str):
            _feed(h, str(k))
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"seq[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(json.dumps(obj).encode() + b";")
    else:
        raise TypeError(f"cannot hash a {type(obj).__name__} for a cache key; pass tensors, numbers, strings, lists or dicts")


def digest(*objs: Any, version: bool = True) -> str:
    """SHA-256 of nested tensors, arrays, dicts, lists and scalars (and the library version)."""
    h = hashlib.sha256()
    if version:
        _feed(h, __version__)
    for obj in objs:
        _feed(h, obj)
    return h.hexdigest()


def _header(payload: bytes, key: str | None) -> bytes:
    h = hashlib.sha256()
    if key is not None:
        h.update(b"gaussdiff-key:" + str(key).encode() + b"\n")
    h.update(payload)
    return h.hexdigest().encode()


def _write_atomic(path: Path, chunks) -> Path:
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cache entries are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file via a temporary file and an atomic rename: a reader (or a process killed mid-write)
    sees the old complete file or the new one, never a truncated one."""
    return _write_atomic(Path(path), [text.encode()])


def save_atomic(obj: Any, path: str | os.PathLike, key: str | None = None) -> Path:
    """torch.save obj to path with a digest header (of the payload and ``key``, the run or entry the file belongs
    to), via a temporary file and an atomic rename."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    return _write_atomic(path, [_header(payload, key) + b"\n", payload])


def load_verified(path: str | os.PathLike, map_location="cpu", key: str | None = None) -> Any:
    """Load a file written by :func:`save_atomic`, checking its digest first (tensors and containers only).

    With ``key``, the file must have been saved with that key (or, for files written before keys were stored,
    with none): a valid file of another run or cache entry raises :class:`CorruptFileError` like a corrupt one.
    """
    path = Path(path)
    data = path.read_bytes()
    head, sep, payload = data.partition(b"\n")
    if not sep or len(head) != 64:
        raise CorruptFileError(f"{path} is not a gaussdiff artifact (missing digest header); delete it and recompute")
    if head != _header(payload, key) and not (key is not None and head == _header(payload, None)):
        if key is not None:
            raise CorruptFileError(
                f"{path} is corrupt or belongs to another run: its digest matches neither its content saved for key "
                f"{key[:16]}... (a file copied from another run or cache entry) nor its content alone (truncated by "
                "an interrupted write or copy)")
        raise CorruptFileError(
            f"{path} is corrupt: its content does not match its SHA-256 digest ({len(payload)} bytes, "
            "probably truncated by an interrupted write or copy); delete it and recompute")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # a digest match with an unreadable payload means a foreign file
        raise CorruptFileError(f"{path} passed its digest check but could not be read: {exc}") from exc


@contextlib.contextmanager
def file_lock(path: str | os.PathLike):
    """Exclusive advisory lock on ``path + '.lock'`` (POSIX), so two processes do not compute one entry twice.

    The holder writes who it is into the lock file; a process that has to wait says so on stderr, naming the
    holder, instead of blocking silently (a stopped holder would otherwise look like a hang)."""
    lock = Path(f"{path}.lock")
    make_dirs(lock.parent)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            print(f"waiting for {lock}: held by {holder}, which is computing this entry; this process continues "
                  "when that one finishes (a lock held by a killed process is released with it; a stopped one "
                  "must be resumed or killed)", file=sys.stderr, flush=True)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def entry_path(kind: str, key: str, root: str | os.PathLike | None = None) -> Path:
    return Path(root or cache_root()) / kind / f"{key}.pt"


def cached(kind: str, params: Any, compute: Callable[[], Any], root: str | os.PathLike | None = None) -> Any:
    """Return the artifact for (kind, params), computing and storing it on a miss or a corrupt entry."""
    key = digest(kind, params)
    path = entry_path(kind, key, root)
    with file_lock(path):
        if path.exists():
            try:
                return load_verified(path, key=key)
            except CorruptFileError as exc:
                warnings.warn(f"{exc}; recomputing", RuntimeWarning, stacklevel=2)
                path.unlink()
        value = compute()
        save_atomic(value, path, key=key)
        return value
