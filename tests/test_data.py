"""Data loaders on fixtures built here (IDX, EDM zip, image folder, npz, CIFAR tarball) and their errors."""
import gzip
import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gaussdiff_lib as gd
from gaussdiff_lib import data


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return head + arr.tobytes()


def _images(n=10, h=6, w=6, c=None, seed=0):
    g = np.random.default_rng(seed)
    shape = (n, h, w) if c is None else (n, h, w, c)
    return g.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture
def fashion_dir(tmp_path):
    """A miniature Fashion-MNIST in the official layout: gzipped IDX files with the official names."""
    imgs = {"train": _images(40, 28, 28), "test": _images(12, 28, 28, seed=1)}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        labels = (np.arange(len(imgs[split])) % 10).astype(np.uint8)
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(imgs[split])))
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    return tmp_path, imgs


def test_read_idx_plain_and_gzipped(tmp_path):
    a = _images(5)
    (tmp_path / "a-idx3-ubyte").write_bytes(_idx_bytes(a))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(a)))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a-idx3-ubyte"), a)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a-idx3-ubyte.gz"), a)


def test_truncated_idx(tmp_path):
    raw = _idx_bytes(_images(5))
    (tmp_path / "t-idx3-ubyte").write_bytes(raw[:-7])
    with pytest.raises(ValueError, match=r"truncated IDX file .*shape \(5, 6, 6\) \(180 bytes\) but 173 bytes follow"):
        data.read_idx(tmp_path / "t-idx3-ubyte")
    (tmp_path / "t-idx3-ubyte.gz").write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(ValueError, match="not a readable IDX file"):
        data.read_idx(tmp_path / "t-idx3-ubyte.gz")
    (tmp_path / "junk-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78rest")
    with pytest.raises(ValueError, match="is not an IDX file"):
        data.read_idx(tmp_path / "junk-idx3-ubyte")


def test_fashion_mnist_from_a_folder(fashion_dir):
    root, imgs = fashion_dir
    X = gd.data.load("fashion-mnist", root=root)
    assert X.dtype == torch.float32 and X.shape == (40, 1, 28, 28)
    torch.testing.assert_close(X[:, 0], torch.from_numpy(imgs["train"]).float() / 127.5 - 1)
    assert X.min() >= -1 and X.max() <= 1
    Xt, y = gd.data.load("fashion-mnist", split="test", root=root, labels=True)
    assert Xt.shape == (12, 1, 28, 28) and y.tolist() == [i % 10 for i in range(12)]
    small = gd.data.load("fashion-mnist", root=root, resolution=16, n=8, seed=2)
    assert small.shape == (8, 1, 16, 16) and small.min() >= -1 and small.max() <= 1


def test_fashion_mnist_from_env(fashion_dir, monkeypatch):
    root, _ = fashion_dir
    monkeypatch.setenv("GAUSSDIFF_DATA", str(root))
    assert gd.data.find_fashion_mnist("train")[0].parent == root


def test_subsets_are_nested_and_reproducible(fashion_dir):
    root, _ = fashion_dir
    a = gd.data.load("fashion-mnist", root=root, n=10, seed=5)
    b = gd.data.load("fashion-mnist", root=root, n=25, seed=5)
    rows_b = {tuple(r.flatten().tolist()) for r in b}
    assert all(tuple(r.flatten().tolist()) in rows_b for r in a)
    torch.testing.assert_close(a, gd.data.load("fashion-mnist", root=root, n=10, seed=5))
    assert not torch.equal(a, gd.data.load("fashion-mnist", root=root, n=10, seed=6))
    with pytest.raises(ValueError, match="asked for n = 41 images but the split holds only 40"):
        gd.data.load("fashion-mnist", root=root, n=41)


def test_resize_keeps_constant_images_constant(fashion_dir):
    x = torch.full((2, 1, 28, 28), 0.25)
    torch.testing.assert_close(data._resize(x, 16), torch.full((2, 1, 16, 16), 0.25))


