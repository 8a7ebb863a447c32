"""experiments.analysis_memory against peaks measured on the CPU.

Each analysis runs in a fresh interpreter. glibc's malloc is told to map every block above 64 KiB on its own
(MALLOC_MMAP_THRESHOLD_), so freed tensors leave the resident set at once and the resident set's high-water mark
(reset through /proc/self/clear_refs) is the largest amount the analysis held at one time.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gaussdiff_lib as gd

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")

CHILD = r"""
import json, sys, torch
import gaussdiff_lib as gd

torch.set_num_threads(2)

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

what, n, d, s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = torch.float32 if len(sys.argv) > 5 and sys.argv[5] == "4" else torch.float64
X = torch.rand(n, 1, 1, d, generator=torch.Generator().manual_seed(0)) * 2 - 1
if what == "linear fit":
    G = gd.denoisers.GaussianDenoiser.from_data(X)
gd.denoisers.GaussianDenoiser.from_data(X[:50, :, :, :16])       # load kernels before measuring
open("/proc/self/clear_refs", "w").write("5")
start = kib("VmRSS")
if what == "multi-delta":
    M = gd.denoisers.EmpiricalDenoiser(X)
    M(X[:64], 1.0)
elif what == "gaussian":
    G = gd.denoisers.GaussianDenoiser.from_data(X)
else:
    gd.linear_fit.fit_linear(G, X, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0][:s], n_noise=1, progress=False, dtype=store)
print(json.dumps((kib("VmHWM") - start) / 2 ** 30))
"""


def measured_gib(what: str, n: int, d: int, n_sigmas: int = 1, weight_bytes: int = 8) -> float:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "GAUSSDIFF_PROGRESS": "0",
           "PYTHONPATH": str(Path(gd.__file__).parents[1])}
    argv = [sys.executable, "-c", CHILD, what, str(n), str(d), str(n_sigmas), str(weight_bytes)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("what, n, d, n_sigmas", [
    ("multi-delta", 30000, 1024, 1),
    ("gaussian", 20000, 1024, 1),          # the accumulation phase holds the most
    ("gaussian", 2000, 2048, 1),           # the eigensolver phase holds the most
    ("linear fit", 3000, 1536, 1),
    ("linear fit", 3000, 1536, 3),
])
def test_analysis_memory_bounds_the_measured_peak(what, n, d, n_sigmas):
    """The model never understates (the fault it replaces understated 2-3x) and overstates by less than 2x."""
    predicted = gd.experiments.analysis_memory(n, d, n_sigmas=n_sigmas)[what]
    peak = measured_gib(what, n, d, n_sigmas)
    assert peak <= predicted < 2 * peak, (what, n, d, n_sigmas, peak, predicted)


def test_analysis_memory_grows_as_counted():
    one, three = gd.experiments.analysis_memory(1000, 3072), gd.experiments.analysis_memory(1000, 3072, n_sigmas=3)
    assert three["linear fit"] - one["linear fit"] == pytest.approx(2 * 3072 ** 2 * 8 / 2 ** 30)
    assert three["multi-delta"] == one["multi-delta"] and three["gaussian"] == one["gaussian"]
    big = gd.experiments.analysis_memory(70000, 12288)
    assert big["multi-delta"] == pytest.approx((70000 + 2 * 8192) * 12288 * 8 / 2 ** 30)


def test_float32_weights_halve_what_the_fitted_levels_hold():
    """Issue 15: LinearDenoiser kept float64 [S, d, d]. Kept in float32, six levels at d = 1536 hold 54 MiB less
    at the peak (6 x 1536^2 x 4 bytes), and the model follows the measurement."""
    wide, narrow = measured_gib("linear fit", 3000, 1536, 6), measured_gib("linear fit", 3000, 1536, 6, 4)
    saved = 6 * 1536 ** 2 * 4 / 2 ** 30
    assert wide - narrow == pytest.approx(saved, rel=0.2), (wide, narrow, saved)
    predicted = gd.experiments.analysis_memory(3000, 1536, n_sigmas=6, weight_bytes=4)["linear fit"]
    assert narrow <= predicted < 2 * narrow
