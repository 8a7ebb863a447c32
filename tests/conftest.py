import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory):
    """Tests never download, and write their cache entries into a temporary folder."""
    os.environ["GAUSSDIFF_OFFLINE"] = "1"
    os.environ["GAUSSDIFF_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


def devices():
    """CPU always; CUDA too when present (the same oracle tests run on both)."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
