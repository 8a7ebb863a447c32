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


NEG_FAILS, NEG_PASSES = stats.Control("D_M", "negative", False), stats.Control("D_M", "negative", True)
POS_PASSES, POS_FAILS = stats.Control("D_G", "positive", True), stats.Control("D_G", "positive", False)
CONTROLLED = (NEG_FAILS, POS_PASSES)


def ev(passed, controls=CONTROLLED, number=1, replicates=None):
    return stats.Check(f"evidence {passed} {len(controls)}", passed, controls=controls, number=number,
                       replicates=replicates)


def gate(passed, number=1):
    return stats.Check(f"gate {passed}", passed, kind="gate", number=number)


def test_verdict_counts_informative_evidence_only():
    yes, no = ev(True), ev(False)
    assert stats.verdict([yes, yes]) == "yes" and stats.verdict([no]) == "no" and stats.verdict([yes, no]) == "partly"
    # a negative control that passes, a positive control that fails, or a missing control: left out of the verdict
    for controls in ((NEG_PASSES, POS_PASSES), (NEG_FAILS, POS_FAILS), (NEG_FAILS,), (POS_PASSES,), ()):
        leaky = ev(False, controls)
        assert not leaky.informative and leaky.status == "uninformative" and leaky.why_uninformative
        assert stats.verdict([yes, leaky]) == "yes"
        assert stats.verdict([leaky]) == "not tested"
    assert "D_M also passes" in ev(True, (NEG_PASSES, POS_PASSES)).why_uninformative
    assert "D_G fails it" in ev(True, (NEG_FAILS, POS_FAILS)).why_uninformative
    assert ev(True, (NEG_FAILS,)).why_uninformative == "no positive control"
    assert yes.status == "passes" and no.status == "fails" and yes.why_uninformative == ""


def test_a_failed_gate_makes_its_claim_not_tested_never_no():
    assert stats.verdict([gate(False), ev(False)]) == "not tested"
    assert stats.verdict([gate(False), ev(True)]) == "not tested"
    assert stats.verdict([gate(True), ev(True)]) == "yes"
    assert stats.verdict([gate(True)]) == "not tested"          # a gate alone is no evidence
    # gates apply to their own claim only
    checks = [gate(False, number=2), ev(True, number=2), ev(True, number=3)]
    assert stats.verdicts(checks) == {2: "not tested", 3: "yes"}
    assert stats.verdict(checks) == "partly"
    assert stats.verdict([ev(False, number=2), gate(False, number=3), ev(True, number=3)]) == "no"
    assert gate(True).status == "gate passed" and gate(False).status == "gate failed" and not gate(True).informative


def test_one_training_seed_caps_a_yes_at_partly():
    assert stats.verdict([ev(True, replicates=1)]) == "partly"
    assert stats.verdict([ev(True, replicates=2)]) == "yes"
    assert stats.verdict([ev(False, replicates=1)]) == "no"
    # an uninformative single-seed check does not cap the verdict: it is not counted at all
    assert stats.verdict([ev(True, replicates=2), ev(True, (NEG_PASSES, POS_PASSES), replicates=1)]) == "yes"


def test_checks_round_trip_and_refuse_nonsense():
    c = stats.Check("x", True, "e", controls=CONTROLLED, number=4, replicates=2)
    assert stats.Check.from_dict(c.as_dict()) == c
    d = c.as_dict()
    assert d["status"] == "passes" and d["informative"] and d["controls"][0]["role"] == "negative"
    forged = {**d, "controls": [{**d["controls"][0], "passed": True}], "informative": True, "status": "passes"}
    assert stats.Check.from_dict(forged).status == "uninformative"      # derived fields are recomputed
    for bad, msg in ((lambda: stats.Check("x", True, kind="proof"), "kind must be one of"),
                     (lambda: stats.Check("x", True, kind="gate", controls=CONTROLLED), "has no controls"),
                     (lambda: stats.Check("x", True, number=13), "1 ... 12"),
                     (lambda: stats.Check("x", True, replicates=0), "replicates"),
                     (lambda: stats.Check("x", True, controls=("D_M",)), "Control"),
                     (lambda: stats.Control("D_M", "neutral", True), "role must be one of"),
                     (lambda: stats.Check.from_dict({"claim": "x"}), "missing")):
        with pytest.raises(ValueError, match=msg):
            bad()
    with pytest.raises(ValueError, match="at least one check"):
        stats.verdict([])


