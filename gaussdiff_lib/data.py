"""Datasets as float32 tensors [N, C, H, W] scaled to [-1, 1] (``x / 127.5 - 1``, paper conventions).

Named datasets come from the :data:`DATASETS` registry (``load(name, ...)``); files in the layouts
people already have are read by :func:`load_path`: IDX (optionally gzipped), EDM dataset-tool zips,
image folders, ``.npz``/``.npy`` arrays and the CIFAR-10 python tarball (or its extracted folder).
Subsets by seed are nested: ``n=100`` is a subset of ``n=1000`` for the same seed.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._checks import downloads_off, positive_int, show_progress
from ._unpickling import ArrayUnpickler

__all__ = ["DATASETS", "load", "load_path", "load_any", "count_images", "subset", "read_idx", "find_fashion_mnist",
           "to_images", "READ_CHUNK", "describe", "file_hash"]

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# MD5 checksums of the official gzipped files, as published with the data set.
FASHION_MNIST_FILES = {
    ("train", "images"): ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    ("train", "labels"): ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    ("test", "images"): ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}

#: Limits against decompression bombs (a few hundred KB of compressed file that expands to gigabytes). The paper's
#: images are at most 64 x 64; raise these module attributes for larger data. Pixels per decoded image:
MAX_IMAGE_PIXELS = 4096 * 4096
#: bytes of one member of a zip or tar archive once decompressed (an image file, a CIFAR-10 batch):
MAX_MEMBER_BYTES = 256 * 2 ** 20
#: bytes of the array an IDX file holds once decompressed (Fashion-MNIST's training images: 47 MB):
MAX_IDX_BYTES = 2 ** 30


def data_cache() -> Path:
    """Download folder for data sets: ``data`` under :func:`gaussdiff_lib.cache.cache_root` (``$GAUSSDIFF_CACHE``,
    else ``~/.cache/gaussdiff``)."""
    from .cache import cache_root

    return cache_root() / "data"


def _env_dirs(sub: str) -> list[Path]:
    root = os.environ.get("GAUSSDIFF_DATA")
    return [Path(root).expanduser() / sub, Path(root).expanduser()] if root else []


# ----------------------------------------------------------------------------------------- conversion

def _layout(shape: tuple) -> str:
    """NCHW or NHWC for a 4-d image array, from where its channel axis (1 = grey, 3 = RGB) can be."""
    first, last = shape[1] in (1, 3), shape[-1] in (1, 3)
    if first and not last:
        return "NCHW"
    if last and not first:
        return "NHWC"
    if first and last:                  # e.g. [N, 3, 32, 3]: the square image plane decides
        if shape[2] == shape[3] and shape[1] != shape[2]:
            return "NCHW"
        if shape[1] == shape[2] and shape[2] != shape[3]:
            return "NHWC"
    extra = [c for c in (shape[1], shape[-1]) if c in (2, 4)]
    hint = (f"; {extra[0]} channels look like an alpha channel: keep the colour channels, e.g. a[..., :{extra[0] - 1}]"
            " for channels last") if extra else ""
    raise ValueError(f"cannot tell the channel axis of images shaped {shape}: gaussdiff reads grey (1 channel) or RGB "
                     f"(3 channels) images, channels first or last{hint}; or pass layout='NCHW' / 'NHWC'")


def to_images(array: np.ndarray, layout: str = "auto", value_range: tuple[float, float] | None = None
              ) -> torch.Tensor:
    """uint8 (0..255) or float array in NHWC, NCHW or NHW layout -> float32 [N, C, H, W] in [-1, 1].

    ``layout='auto'`` finds the channel axis (1 or 3 channels, first or last) and refuses shapes where it cannot.
    uint8 arrays are pixel values (``value_range`` does not apply). Float arrays must say their scale when it is ambiguous: ``value_range=(0, 1)`` rescales [0, 1] data to
    [-1, 1]; ``value_range=(-1, 1)`` (or None for data that has negative values) keeps it. Float data lying
    entirely in [0, 1] without a ``value_range`` is refused, since reading it as [-1, 1] would silently shift
    every image to the bright half.
    """
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[:, None]
        layout = "NCHW"
    if a.ndim != 4:
        raise ValueError(f"image arrays must be [N, H, W], [N, H, W, C] or [N, C, H, W], got shape {a.shape}")
    if layout not in ("auto", "NCHW", "NHWC"):
        raise ValueError(f"layout must be 'auto', 'NCHW' or 'NHWC', got {layout!r}")
    if layout == "auto":
        layout = _layout(a.shape)
    if layout == "NHWC":
        a = a.transpose(0, 3, 1, 2)
    if a.shape[0] == 0:
        raise ValueError("the image array is empty (0 images)")
    if not (a.flags.writeable and a.flags.c_contiguous):  # memory-mapped or read-only data: copy this part
        a = np.array(a, order="C")
    if a.dtype == np.uint8:
        return torch.from_numpy(a).float().div_(127.5).sub_(1.0)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError("the image array contains NaN or infinite values")
        lo_v, hi_v = float(a.min()), float(a.max())
        if value_range is None:
            if lo_v >= 0 and hi_v <= 1:
                raise ValueError(f"float images lying in [0, 1] ({lo_v:g} ... {hi_v:g}) are ambiguous: pass "
                                 "value_range=(0, 1) to rescale them to [-1, 1], or value_range=(-1, 1) if they "
                                 "already are on gaussdiff's scale")
            value_range = (-1.0, 1.0)
        lo, hi = (float(v) for v in value_range)
        if not lo < hi:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        tol = 1e-6 * (hi - lo)
        if lo_v < lo - tol or hi_v > hi + tol:
            scale = "already be scaled to [-1, 1]" if (lo, hi) == (-1.0, 1.0) else f"lie in {value_range}"
            raise ValueError(f"float image arrays must {scale}, got range [{lo_v:g}, {hi_v:g}]; store uint8 pixels "
                             "(0..255), rescale with x / 127.5 - 1, or pass value_range=(low, high)")
        out = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        if (lo, hi) != (-1.0, 1.0):
            out = out.sub_(lo).mul_(2.0 / (hi - lo)).sub_(1.0).clamp_(-1.0, 1.0)
        return out
    raise ValueError(f"image arrays must be uint8 (0..255) or float in [-1, 1], got dtype {a.dtype}")


def _resize(x: torch.Tensor, resolution: int | None, chunk: int = 4096) -> torch.Tensor:
    if resolution is None or x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    resolution = positive_int(resolution, "resolution")
    out = [F.interpolate(x[s:s + chunk], size=(resolution, resolution), mode="bilinear", antialias=True,
                         align_corners=False) for s in range(0, x.shape[0], chunk)]
    return torch.cat(out).clamp_(-1.0, 1.0)


def subset(n_total: int, n: int | None, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """Indices of a seeded subset of size n (sorted): positions offset .. offset + n - 1 of one seeded
    permutation. The subsets of one seed are nested in n, and ``offset=n`` gives a set disjoint from
    ``offset=0`` (the two halves S1, S2 of the paper's Fig 9)."""
    offset = int(offset)
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if n is None:
        if offset:
            raise ValueError("an offset needs a subset size n")
        return torch.arange(n_total)
    n = positive_int(n, "n")
    if offset + n > n_total:
        raise ValueError(f"asked for n = {n} images" + (f" after offset {offset}" if offset else "")
                         + f" but the split holds only {n_total}")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(int(seed)))
    return perm[offset:offset + n].sort().values