def test_missing_fashion_mnist_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setattr(data, "data_cache", lambda: tmp_path / "cache")
    monkeypatch.setenv("GAUSSDIFF_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as err:
        gd.data.load("fashion-mnist", download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "debian") in msg and str(tmp_path / "env") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "downloads are switched off" in msg


def test_download_is_verified(tmp_path, monkeypatch):
    payload = b"not the real file"
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: _FakeResponse(payload))
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.download_file("http://example.invalid/f.gz", tmp_path / "f.gz", md5="0" * 32)
    assert list(tmp_path.iterdir()) == []               # nothing half-written is left behind
    import hashlib
    good = data.download_file("http://example.invalid/f.gz", tmp_path / "f.gz", md5=hashlib.md5(payload).hexdigest())
    assert good.read_bytes() == payload


class _FakeResponse(io.BytesIO):
    headers = {"Content-Length": "17"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.skipif(not (data.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    X = gd.data.load("fashion-mnist", split="train", resolution=16, n=1024, seed=0)
    assert X.shape == (1024, 1, 16, 16) and X.dtype == torch.float32
    assert -1 <= X.min() < -0.9 and 0.9 < X.max() <= 1
    assert gd.data.load("fashion-mnist", split="test").shape == (10000, 1, 28, 28)


def test_digits():
    X = gd.data.load("digits")
    assert X.shape == (1500, 1, 8, 8) and X.min() == -1 and X.max() == 1
    assert gd.data.load("digits", split="test").shape == (297, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown split 'val' for digits"):
        gd.data.load("digits", split="val")


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnits'; choose one of \['cifar10', 'digits', 'fashion-mnist'\]"):
        gd.data.load("mnits")


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_edm_dataset_tool_zip(tmp_path):
    imgs = _images(6, 8, 8, 3)
    path = tmp_path / "ffhq-8x8.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i, im in enumerate(imgs):
            z.writestr(f"{i // 4:05d}/img{i:08d}.png", _png(im))
        z.writestr("dataset.json", json.dumps({"labels": None}))
    X = gd.data.load_path(path)
    assert X.shape == (6, 3, 8, 8)
    torch.testing.assert_close(X, torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert gd.data.load_path(path, resolution=4, n=3).shape == (3, 3, 4, 4)


def test_image_folder(tmp_path):
    imgs = _images(5, 8, 8)
    for i, im in enumerate(imgs):
        sub = tmp_path / ("a" if i < 3 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray(im).save(sub / f"{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    X = gd.data.load_path(tmp_path)
    torch.testing.assert_close(X[:, 0], torch.from_numpy(imgs).float() / 127.5 - 1)
    Image.fromarray(_images(1, 4, 4)[0]).save(tmp_path / "b" / "odd.png")
    with pytest.raises(ValueError, match="mixes image sizes"):
        gd.data.load_path(tmp_path)


def test_npz_layouts(tmp_path):
    nhwc = _images(4, 8, 8, 3)
    np.savez(tmp_path / "a.npz", images=nhwc)
    ref = torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(gd.data.load_path(tmp_path / "a.npz"), ref)
    np.savez(tmp_path / "b.npz", x=ref.numpy())                        # float NCHW in [-1, 1]
    torch.testing.assert_close(gd.data.load_path(tmp_path / "b.npz"), ref)
    np.savez(tmp_path / "c.npz", x=ref.numpy() * 3)
    with pytest.raises(ValueError, match=r"must already be scaled to \[-1, 1\]"):
        gd.data.load_path(tmp_path / "c.npz")
    np.save(tmp_path / "d.npy", _images(3, 5, 5))
    assert gd.data.load_path(tmp_path / "d.npy").shape == (3, 1, 5, 5)


def _cifar_batch(n, seed):
    g = np.random.default_rng(seed)
    return {b"data": g.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}


@pytest.fixture
def cifar_tarball(tmp_path):
    batches = {f"data_batch_{i}": _cifar_batch(3, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(4, 9)
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            raw = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path, batches


def test_cifar10_tarball_and_folder(cifar_tarball, tmp_path):
    path, batches = cifar_tarball
    X = gd.data.load("cifar10", root=path.parent)
    assert X.shape == (15, 3, 32, 32)
    first = torch.from_numpy(batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)).float() / 127.5 - 1
    torch.testing.assert_close(X[0], first)
    assert gd.data.load("cifar10", split="test", root=path.parent).shape == (4, 3, 32, 32)
    assert gd.data.load_path(path, split="test").shape == (4, 3, 32, 32)
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    torch.testing.assert_close(gd.data.load_path(tmp_path / "x"), X)


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        raw = pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2)
        for name in [f"data_batch_{i}" for i in range(1, 6)]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    with pytest.raises(ValueError, match=r"refusing to load (__builtin__|builtins)\.print"):
        gd.data.load_path(path)


def test_missing_cifar_and_unknown_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "data_cache", lambda: tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="CIFAR-10 \\(python version\\) not found"):
        gd.data.load("cifar10", root=tmp_path / "nowhere", download=False)
    (tmp_path / "a.csv").write_text("1,2")
    with pytest.raises(ValueError, match="unknown data layout"):
        gd.data.load_path(tmp_path / "a.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gd.data.load_path(tmp_path / "missing.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        gd.data.load_path(tmp_path / "empty")


def test_load_any_takes_names_and_paths(tmp_path):
    np.savez(tmp_path / "a.npz", images=_images(4, 8, 8))
    assert gd.data.load_any(str(tmp_path / "a.npz")).shape == (4, 1, 8, 8)
    assert gd.data.load_any("digits", n=5).shape == (5, 1, 8, 8)
    with pytest.raises(ValueError, match="is neither a dataset name"):
        gd.data.load_any("fashion-mnits")


def _zip_of(path, imgs):
    with zipfile.ZipFile(path, "w") as z:
        for i, im in enumerate(imgs):
            z.writestr(f"{i // 1000:05d}/img{i:08d}.png", _png(im))
        z.writestr("dataset.json", json.dumps({"labels": None}))
    return path


def test_zip_reads_only_the_subset_in_bounded_chunks(tmp_path, monkeypatch):
    imgs = _images(300, 8, 8, 3)
    path = _zip_of(tmp_path / "ffhq-8x8.zip", imgs)
    decoded = []
    real = data._decode
    monkeypatch.setattr(data, "_decode", lambda raw, what: decoded.append(what) or real(raw, what))
    monkeypatch.setattr(data, "READ_CHUNK", 16)
    peak = []
    real_to_images = data.to_images
    monkeypatch.setattr(data, "to_images", lambda a, *k, **kw: peak.append(len(a)) or real_to_images(a, *k, **kw))
    X = gd.data.load_path(path, n=40, seed=5)
    assert len(decoded) == 40 and max(peak) == 16       # 40 of 300 files decoded, 16 at a time
    ref = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(X, ref[gd.data.subset(300, 40, seed=5)])
    assert gd.data.count_images(path) == 300


def test_disjoint_halves_partition_a_zip_exactly(tmp_path):
    imgs = _images(64, 8, 8, 3)
    path = _zip_of(tmp_path / "celebahq-8x8.zip", imgs)
    a = gd.data.load_path(path, n=32, seed=1)
    b = gd.data.load_path(path, n=32, seed=1, offset=32)
    assert torch.equal(gd.data.load_path(path, n=32, seed=1), a)          # reproducible
    rows = {tuple(x.flatten().tolist()) for x in torch.cat([a, b])}
    full = {tuple(x.flatten().tolist()) for x in gd.data.load_path(path)}
    assert rows == full and len(rows) == 64                               # S1 and S2 partition the set
    with pytest.raises(ValueError, match="only 64"):
        gd.data.load_path(path, n=33, offset=32)


def test_resized_chunks_and_memory_mapped_npy(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "READ_CHUNK", 7)
    imgs = _images(20, 8, 8, 3)
    np.save(tmp_path / "x.npy", imgs)
    X = gd.data.load_path(tmp_path / "x.npy", resolution=4)
    assert X.shape == (20, 3, 4, 4)
    ref = data._resize(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1, 4)
    torch.testing.assert_close(X, ref)


def test_missing_paper_data_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="ffhq-64x64.zip does not exist.*Reproducing the paper"):
        gd.data.load_any(str(tmp_path / "ffhq-64x64.zip"))


def test_a_file_or_folder_with_no_images_is_an_error_not_none(tmp_path):
    import numpy as np

    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8), dtype=np.uint8))
    (tmp_path / "folder").mkdir()
    for path in (tmp_path / "empty.npy", tmp_path / "folder"):
        with pytest.raises(ValueError, match="holds no images"):
            gd.data.load_path(path)


# ------------------------------------------------------------------------ ambiguous arrays (issue 13, item 7)

def test_float_arrays_in_0_1_must_say_their_scale(tmp_path):
    u8 = _images(6, 5, 5, c=3)
    unit = u8.astype(np.float32) / 255                       # [0, 1]: read as [-1, 1] it would be too bright
    np.savez(tmp_path / "unit.npz", images=unit)
    with pytest.raises(ValueError, match=r"lying in \[0, 1\].*value_range=\(0, 1\)"):
        gd.data.load_path(tmp_path / "unit.npz")
    ref = gd.data.to_images(u8)                              # the same pixels from uint8
    got = gd.data.load_path(tmp_path / "unit.npz", value_range=(0, 1))
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    # a [-1, 1] set whose chosen subset happens to be nonnegative is still read as [-1, 1]: decided on the whole file
    signed = np.concatenate([np.full((1, 4, 4), -1.0, np.float32), np.full((5, 4, 4), 0.5, np.float32)])
    np.save(tmp_path / "signed.npy", signed)
    sub = gd.data.load_path(tmp_path / "signed.npy", n=1, seed=3)
    assert float(sub.min()) in (0.5, -1.0)
    one = gd.data.load_path(tmp_path / "signed.npy")
    torch.testing.assert_close(one[:, 0], torch.from_numpy(signed))
    with pytest.raises(ValueError, match="value_range must be"):
        gd.data.to_images(unit, value_range=(1, 0))
    with pytest.raises(ValueError, match=r"lie in \(0, 1\)"):
        gd.data.to_images(unit * 2, value_range=(0, 1))


@pytest.mark.parametrize("shape, layout", [((4, 8, 8, 3), "NHWC"), ((4, 3, 8, 8), "NCHW"), ((4, 8, 8, 1), "NHWC"),
                                           ((4, 1, 8, 8), "NCHW"), ((4, 3, 1, 1), "NCHW"), ((4, 1, 1, 3), "NHWC")])
def test_channel_axis_is_found(shape, layout):
    a = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    want = a if layout == "NCHW" else a.transpose(0, 3, 1, 2)
    torch.testing.assert_close(gd.data.to_images(a), torch.from_numpy(want).float() / 127.5 - 1)


@pytest.mark.parametrize("shape, msg", [((4, 8, 8, 2), r"2 channels look like an alpha channel.*a\[\.\.\., :1\]"),
                                        ((4, 8, 8, 4), r"4 channels look like an alpha"),
                                        ((4, 8, 8, 8), "cannot tell the channel axis"),
                                        ((4, 3, 5, 3), "cannot tell the channel axis"),
                                        ((4, 3, 3, 3), "cannot tell the channel axis")])
def test_ambiguous_channel_axis_is_refused(shape, msg, tmp_path):
    a = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError, match=msg):
        gd.data.to_images(a)
    np.save(tmp_path / "a.npy", a)                          # and through the file reader that found the fault
    with pytest.raises(ValueError, match="cannot tell the channel axis"):
        gd.data.load_path(tmp_path / "a.npy")
    assert gd.data.to_images(a, layout="NCHW").shape[0] == 4     # an explicit layout is obeyed


# ------------------------------------------------------------------ decompression bombs (issue 13, item 13)

def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height 8-bit grey pixels, with a tiny body (never decoded)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_an_image_of_too_many_pixels_is_not_decoded(tmp_path):
    (tmp_path / "bomb").mkdir()
    (tmp_path / "bomb" / "a.png").write_bytes(_png_header_only(12000, 12000))     # 144 Mpixels in 100 bytes
    with pytest.raises(ValueError, match=r"12000 x 12000 pixels, above gd.data.MAX_IMAGE_PIXELS"):
        gd.data.load_path(tmp_path / "bomb")
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w") as z:
        z.writestr("00000/img00000000.png", _png_header_only(12000, 12000))
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        gd.data.load_path(tmp_path / "bomb.zip")


def test_a_zip_member_that_inflates_too_far_is_not_read(tmp_path, monkeypatch):
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, format="PNG")
    with zipfile.ZipFile(tmp_path / "big.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("00000/img00000000.png", png.getvalue())
        z.writestr("00000/img00000001.png", png.getvalue() + b"\0" * (8 * 2 ** 20))   # 8 MiB of trailing zeros
    assert (tmp_path / "big.zip").stat().st_size < 100_000
    monkeypatch.setattr(data, "MAX_MEMBER_BYTES", 2 ** 20)
    with pytest.raises(ValueError, match=r"img00000001.png inflates to 8 MiB, above gd.data.MAX_MEMBER_BYTES"):
        gd.data.load_path(tmp_path / "big.zip")
    assert gd.data.subset(2, 1, seed=0).tolist() == [0]      # seed 0 picks the small member, which still reads
    assert gd.data.load_path(tmp_path / "big.zip", n=1, seed=0).shape == (1, 1, 8, 8)


def test_a_zip_member_that_lies_about_its_size_is_cut_there(tmp_path):
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, format="PNG")
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.png", png.getvalue() + b"\0" * (64 * 2 ** 20))
    # rewrite the member's stated size (local header and central directory) to the PNG's own length
    raw = bytearray(path.read_bytes())
    true_size = (len(png.getvalue()) + 64 * 2 ** 20).to_bytes(4, "little")
    assert raw.count(true_size) == 2
    raw = bytes(raw).replace(true_size, len(png.getvalue()).to_bytes(4, "little"))
    path.write_bytes(raw)
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(ValueError, match="damaged"):       # cut at the stated size, then the CRC fails
        gd.data.load_path(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2 ** 20                              # never inflated the 64 MiB


def test_a_gzipped_idx_announcing_too_much_is_refused_from_its_header(tmp_path):
    head = bytes([0, 0, 0x08, 3]) + b"".join(int(n).to_bytes(4, "big") for n in (60000, 4096, 4096))
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(head)
        for _ in range(64):
            f.write(b"\0" * 2 ** 20)                         # 64 MiB of zeros in about 64 KB
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(ValueError, match=r"announces an array of shape \(60000, 4096, 4096\).*MAX_IDX_BYTES"):
        gd.data.read_idx(path)
    assert tracemalloc.get_traced_memory()[1] < 4 * 2 ** 20
    tracemalloc.stop()


def test_an_idx_with_more_bytes_than_announced_is_refused_without_reading_them(tmp_path):
    arr = _images(3, 4, 4)
    path = tmp_path / "long-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(_idx_bytes(arr))
        for _ in range(32):
            f.write(b"\0" * 2 ** 20)
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(ValueError, match="more bytes follow"):
        gd.data.read_idx(path)
    assert tracemalloc.get_traced_memory()[1] < 4 * 2 ** 20
    tracemalloc.stop()


def test_a_cifar_member_above_the_limit_is_not_read(cifar_tarball, monkeypatch):
    monkeypatch.setattr(data, "MAX_MEMBER_BYTES", 100)
    with pytest.raises(ValueError, match="data_batch_1 inflates to .* above gd.data.MAX_MEMBER_BYTES"):
        gd.data.read_cifar10(cifar_tarball[0])