def test_clopper_pearson_against_the_beta_quantiles():
    """The exact interval is [B(a/2; k, n-k+1), B(1-a/2; k+1, n-k)] (beta quantiles, computed here by scipy as an
    independent oracle), and 0 / 1 at the ends."""
    beta = pytest.importorskip("scipy.stats").beta
    for k, n in ((0, 64), (1, 64), (5, 64), (32, 64), (63, 64), (64, 64), (3, 10), (7, 7)):
        lo, hi = stats.clopper_pearson(k, n)
        want_lo = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
        want_hi = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
        assert (lo, hi) == pytest.approx((want_lo, want_hi), abs=1e-9), (k, n)
    e = stats.proportion(torch.tensor([1.0] * 5 + [0.0] * 59))
    assert e.value == pytest.approx(5 / 64) and e.n == 64 and (e.lo, e.hi) == pytest.approx(stats.clopper_pearson(5, 64))
    zero = stats.proportion(torch.zeros(64))
    assert zero.lo == 0 and zero.hi == pytest.approx(1 - 0.025 ** (1 / 64))   # the bootstrap would give [0, 0]
    with pytest.raises(ValueError, match="0/1 flags"):
        stats.proportion(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        stats.clopper_pearson(5, 4)


def test_clopper_pearson_covers_at_least_its_level():
    """The exact interval is conservative: over 400 binomial(40, 0.3) draws it holds p at least ~95% of the time."""
    g = torch.Generator().manual_seed(5)
    ks = (torch.rand(400, 40, generator=g) < 0.3).sum(1).tolist()
    hits = sum(lo <= 0.3 <= hi for lo, hi in (stats.clopper_pearson(k, 40) for k in ks))
    assert hits >= 372          # binomial(400, 0.95) falls below 372 with probability < 0.01


def test_hierarchical_interval_holds_the_seed_spread():
    """Replicates whose means differ by far more than their items' noise: the two-level interval spans the
    seed-to-seed difference, the pooled one-level interval does not; the estimate is the mean over replicates."""
    g = torch.Generator().manual_seed(6)
    reps = [m + 0.01 * torch.randn(100, generator=g, dtype=torch.float64) for m in (0.0, 1.0, 0.5)]
    e = stats.hierarchical(lambda v: v.mean(), reps, n_boot=500)
    pooled = stats.mean(torch.cat(reps), n_boot=500)
    assert e.value == pytest.approx(sum(float(r.mean()) for r in reps) / 3) and e.n == 3
    assert e.hi - e.lo > 0.5 and pooled.hi - pooled.lo < 0.3
    # paired arrays stay paired inside a replicate: a constant difference has an interval of zero width
    d = stats.hierarchical(lambda a, b: a.mean() - b.mean(), [(r + 0.2, r) for r in reps], n_boot=200)
    assert (d.value, d.lo, d.hi) == pytest.approx((0.2, 0.2, 0.2))
    # one replicate: the ordinary bootstrap's interval, up to resampling noise
    one = stats.hierarchical(lambda v: v.mean(), [reps[0]], n_boot=2000)
    boot = stats.mean(reps[0])
    assert one.hi - one.lo == pytest.approx(boot.hi - boot.lo, rel=0.2)
    with pytest.raises(ValueError, match="same number of arrays"):
        stats.hierarchical(lambda *a: 0.0, [(reps[0],), (reps[0], reps[1])])


def test_few_seeds_call_a_difference_only_when_every_seed_shows_it():
    """Two seeds, one with a clear effect and one whose own interval holds zero: a two-seed percentile bootstrap
    would exclude zero (its seed level only ever sees the two seeds), the widened interval does not; when both
    seeds show the effect it is excluded; from FEW_REPLICATES seeds on, the interval is the plain two-level one."""
    g = torch.Generator().manual_seed(3)
    clear = 0.5 + 0.01 * torch.randn(100, generator=g, dtype=torch.float64)
    weak = torch.randn(100, generator=g, dtype=torch.float64)
    weak = 0.5 * (weak - weak.mean()) / weak.std() + 0.08        # mean 0.08, own interval about [-0.02, 0.18]
    assert not stats.mean(weak).excludes(0.0)
    e = stats.hierarchical(lambda v: v.mean(), [clear, weak])
    assert not e.excludes(0.0) and e.lo <= stats.mean(weak).lo + 0.02
    both = stats.hierarchical(lambda v: v.mean(), [clear, clear.flip(0) - 0.1])
    assert both.excludes(0.0)
    many = [m + 0.3 * torch.randn(100, generator=g, dtype=torch.float64) for m in (0.4, 0.5, 0.45, 0.55, 0.5)]
    e5 = stats.hierarchical(lambda v: v.mean(), many)
    hull = min(stats.mean(v).lo for v in many)
    assert stats.FEW_REPLICATES == 5 and e5.lo > hull + 0.02


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