# ---------------------------------------------------------------------------------------------- IDX

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST/Fashion-MNIST format), gzipped or not, checking its length.

    The header is read first and the body only up to the size it announces (at most ``MAX_IDX_BYTES``), so a
    small gzip file that inflates to gigabytes is refused before it is decompressed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
                raise ValueError(f"{path} is not an IDX file (bad magic number {head.hex()})")
            ndim = head[3]
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise ValueError(f"truncated IDX file {path}: the header is cut short; delete it and fetch it again")
            dims = [int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim)]
            dtype = np.dtype(_IDX_TYPES[head[2]])
            expected = math.prod(dims) * dtype.itemsize
            if expected > MAX_IDX_BYTES:
                raise ValueError(f"{path} announces an array of shape {tuple(dims)} ({expected / 2 ** 20:.0f} MiB), "
                                 f"above gd.data.MAX_IDX_BYTES = {MAX_IDX_BYTES / 2 ** 20:.0f} MiB; if the file is "
                                 "genuine, raise that limit")
            body = f.read(expected + 1)       # one byte more tells a file that is too long
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable IDX file ({exc}); the download may be truncated: "
                         "delete it and fetch it again") from exc
    if len(body) != expected:
        got = f"{len(body)} bytes follow" if len(body) < expected else "more bytes follow"
        raise ValueError(
            f"truncated IDX file {path}: the header announces shape {tuple(dims)} ({expected} bytes) but "
            f"{got}; delete it and fetch it again")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


