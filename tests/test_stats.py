"""Intervals and verdicts: coverage of the bootstrap on data with a known mean, paired differences, words."""
import pytest
import torch

from gaussdiff_lib import stats


def test_bootstrap_interval_covers_the_true_mean_at_its_level():
    """Over 200 data sets of 80 draws from N(1, 2^2) the 95% interval holds the true mean about 95% of the
    time (a binomial(200, 0.95) count lies in [180, 198] with probability > 0.999), and its width matches
    the normal theory 2 * 1.96 * 2 / sqrt(80) within 15%."""
    g = torch.Generator().manual_seed(0)
    hits, widths = 0, []
    for _ in range(200):
        x = 1 + 2 * torch.randn(80, generator=g, dtype=torch.float64)
        e = stats.mean(x, n_boot=500)
        hits += e.lo <= 1.0 <= e.hi
        widths.append(e.hi - e.lo)
        assert e.value == pytest.approx(float(x.mean()))
    assert 180 <= hits <= 198
    assert sum(widths) / len(widths) == pytest.approx(2 * 1.96 * 2 / 80 ** 0.5, rel=0.15)


def test_generic_bootstrap_matches_the_vectorised_mean():
    x = torch.randn(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, b = stats.mean(x), stats.bootstrap(lambda v: v.mean(), x)
    assert (a.value, a.lo, a.hi) == pytest.approx((b.value, b.lo, b.hi), abs=1e-12)


def test_paired_difference_removes_the_shared_variation():
    """Two measurements of the same items that differ by a constant 0.1 plus small noise: the paired interval is
    narrow around 0.1, far narrower than the intervals of either mean, whose spread is the items' own."""
    g = torch.Generator().manual_seed(2)
    items = 5 * torch.randn(100, generator=g, dtype=torch.float64)
    a = items + 0.1 + 0.01 * torch.randn(100, generator=g, dtype=torch.float64)
    d = stats.paired(a, items)
    assert d.lo > 0.09 and d.hi < 0.11
    assert (d.hi - d.lo) < 0.05 * (stats.mean(a).hi - stats.mean(a).lo)
    assert stats.direction(d, "rises", "falls", "unclear") == "rises"
    assert stats.direction(stats.paired(items, a), "rises", "falls", "unclear") == "falls"
    assert stats.direction(stats.paired(items, items + 1e-3 * torch.randn(100, generator=g, dtype=torch.float64)),
                           "rises", "falls", "unclear") == "unclear"


def test_statistic_over_a_matrix_resamples_columns():
    """The minimum over rows of row means (the minimum linearity score over sigma): the estimate is that of the
    data; resampling keeps the columns (pairs) together, so a matrix whose rows are shifted copies has a
    difference interval of exactly zero width."""
    base = torch.rand(30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    m = torch.stack([base + 0.2, base, base + 0.5])
    stat = lambda v: v.mean(-1).min()  # noqa: E731
    e = stats.bootstrap(stat, m)
    assert e.value == pytest.approx(float(base.mean()))
    d = stats.paired(m, m - 0.05, stat)
    assert (d.value, d.lo, d.hi) == pytest.approx((0.05, 0.05, 0.05))


def test_estimate_formats_and_scales():
    e = stats.Estimate(0.25, 0.2, 0.3)
    assert format(e, ".2f") == "0.25 [0.20, 0.30]" and str(e) == "0.250 [0.200, 0.300]"
    assert e.scaled(100).lo == pytest.approx(20) and e.excludes(0.0) and not e.excludes(0.25)


def test_verdict():
    yes, no = stats.Check("a", True), stats.Check("b", False)
    assert stats.verdict([yes, yes]) == "yes" and stats.verdict([no]) == "no" and stats.verdict([yes, no]) == "partly"
    with pytest.raises(ValueError, match="at least one check"):
        stats.verdict([])


@pytest.mark.parametrize("call, msg", [
    (lambda: stats.mean([]), "non-empty set of per-item values"),
    (lambda: stats.mean([1.0, float("nan")]), "NaN or infinity"),
    (lambda: stats.mean([1.0, 2.0], n_boot=10), "too few resamples"),
    (lambda: stats.mean([1.0, 2.0], level=1.5), r"coverage in \(0, 1\)"),
    (lambda: stats.paired([1.0, 2.0], [1.0]), "same shape"),
    (lambda: stats.bootstrap(lambda a, b: a.mean(), [1.0, 2.0], [1.0]), "same number of items"),
])
def test_bad_input_is_named(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()
