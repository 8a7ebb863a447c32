"""Issue 28, item 2: the second round of fault injection. Each test feeds one fault that used to give a silently
wrong result or a raw traceback, and asserts the one clear line (or the recomputation) that replaces it. Each fails
on the code before the fix: the comments say what happened then."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import gaussdiff_lib as gd
from gaussdiff_lib import checkpoints, data, training
from gaussdiff_lib.chapters import results
from gaussdiff_lib.edm_networks import SongUNet


def test_a_folder_mixing_native_sizes_across_chunks_is_refused_even_when_resized(tmp_path, monkeypatch):
    # before: each chunk was resized on its own, so 8x8 and 12x12 images loaded as one 8x8 set without a word
    monkeypatch.setattr(data, "READ_CHUNK", 2)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / f"a{i}.png")
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(tmp_path / f"b{i}.png")
    with pytest.raises(ValueError, match=r"mixes image sizes: 1 x 8 x 8 and 1 x 12 x 12 \(from image 4 on\).*right "
                                         "folder"):
        data.load_path(tmp_path, resolution=8)
    for i in range(2):
        (tmp_path / f"b{i}.png").unlink()
    assert data.load_path(tmp_path, resolution=4).shape == (4, 1, 4, 4)     # one native size: resized as asked


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), "0.5"])
def test_sigma_data_must_be_a_positive_number(bad):
    # before: EDMDenoiser and train took sigma_data <= 0 (c_in = 1/sqrt(sigma^2 + sd^2) then divides by sigma alone)
    net = gd.networks.LinearNet(1, 4)
    with pytest.raises((ValueError, TypeError), match="sigma_data must be a"):
        gd.denoisers.EDMDenoiser(net, sigma_data=bad)
    X = torch.rand(8, 1, 4, 4) * 2 - 1
    with pytest.raises((ValueError, TypeError), match="sigma_data must be a"):
        training.train(net, X, steps=1, batch_size=4, sigma_data=bad, progress=False)


def test_pixel_values_stored_as_floats_with_rounding_noise_are_recognised():
    # before: 0..255 data that had passed through float arithmetic (254.9999) was not 'integer-valued' and was
    # taken for images on the [-1, 1] scale
    pixels = torch.randint(0, 256, (16, 1, 4, 4)).double()
    noisy = (pixels / 255.0 * 255.0 + torch.randn(pixels.shape, dtype=torch.float64) * 1e-5).float()
    assert not bool((noisy == noisy.round()).all())                    # the old exact test would miss it
    with pytest.raises(ValueError, match="holds pixel values"):
        gd.denoisers.GaussianDenoiser.from_data(noisy)
    with pytest.raises(ValueError, match="holds pixel values"):
        gd.denoisers.GaussianDenoiser.from_data(pixels.float() * (1 - 1e-6))
    spread = torch.randn(16, 1, 4, 4) * 5                                # genuine non-integer data still passes
    assert gd.denoisers.GaussianDenoiser.from_data(spread).rank == 15          # 16 centred images


def _notebook(record_chapter: str | None = None) -> dict:
    outputs = []
    if record_chapter:
        controls = (gd.stats.Control("D_M", "negative", False), gd.stats.Control("D_G", "positive", True))
        check = gd.stats.Check("passes", True, controls=controls, number=4)
        rec = results.payload(record_chapter, [results.quote("a number", 0.5, None, check)], checks=[check])
        outputs = [{"output_type": "display_data", "data": {results.MIME: rec}, "metadata": {}}]
    return {"cells": [{"cell_type": "markdown", "source": "# A chapter", "metadata": {}},
                      {"cell_type": "code", "source": "", "metadata": {}, "outputs": outputs,
                       "execution_count": 1}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_gather_skips_hidden_and_half_written_notebooks_and_names_non_objects(tmp_path):
    # before: an editor's .~dataset_size.ipynb or a half-written file ended the Status page's build
    (tmp_path / "dataset_size.ipynb").write_text(json.dumps(_notebook("dataset_size")))
    (tmp_path / ".~dataset_size.ipynb").write_text("{\"cells\": [")           # an editor's lock/backup file
    (tmp_path / "~scratch.ipynb").write_text("garbage")
    (tmp_path / "half.ipynb").write_text(json.dumps(_notebook("half"))[:40])  # cut short mid-write
    with pytest.warns(results.SkippedNotebook, match="half.ipynb skipped: not a whole notebook"):
        paths = results.executed(tmp_path)
    assert [p.name for p in paths] == ["dataset_size.ipynb"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", results.SkippedNotebook)
        assert [c["chapter"] for c in results.gather_checks(tmp_path)] == ["dataset_size"]
        assert [r["quantity"] for r in results.gather(tmp_path)] == ["a number"]
    (tmp_path / "half.ipynb").write_text("[1, 2, 3]")                         # JSON, but not a notebook
    with pytest.raises(ValueError, match=r"half\.ipynb: a notebook must be a JSON object, got list"):
        results.gather(tmp_path)


def test_a_training_log_entry_that_is_not_an_object_is_named(tmp_path):
    # before: AttributeError: 'list' object has no attribute 'get', from inside training
    (tmp_path / "stats.jsonl").write_text('{"step": 1, "loss": 0.5}\n[2, 0.4]\n')
    with pytest.raises(ValueError, match=r"stats\.jsonl, line 2: a training-log entry must be a JSON object"):
        training._read_stats(tmp_path, upto=10)
    (tmp_path / "stats.jsonl").write_text('{"step": "two"}\n')
    with pytest.raises(ValueError, match="numeric 'step'"):
        training._read_stats(tmp_path, upto=10)


def test_an_export_without_model_kwargs_is_named(tmp_path):
    # before: KeyError: 'model_kwargs'
    kwargs = dict(img_resolution=8, in_channels=1, out_channels=1, model_channels=8, channel_mult=[1, 2],
                  num_blocks=1, attn_resolutions=[], dropout=0.0)
    net = SongUNet(**kwargs)
    path = tmp_path / "export.pt"
    torch.save({"format": checkpoints.EXPORT_FORMAT, "precond": {"sigma_data": 0.5},
                "state_dict": net.state_dict()}, path)
    with pytest.raises(ValueError, match="export without model_kwargs"):
        checkpoints.load_edm(path)
    torch.save({"format": checkpoints.EXPORT_FORMAT, "precond": {"sigma_data": 0.5}, "state_dict": net.state_dict(),
                "model_kwargs": {**kwargs, "wings": 2}}, path)
    with pytest.raises(ValueError, match="model_kwargs do not build EDM's SongUNet"):
        checkpoints.load_edm(path)


@pytest.mark.parametrize("name, value, match", [("log_every", 0, "log_every must be a positive integer"),
                                                ("checkpoint_every", -5, "checkpoint_every must be a positive"),
                                                ("lr", "fast", r"lr must be a number > 0 \(e\.g\. 2e-4\)")])
def test_training_options_are_checked_before_training(name, value, match):
    # before: log_every=0 raised ZeroDivisionError mid-loop; lr='fast' a TypeError from a comparison
    X = torch.rand(8, 1, 4, 4) * 2 - 1
    with pytest.raises((ValueError, TypeError), match=match):
        training.train(gd.networks.LinearNet(1, 4), X, steps=2, batch_size=4, progress=False, **{name: value})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_request_without_cuda_says_so():
    # before: torch's "Torch not compiled with CUDA enabled" assertion from inside the covariance loop
    X = torch.rand(8, 1, 4, 4) * 2 - 1
    with pytest.raises(ValueError, match="asks for a CUDA GPU, but this machine has none"):
        gd.denoisers.GaussianDenoiser.from_data(X, device="cuda")
    with pytest.raises(ValueError, match="asks for a CUDA GPU"):
        gd.denoisers.GaussianDenoiser.statistics(X, device="cuda:0")