# ------------------------------------------------------------------------------------------ download

def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``"sha256"``, or ``"md5"`` for the data sets' published sums), read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, dest: Path, md5: str | None, timeout: float = 20.0) -> Path:
    """Fetch url to dest with a progress bar, verify its MD5 (when given), and move it into place atomically."""
    from .cache import make_dirs

    make_dirs(dest.parent)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:  # opened first, so the descriptor is closed whatever urlopen does
            try:
                r = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ConnectionError(f"could not download {url} ({reason}); check the network connection, or "
                                      f"fetch the file yourself and put it at {dest}") from None
            with r, tqdm(total=int(r.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                         desc=dest.name) as bar:
                for block in iter(lambda: r.read(1 << 16), b""):
                    f.write(block)
                    bar.update(len(block))
        got = file_hash(tmp, "md5") if md5 else None
        if md5 and got != md5:
            raise ValueError(f"checksum mismatch for {url}: MD5 {got}, expected {md5}; try again later")
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------------------------- Fashion-MNIST

def fashion_mnist_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for the Fashion-MNIST IDX files, in order."""
    dirs = [Path(root).expanduser()] if root else []
    return dirs + _env_dirs("fashion-mnist") + [DEBIAN_FASHION_MNIST, data_cache() / "fashion-mnist"]


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def find_fashion_mnist(split: str = "train", root=None, download: bool | None = None) -> tuple[Path, Path]:
    """Paths of the (images, labels) IDX files of a split, downloading them when absent and allowed."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r} for fashion-mnist; choose 'train' or 'test'")
    names = [FASHION_MNIST_FILES[(split, kind)] for kind in ("images", "labels")]
    dirs = fashion_mnist_dirs(root)
    for folder in dirs:
        found = [_find_idx(folder, name) for name, _ in names]
        if all(found):
            return found[0], found[1]
    reason = "downloads are switched off (download=False or GAUSSDIFF_OFFLINE=1)"
    if not downloads_off(download):
        target = data_cache() / "fashion-mnist"
        try:
            paths = [download_file(FASHION_MNIST_URL + name, target / name, md5) for name, md5 in names]
            return paths[0], paths[1]
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = f"the download from {FASHION_MNIST_URL} failed ({exc})"
    looked = "\n  ".join(str(d) for d in dirs)
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files ({names[0][0]}, {names[1][0]}) not found; looked in:\n  {looked}\n"
        f"and {reason}. Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download "
        f"them from {FASHION_MNIST_URL} into one of those folders, or set GAUSSDIFF_DATA to a folder holding them.")



def _load_fashion_mnist(split: str, root=None, download: bool | None = None):
    images, labels = find_fashion_mnist(split, root, download)
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.shape != (x.shape[0],):
        raise ValueError(f"unexpected Fashion-MNIST shapes: images {x.shape}, labels {y.shape}")
    return x, y.astype(np.int64)


# ------------------------------------------------------------------------------------------- digits

