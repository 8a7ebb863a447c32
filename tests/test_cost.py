"""What training will cost (gaussdiff_lib.chapters.cost, `train --estimate`), against counts and closed forms."""
import itertools
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import gaussdiff_lib as gd
from gaussdiff_lib.chapters import cost

ROOT = Path(__file__).resolve().parent.parent
PROFILE = {"experiments": {
    "convergence": {"every": 0.5, "window": 0.5, "images": 8},
    "defaults": {"dataset": "digits", "resolution": 8, "channels": 4, "steps": 6, "batch_size": 8, "lr": 2e-3},
    "runs": {"a": {"n": 32}, "a-seed1": {"n": 32, "seed": 1}, "wide": {"n": 32, "channels": 8},
             "short": {"n": 32, "part_of": "long"}, "long": {"n": 32, "steps": 12, "warmup": 1},
             "dae": {"n": 32, "fixed_sigma": 0.5}, "few": {"n": 4}, "dae-few": {"n": 4, "fixed_sigma": 0.5}}}}


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    (tmp_path / "profiles").mkdir()
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    (tmp_path / "profiles" / "tiny.yml").write_text(yaml.safe_dump(PROFILE))
    monkeypatch.setenv("GAUSSDIFF_ROOT", str(tmp_path))
    monkeypatch.setenv("GAUSSDIFF_CACHE", str(tmp_path / "cache"))
    return gd.experiments.runs("tiny")


def _brute_force_greedy(seconds, jobs):
    free = [0.0] * jobs
    for s in seconds:
        free[min(range(jobs), key=lambda i: (free[i], i))] += s
    return max(free)


def test_schedule_is_the_pool_s_first_free_process():
    assert cost.schedule([5, 4, 3, 3, 3], 2) == 10          # 5 | 4, 3 -> 7 | 5 + 3 = 8 | 7 + 3 = 10
    assert cost.schedule([5, 4, 3, 3, 3], 1) == 18 and cost.schedule([5, 4, 3], 5) == 5
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        items = (torch.rand(7, generator=g) * 100).tolist()
        for jobs in (2, 3):
            assert cost.schedule(items, jobs) == pytest.approx(_brute_force_greedy(items, jobs))
            best = min(max(sum(items[i] for i in range(7) if a[i] == j) for j in range(jobs))
                       for a in itertools.product(range(jobs), repeat=7))
            assert best <= cost.schedule(items, jobs) <= 2 * best     # never better than optimal, at most 2x


def test_certificate_images_count_the_network_passes_a_certificate_makes(tiny, monkeypatch):
    """Oracle: every image the run's network denoises while its certificate is measured, counted at the network."""
    from gaussdiff_lib.denoisers import EDMDenoiser

    for name in ("a", "dae", "short", "few", "dae-few"):        # n = 4 < 8 images: the training loss sees 4
        gd.experiments.model(name, "tiny", progress=False)      # trained first, so only the certificate is counted
        seen = []
        real = EDMDenoiser.forward
        monkeypatch.setattr(EDMDenoiser, "forward", lambda self, x, sigma: seen.append(x.shape[0]) or real(self, x, sigma))
        gd.experiments.certificate(name, "tiny")
        monkeypatch.setattr(EDMDenoiser, "forward", real)
        assert sum(seen) == cost.certificate_images(tiny[name]) > 0, name


def test_projection_prices_each_run_by_its_network_and_shares_probes(tiny):
    probes = cost.probe(tiny.values(), jobs=1, progress=False)
    keys = {cost.probe_key(r) for r in tiny.values()}
    assert set(probes) == keys and len(keys) == 3                # a, a-seed1, short, long, few share one network
    assert all(p["step"] > 0 and p["forward"] > 0 for p in probes.values())
    rows = {r["name"]: r for r in cost.project(tiny.values(), probes)}
    p = probes[cost.probe_key(tiny["a"])]
    assert rows["a"]["training"] == pytest.approx(6 * p["step"]) and rows["long"]["training"] == pytest.approx(12 * p["step"])
    assert rows["short"]["training"] == 0 and rows["short"]["part_of"] == "long" and rows["short"]["certificate"] > 0
    assert rows["a"]["certificate"] == pytest.approx(cost.certificate_images(tiny["a"]) * p["forward"])
    text, totals = cost.table(list(rows.values()), 2)
    assert totals["training"] == pytest.approx(sum(r["training"] for r in rows.values()))
    assert max(r["training"] + r["certificate"] for r in rows.values()) <= totals["wall"] <= \
        totals["training"] + totals["certificates"]
    assert [t[2] for t in text if t[0] == "short"] == ["in long"]


def test_estimate_trains_nothing_and_projects_the_build(tiny, capsys):
    from gaussdiff_lib.__main__ import main

    assert main(["train", "--profile", "tiny", "--runs", "short", "a", "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "timing 1 distinct networks" in out and "projected: training" in out and "wall-clock" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split() and line.split()[0] in tiny}
    # asked for alone, 'short' trains its longer run only as far as its own 6 steps: priced at them, 'long' absent
    assert set(rows) == {"short", "a"} and rows["short"][1] == "6" and rows["short"][2] != "in"
    assert main(["train", "--profile", "tiny", "--runs", "short", "long", "--estimate"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()
            if line.split() and line.split()[0] in tiny}
    assert rows["short"][2:4] == ["in", "long"] and rows["long"][1] == "12"
    assert not list((Path(gd.cache.cache_root()) / "runs").glob("*/final.pt"))
