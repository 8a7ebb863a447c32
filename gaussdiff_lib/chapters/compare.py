"""Comparisons the chapters make between the book's named runs and the Gaussian and multi-delta models: the
same latents, the same sampler and the same noise levels on every side, with intervals. :func:`compare` and
:class:`Comparison` are the library's (:mod:`gaussdiff_lib.compare`), for any denoisers; :func:`halves_design` reads
a profile's strong-generalization runs (the claim's checks are :func:`gaussdiff_lib.claims.strong_generalization`)."""
from __future__ import annotations

from ..compare import Comparison, compare
from .runs import Run, as_run, check_same_training

__all__ = ["compare", "Comparison", "halves_design"]


def halves_design(sweep_name: str, profile: str) -> tuple[list[Run], list[Run]]:
    """The runs of a strong-generalization sweep as (runs on half 1, runs on half 2), checked: ``[S1, S2]``,
    ``[S1, S2, F]`` or ``[S1, S2, F, F2]`` where S1 and F train on one half, S2 and F2 on the disjoint other half,
    the i-th runs of the two halves (a *cross pair*) differ in their seed, and so do the runs on one half (a
    *floor*). Two seeds per half (S1, F with seeds a, b; S2, F2 with b, a) give two cross pairs and two floors."""
    from .runs import sweep as _sweep

    members = [as_run(n, profile) for n in _sweep(sweep_name, profile)]
    if len(members) not in (2, 3, 4):
        raise ValueError(f"sweep {sweep_name!r} must list S1, S2 and optionally F (S1's images, another seed) and F2 "
                         f"(S2's images, another seed); it lists {len(members)} runs")
    half1 = [members[0], *members[2:3]]
    half2 = [members[1], *members[3:4]]
    data = lambda r: (r.dataset, r.subset_seed, r.offset, r.n, r.resolution)  # noqa: E731
    for group, name in ((half1, "half 1"), (half2, "half 2")):
        if len({data(r) for r in group}) != 1:
            raise ValueError(f"the runs on {name} of {sweep_name!r} ({[r.name for r in group]}) must train on the same "
                             "images (dataset, n, offset, subset_seed, resolution)")
        if len(group) == 2 and group[0].seed == group[1].seed:
            raise ValueError(f"the floor runs {[r.name for r in group]} must differ in their seed")
        check_same_training(group, vary=("seed",))
    r1, r2 = half1[0], half2[0]
    same_order = (r1.dataset, r1.subset_seed) == (r2.dataset, r2.subset_seed)
    if not same_order or (r1.offset < r2.offset + r2.n and r2.offset < r1.offset + r1.n):
        raise ValueError(f"runs {r1.name!r} and {r2.name!r} must draw disjoint positions of one seeded order "
                         f"({r1.offset}..{r1.offset + r1.n - 1} and {r2.offset}..{r2.offset + r2.n - 1}); give the "
                         "second half offset = n of the first")
    for a, b in zip(half1, half2):
        if a.seed == b.seed:
            raise ValueError(f"runs {a.name!r} and {b.name!r} form a cross pair but share seed {a.seed} (initial "
                             "weights, batches, noise), which inflates their agreement; give them different seeds")
    return half1, half2