def _load_digits(split: str, root=None, download: bool | None = None):
    """scikit-learn's 8x8 digits (1797 images, values 0..16): 'train' is the first 1500, 'test' the rest."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    y = bunch.target.astype(np.int64)
    parts = {"train": slice(0, 1500), "test": slice(1500, None), "all": slice(None)}
    if split not in parts:
        raise ValueError(f"unknown split {split!r} for digits; choose one of {sorted(parts)}")
    return x[parts[split]], y[parts[split]]


# ---------------------------------------------------------------------------------------- CIFAR-10


def _cifar_batch(raw: bytes, what: str):
    try:
        d = ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:
        raise ValueError(f"{what} is not a CIFAR-10 python batch: {exc}") from exc
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    data = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(d["labels"], dtype=np.int64)


def _cifar_names(split: str) -> list[str]:
    if split == "train":
        return [f"data_batch_{i}" for i in range(1, 6)]
    if split == "test":
        return ["test_batch"]
    raise ValueError(f"unknown split {split!r} for cifar10; choose 'train' or 'test'")


def read_cifar10(path: str | os.PathLike, split: str = "train"):
    """CIFAR-10 python version: the ``.tar.gz`` or its extracted ``cifar-10-batches-py`` folder."""
    path = Path(path)
    names = _cifar_names(split)
    parts = []
    if path.is_dir():
        folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
        for name in names:
            f = folder / name
            if not f.is_file():
                raise FileNotFoundError(f"CIFAR-10 batch {name} missing in {folder}")
            _member_size_ok(f.stat().st_size, str(f))
            parts.append(_cifar_batch(f.read_bytes(), str(f)))
    else:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for name in names:
                if name not in members:
                    raise ValueError(f"{path} holds no CIFAR-10 batch {name}; is it the python version of CIFAR-10?")
                _member_size_ok(members[name].size, f"{path}:{name}")
                parts.append(_cifar_batch(tar.extractfile(members[name]).read(), f"{path}:{name}"))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _load_cifar10(split: str, root=None, download: bool | None = None):
    candidates = ([Path(root).expanduser()] if root else []) + _env_dirs("cifar10") + [data_cache() / "cifar10"]
    for c in candidates:
        for p in (c, c / "cifar-10-python.tar.gz", c / "cifar-10-batches-py"):
            if p.is_file() or (p.is_dir() and (p / "test_batch").is_file()) or \
                    (p.is_dir() and (p / "cifar-10-batches-py").is_dir()):
                return read_cifar10(p, split)
    reason = "downloads are switched off (download=False or GAUSSDIFF_OFFLINE=1)"
    if not downloads_off(download):
        target = data_cache() / "cifar10" / "cifar-10-python.tar.gz"
        try:
            return read_cifar10(download_file(CIFAR10_URL, target, CIFAR10_MD5), split)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = f"the download from {CIFAR10_URL} failed ({exc})"
    looked = "\n  ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"CIFAR-10 (python version) not found; looked in:\n  {looked}\nand {reason}. Pass root= a folder holding "
        f"cifar-10-python.tar.gz (from {CIFAR10_URL}) or its extracted cifar-10-batches-py folder.")


#: registered dataset names -> loader(split, root, download) returning (uint8 images, labels)
DATASETS: dict[str, Callable] = {
    "fashion-mnist": _load_fashion_mnist,
    "digits": _load_digits,
    "cifar10": _load_cifar10,
}


def load(name: str, split: str = "train", resolution: int | None = None, n: int | None = None, seed: int = 0,
         root: str | os.PathLike | None = None, download: bool | None = None, labels: bool = False,
         offset: int = 0):
    """Load a named dataset (one of :data:`DATASETS`) as float32 [N, C, H, W] in [-1, 1].

    Args:
        name: 'fashion-mnist' (28x28, 60000 train / 10000 test), 'digits' (8x8, scikit-learn) or 'cifar10'.
        split: 'train' or 'test' ('all' for digits).
        resolution: resize to resolution x resolution (antialiased bilinear); None keeps the native size.
        n: a seeded subset of n images (nested across n for one seed); None keeps all.
        seed: seed of the subset.
        offset: skip this many images of the seeded order first (``offset=n`` is disjoint from ``offset=0``).
        root: a folder to look in first.
        download: allow (True) or forbid (False) downloading missing files; None follows GAUSSDIFF_OFFLINE.
        labels: also return the int64 class labels [N].
    """
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}, "
                         "or read files with gd.data.load_path(path)") from None
    x, y = loader(split, root=root, download=download)
    idx = subset(len(x), n, seed, offset).numpy()
    images = _resize(to_images(x[idx]), resolution)
    return (images, torch.from_numpy(y[idx])) if labels else images


# ---------------------------------------------------------------------------------- files on disk

def _decode(data: bytes, what: str) -> np.ndarray:
    from PIL import Image

    try:
        with warnings.catch_warnings():            # PIL's own bomb warning: the size is checked here instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))      # reads the header only
    except Exception as exc:
        raise ValueError(f"cannot decode image {what}: {exc}") from exc
    with im:
        if im.width * im.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"image {what} is {im.width} x {im.height} pixels, above gd.data.MAX_IMAGE_PIXELS = "
                             f"{MAX_IMAGE_PIXELS}; it is not decoded (a decompression bomb, or images far larger "
                             "than the paper's: resize them first, or raise that limit)")
        try:
            im = im.convert("L") if im.mode in ("1", "L", "I;16", "I", "F", "LA") else im.convert("RGB")
            return np.asarray(im)
        except Exception as exc:
            raise ValueError(f"cannot decode image {what}: {exc}") from exc


def _member_size_ok(size: int, what: str) -> None:
    if size > MAX_MEMBER_BYTES:
        raise ValueError(f"{what} inflates to {size / 2 ** 20:.0f} MiB, above gd.data.MAX_MEMBER_BYTES = "
                         f"{MAX_MEMBER_BYTES / 2 ** 20:.0f} MiB; it is not read (a decompression bomb, or a member far "
                         "larger than one image; raise that limit if the archive is genuine)")


def _stack(images: list[np.ndarray], source: str) -> np.ndarray:
    if not images:
        raise ValueError(f"{source} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if any(im.ndim == 3 for im in images):
        images = [np.repeat(im[..., None], 3, -1) if im.ndim == 2 else im for im in images]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"{source} mixes image sizes {sorted(shapes)[:4]}; all images must share one size")
    return np.stack(images)


class _Files:
    """Images stored one per file (a folder, or the members of an EDM dataset-tool zip): nothing is
    decoded until :meth:`read` asks for particular indices."""

    def __init__(self, path: Path):
        self.path, self.zip = path, None
        if path.is_dir():
            self.names = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            try:
                self.zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile as exc:
                raise ValueError(f"{path} is not a readable zip archive ({exc})") from exc
            self.names = sorted(m for m in self.zip.namelist() if Path(m).suffix.lower() in IMAGE_SUFFIXES)
        if not self.names:
            raise ValueError(f"{path} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")

    def __len__(self):
        return len(self.names)

    def read(self, indices) -> np.ndarray:
        if self.zip is not None:
            return _stack([_decode(self._member(self.names[i]), f"{self.path}:{self.names[i]}") for i in indices],
                          str(self.path))
        return _stack([_decode(Path(self.names[i]).read_bytes(), self.names[i]) for i in indices], str(self.path))

    def _member(self, name: str) -> bytes:
        what = f"{self.path}:{name}"
        size = self.zip.getinfo(name).file_size
        _member_size_ok(size, what)
        # read with a length, so that inflating stops at the size the directory states: a member that holds more
        # than it claims is cut there (and then fails its CRC) instead of inflating in full first
        try:
            with self.zip.open(name) as f:
                return f.read(size + 1)
        except (zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{what} is damaged ({exc})") from exc

    def close(self):
        if self.zip is not None:
            self.zip.close()


class _Array:
    """Images already in one array (npz/npy, IDX, CIFAR-10); ``.npy`` files are memory-mapped."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self):
        return len(self.array)

    def read(self, indices) -> np.ndarray:
        return np.asarray(self.array[np.asarray(indices)])

    def close(self):
        pass


def _source(path: Path, split: str):
    name = path.name.lower()
    if path.is_dir():
        if (path / "cifar-10-batches-py").is_dir() or (path / "data_batch_1").is_file():
            return _Array(read_cifar10(path, split)[0])
        return _Files(path)
    if name.endswith(".zip"):
        return _Files(path)
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            keys = [k for k in ("images", "x", "arr_0", "data") if k in z.files] or list(z.files)
            if not keys:
                raise ValueError(f"{path} holds no arrays")
            return _Array(z[keys[0]])
    if name.endswith(".npy"):
        return _Array(np.load(path, mmap_mode="r", allow_pickle=False))
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _Array(read_cifar10(path, split)[0])
    if "idx" in name or "ubyte" in name:
        return _Array(read_idx(path))
    raise ValueError(f"unknown data layout for {path}: expected a folder, .zip, .npz, .npy, an IDX file, "
                     "or the CIFAR-10 python .tar.gz")


#: images decoded and converted at a time by load_path
READ_CHUNK = 1024


def count_images(path: str | os.PathLike, split: str = "train") -> int:
    """How many images :func:`load_path` would find at ``path`` (without decoding them)."""
    src = _source(Path(path).expanduser(), split)
    try:
        return len(src)
    finally:
        src.close()


def _shape_text(shape) -> str:
    c, h, w = (int(v) for v in shape)
    return f"{c} x {h} x {w}"


def load_path(path: str | os.PathLike, resolution: int | None = None, n: int | None = None, seed: int = 0,
              split: str = "train", offset: int = 0, value_range: tuple[float, float] | None = None
              ) -> torch.Tensor:
    """Read images from a file or folder as float32 [N, C, H, W] in [-1, 1].

    Layouts: EDM dataset-tool ``.zip`` (PNG files, ``dataset.json`` ignored), a folder of images
    (searched recursively, sorted by path), ``.npz``/``.npy`` (uint8 0..255 or float in [-1, 1],
    NHWC/NCHW/NHW), an IDX file, and the CIFAR-10 python ``.tar.gz`` or folder (``split`` picks train/test).
    Float arrays lying entirely in [0, 1] need ``value_range=(0, 1)`` (rescaled) or ``(-1, 1)`` (kept); see
    :func:`to_images`.

    Only the images of the subset (``n``, ``seed``, ``offset``; see :func:`subset`) are decoded, in chunks of
    :data:`READ_CHUNK`, each converted and resized straight into the result: reading FFHQ-64 (70000 x 3 x 64 x 64)
    holds the float32 result plus one chunk, never a second copy of the data set.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    src = _source(path, split)
    try:
        if len(src) == 0:
            raise ValueError(f"{path} holds no images (split {split!r}); check the path, or the layout: an EDM "
                             "dataset-tool zip, a folder of images, .npz/.npy, IDX or CIFAR-10's python archive")
        if value_range is None and isinstance(src, _Array) and np.issubdtype(src.array.dtype, np.floating):
            # decided on the whole array, so a subset or a chunk that happens to be nonnegative reads the same
            to_images(np.stack([src.array.min(axis=0), src.array.max(axis=0)]))
            value_range = (-1.0, 1.0)
        idx = subset(len(src), n, seed, offset).tolist()
        out, native = None, None
        bar = tqdm(total=len(idx), desc=path.name, unit="img", leave=False,
                   disable=not show_progress(None) or isinstance(src, _Array) or len(idx) < 2 * READ_CHUNK)
        for start in range(0, len(idx), READ_CHUNK):
            part = to_images(src.read(idx[start:start + READ_CHUNK]), value_range=value_range)
            # every chunk's native size is checked before resizing, which would hide a mix (the wrong folder)
            if native is None:
                native = tuple(part.shape[1:])
            elif tuple(part.shape[1:]) != native:
                first = idx[start]
                raise ValueError(f"{path} mixes image sizes: {_shape_text(native)} and {_shape_text(part.shape[1:])} "
                                 f"(from image {first} on); all images must share one size and channel count, even "
                                 "with a resolution to resize to. Check that this is the right folder")
            part = _resize(part, resolution)
            if out is None:
                out = torch.empty((len(idx), *part.shape[1:]), dtype=torch.float32)
            out[start:start + part.shape[0]] = part
            bar.update(part.shape[0])
        bar.close()
        return out
    finally:
        src.close()


def describe(source: str, split: str = "train") -> dict:
    """Size and native shape of a split of a registered dataset or of a path, e.g.
    ``{"source": "fashion-mnist", "split": "train", "images": 60000, "shape": "1 x 28 x 28"}``."""
    if source in DATASETS:
        x, _ = DATASETS[source](split)
        first = to_images(np.asarray(x[:1]))
    else:
        path = Path(source).expanduser()
        src = _source(path, split)
        try:
            x, first = src, to_images(src.read([0]), value_range=(-1e30, 1e30))
        finally:
            src.close()
    return {"source": source, "split": split, "images": len(x), "shape": " x ".join(str(v) for v in first.shape[1:])}


def load_any(source: str, split: str = "train", resolution: int | None = None, n: int | None = None,
             seed: int = 0, offset: int = 0) -> torch.Tensor:
    """A registered dataset name (see :data:`DATASETS`) or a path for :func:`load_path`: the one string a
    notebook parameter or profile gives, e.g. 'fashion-mnist' or '~/datasets/ffhq-64x64.zip'."""
    if source in DATASETS:
        return load(source, split=split, resolution=resolution, n=n, seed=seed, offset=offset)
    if not Path(source).expanduser().exists():
        if "/" in source or "\\" in source or Path(source).suffix:
            raise FileNotFoundError(
                f"{source} does not exist. Put the data there (FFHQ-64 / CelebA-HQ-64 as EDM dataset-tool zips or "
                "image folders, CIFAR-10 as cifar-10-python.tar.gz; see the book's page 'Reproducing the paper at "
                "scale') or change the path in the profile")
        raise ValueError(f"{source!r} is neither a dataset name ({sorted(DATASETS)}) nor an existing path")
    return load_path(source, resolution=resolution, n=n, seed=seed, split=split, offset=offset)
