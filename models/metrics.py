"""Ranking metrics over the targets of a replay: each target is a :class:`Hit` (the rank the
model gave the item the person engaged with), and HR@10, NDCG@10, MRR, coverage, the cold-start
and long-tail breakdowns and bootstrap intervals are computed from hits alone.

Examples
--------
>>> hits = [Hit(0, "shop", 1), Hit(1, "shop", 4), Hit(2, "shop", 0)]
>>> round(hit_rate(hits), 3), round(ndcg(hits), 3), returned_share(hits)
(0.667, 0.477, 0.6666666666666666)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

K = 10  # the cut-off of HR@K and NDCG@K


@dataclass
class Hit:
    index: int  # position of the event in the stream (-1: held out)
    platform: str
    rank: int  # 1-based; 0 = not among the returned items
    cold: bool = False
    earlier_here: int = 0  # the person's positives on this platform before this one
    elsewhere: int = 0  # ...and on other platforms
    seen: int = -1  # the target item's positives in the stream before it (-1: not counted)
    person: str = ""  # whose target it is: the unit the bootstrap resamples ("": the target)


def gain(hit: Hit, metric: str) -> float:
    """What one target adds to ``metric`` (``"hr@10"`` or ``"ndcg@10"``)."""
    if not 0 < hit.rank <= K:
        return 0.0
    return 1.0 / math.log2(hit.rank + 1) if metric == "ndcg@10" else 1.0


def hit_rate(hits: Sequence[Hit]) -> float:
    """HR@10: the share of targets ranked in the top 10."""
    return sum(gain(h, "hr@10") for h in hits) / len(hits) if hits else 0.0


def ndcg(hits: Sequence[Hit]) -> float:
    """NDCG@10 with one relevant item per target: the mean of ``1 / log2(rank + 1)``."""
    return sum(gain(h, "ndcg@10") for h in hits) / len(hits) if hits else 0.0


def cold_parts(cold: Sequence[Hit]) -> dict[str, list[Hit]]:
    """Cold-start targets split: the person's first positive on the platform, the rest."""
    return {
        "first_here": [h for h in cold if h.earlier_here == 0],
        "later_here": [h for h in cold if h.earlier_here > 0],
    }


def cold_by_position(with_history: Sequence[Hit], without: Sequence[Hit]) -> list[dict[str, Any]]:
    """Cold-start targets (the same ones, replayed with and without other platforms' history)
    by their place among the person's positives on the platform: how many there are, how much
    history elsewhere they had on average (what the first run could use), and HR@10 of both.

    Examples
    --------
    >>> on = [Hit(0, "b", 1, True, 0, 3), Hit(1, "b", 0, True, 1, 3), Hit(2, "b", 2, True, 0, 1)]
    >>> off = [Hit(0, "b", 0, True, 0, 3), Hit(1, "b", 0, True, 1, 3), Hit(2, "b", 5, True, 0, 1)]
    >>> [(p["position"], p["n"], p["elsewhere_mean"], p["hr@10_with_history"], p["hr@10_without"])
    ...  for p in cold_by_position(on, off)]
    [(1, 2, 2.0, 1.0, 0.5), (2, 1, 3.0, 0.0, 0.0)]
    """
    rows = []
    for place in sorted({h.earlier_here for h in with_history}):
        on = [h for h in with_history if h.earlier_here == place]
        off = [h for h in without if h.earlier_here == place]
        hr_on, hr_off = hit_rate(on), hit_rate(off)
        rows.append(
            {
                "position": place + 1,
                "n": len(on),
                "elsewhere_mean": sum(h.elsewhere for h in on) / len(on),
                "hr@10_with_history": hr_on,
                "hr@10_without": hr_off,
                "lift": hr_on / hr_off - 1.0 if hr_off > 0 else None,
            }
        )
    return rows


#: Targets grouped by how often their item was a positive in the stream before (the long tail
#: first): (label, least, most).
SEEN_BUCKETS = (("0", 0, 0), ("1-2", 1, 2), ("3-9", 3, 9), ("10-29", 10, 29), ("30+", 30, None))


def by_target_seen(hits: Sequence[Hit]) -> dict[str, dict[str, float]]:
    """Per :data:`SEEN_BUCKETS` bucket of the targets' :attr:`Hit.seen` (targets not counted
    are left out), in that order: how many, their share, and where there are any the share
    returned at all (for the blend: its candidate recall), HR@10 and NDCG@10. Where a model
    loses is often the long tail. Nothing counted: empty.

    >>> hits = [Hit(0, "a", 1, seen=0), Hit(1, "a", 0, seen=0), Hit(2, "a", 3, seen=40)]
    >>> b = by_target_seen(hits)
    >>> b["0"]["n"], b["0"]["returned"], b["0"]["hr@10"], b["30+"]["ndcg@10"], b["1-2"]
    (2, 0.5, 0.5, 0.5, {'n': 0, 'share': 0.0})
    >>> by_target_seen([Hit(0, "a", 1)])
    {}
    """
    counted = [h for h in hits if h.seen >= 0]
    out: dict[str, dict[str, float]] = {}
    if not counted:
        return out
    for label, least, most in SEEN_BUCKETS:
        hs = [h for h in counted if h.seen >= least and (most is None or h.seen <= most)]
        out[label] = {"n": len(hs), "share": len(hs) / len(counted)}
        if hs:
            out[label] |= {
                "returned": returned_share(hs),
                "hr@10": hit_rate(hs),
                "ndcg@10": ndcg(hs),
            }
    return out


def rank_bands(reordered: int = 50) -> tuple[tuple[str, int, int | None], ...]:
    """Where a target lands in its list (1-based ranks; the last band open): the top 10 counts
    in HR@10; the next ones up to ``reordered`` (the blend's ``rerank_top``) are what a
    second stage over the top ``reordered`` could still lift into it.

    >>> rank_bands(100)
    (('1-10', 1, 10), ('11-100', 11, 100), ('101+', 101, None))
    """
    edge = max(reordered, K)
    return ((f"1-{K}", 1, K), (f"{K + 1}-{edge}", K + 1, edge), (f"{edge + 1}+", edge + 1, None))


def by_rank_band(hits: Sequence[Hit], reordered: int = 50) -> dict[str, float]:
    """The share of targets in each of :func:`rank_bands` (``reordered``) and the share not
    returned at all, which sum to 1: whether a model loses its targets in ranking them or in
    never proposing them (for the blend: not among its candidates). No targets: empty.

    >>> by_rank_band([Hit(0, "a", 3), Hit(1, "a", 12), Hit(2, "a", 0), Hit(3, "a", 99)])
    {'1-10': 0.25, '11-50': 0.25, '51+': 0.25, 'not returned': 0.25}
    >>> by_rank_band([])
    {}
    """
    if not hits:
        return {}
    ranks = np.array([h.rank for h in hits])
    out: dict[str, float] = {}
    for label, least, most in rank_bands(reordered):
        inside = ranks >= least if most is None else (ranks >= least) & (ranks <= most)
        out[label] = float(inside.mean())
    out["not returned"] = float((ranks <= 0).mean())
    return out


def against_blend(blend: Sequence[Hit], other: Sequence[Hit]) -> dict[str, float] | None:
    """What another model's top 10 holds that the blend's does not, over the same targets in
    the same order: how many targets it ranks in its top 10, how many of those the blend never
    returns (not among its candidates) or ranks below its 10th, and NDCG@10 if each target took
    the better of the two ranks: a bound no fusion of the two reaches. None if the targets are
    not the same ones.

    >>> blend = [Hit(0, "a", 1), Hit(1, "a", 0), Hit(2, "a", 15), Hit(3, "a", 0)]
    >>> other = [Hit(0, "a", 4), Hit(1, "a", 2), Hit(2, "a", 1), Hit(3, "a", 30)]
    >>> r = against_blend(blend, other)
    >>> r["top10"], r["top10_not_returned_by_blend"], r["top10_blend_below_10"]
    (3, 1, 1)
    >>> round(r["blend_ndcg@10"], 3), round(r["best_of_two_ndcg@10"], 3)
    (0.25, 0.658)
    >>> against_blend(blend, other[:3]) is None
    True
    """
    same = len(blend) == len(other) and all(
        (b.index, b.platform, b.person) == (o.index, o.platform, o.person)
        for b, o in zip(blend, other, strict=True)
    )
    if not same or not blend:
        return None
    pairs = list(zip(blend, other, strict=True))
    theirs = [(b, o) for b, o in pairs if 0 < o.rank <= K]
    best = sum(max(gain(b, "ndcg@10"), gain(o, "ndcg@10")) for b, o in pairs)
    return {
        "n": len(blend),
        "top10": len(theirs),
        "top10_not_returned_by_blend": sum(1 for b, _ in theirs if b.rank <= 0),
        "top10_blend_below_10": sum(1 for b, _ in theirs if b.rank > K),
        "blend_ndcg@10": ndcg(blend),
        "best_of_two_ndcg@10": best / len(blend),
    }


def returned_share(hits: Sequence[Hit]) -> float:
    return sum(1 for h in hits if h.rank > 0) / len(hits) if hits else 0.0


def _gains(hits: Sequence[Hit], metric: str) -> dict[int, float]:
    return {h.index: gain(h, metric) for h in hits}


def _units(hits: Sequence[Hit]) -> np.ndarray:
    """Each target's resampling unit: its person's number when every target names one (a
    person's targets are not independent draws: resampling them one by one would give too
    narrow an interval), else its own position."""
    people = [h.person for h in hits]
    if people and all(people):
        return np.unique(np.array(people), return_inverse=True)[1]
    return np.arange(len(hits))


def _resampled_sums(
    units: np.ndarray, columns: Sequence[np.ndarray], resamples: int, seed: int
) -> list[np.ndarray]:
    """Each column's sum over ``resamples`` bootstrap draws of the units (with replacement,
    as many as there are), and the count of targets drawn: ``[sums..., counts]``."""
    per_unit = [np.bincount(units, c) for c in (*columns, np.ones(len(units)))]
    n = len(per_unit[0])
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in per_unit]
    for start in range(0, resamples, 100):  # chunks: [100, n] index matrices, not [1000, n]
        idx = rng.integers(0, n, (min(100, resamples - start), n))
        for sums, values in zip(out, per_unit, strict=True):
            sums.append(values[idx].sum(axis=1))
    return [np.concatenate(s) for s in out]


def paired_lift(
    a: Sequence[Hit],
    b: Sequence[Hit],
    metric: str = "ndcg@10",
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float | None]:
    """Lift of ``a`` over ``b`` (mean metric ratio - 1) on the targets both ranked, with a 95%
    paired bootstrap interval: both runs' targets are resampled together, by person when the
    hits name them (:func:`_units`), so the interval reflects how much the lift depends on
    which people, and so which targets, happened to be in the stream.

    >>> a = [Hit(i, "x", 1 if i % 2 else 0) for i in range(200)]
    >>> b = [Hit(i, "x", 1 if i % 4 == 1 else 0) for i in range(200)]
    >>> r = paired_lift(a, b, "hr@10")
    >>> r["lift"], r["low"] < 1.0 < r["high"]
    (1.0, True)
    """
    ga, gb = _gains(a, metric), _gains(b, metric)
    common = sorted(ga.keys() & gb.keys())
    x = np.array([ga[i] for i in common])
    y = np.array([gb[i] for i in common])
    if not len(common) or y.sum() <= 0:
        return {"n": len(common), "lift": None, "low": None, "high": None}
    by_index = {h.index: h for h in a}
    units = _units([by_index[i] for i in common])
    sx, sy, _ = _resampled_sums(units, [x, y], resamples, seed)
    lifts = np.where(sy > 0, sx / np.maximum(sy, 1e-12) - 1.0, np.nan)
    low, high = np.nanpercentile(lifts, [2.5, 97.5])
    return {
        "n": len(common),
        "lift": float(x.sum() / y.sum() - 1.0),
        "low": float(low),
        "high": float(high),
    }


def mean_interval(
    hits: Sequence[Hit], metric: str = "ndcg@10", resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% bootstrap interval of the mean ``metric`` over ``hits``: how far the figure could
    move with another draw of as many people (by target when the hits name no person; a few
    hundred held-out items move it a lot).

    >>> hits = [Hit(-1, "x", 1 if i % 10 == 0 else 0) for i in range(500)]  # HR@10 0.1
    >>> low, high = mean_interval(hits, "hr@10")
    >>> 0.07 < low < 0.1 < high < 0.13
    True
    """
    x = np.array([gain(h, metric) for h in hits])
    if not len(x):
        return (math.nan, math.nan)
    sums, counts = _resampled_sums(_units(hits), [x], resamples, seed)
    low, high = np.percentile(sums / counts, [2.5, 97.5])
    return (float(low), float(high))


def metrics(
    hits: Sequence[Hit],
    top10: dict[str, set[str]] | None = None,
    catalog_sizes: dict[str, int] | None = None,
) -> dict[str, dict[str, float]]:
    """HR@10, NDCG@10, MRR per platform and over all (``"all"``), plus catalog coverage.

    >>> m = metrics([Hit(0, "a", 1), Hit(1, "a", 3), Hit(2, "b", 0), Hit(3, "b", 11)])
    >>> m["all"]["hr@10"], round(m["a"]["ndcg@10"], 3), round(m["all"]["mrr"], 3)
    (0.5, 0.75, 0.356)
    """
    groups: dict[str, list[Hit]] = defaultdict(list)
    for h in hits:
        groups[h.platform].append(h)
        groups["all"].append(h)
    out: dict[str, dict[str, float]] = {}
    for name in sorted(groups, key=lambda g: (g == "all", g)):
        hs = groups[name]
        n = len(hs)
        mrr = sum(1.0 / h.rank for h in hs if h.rank > 0)
        row = {"n": float(n), "hr@10": hit_rate(hs), "ndcg@10": ndcg(hs), "mrr": mrr / n}
        if top10 is not None and catalog_sizes:
            if name == "all":
                seen = sum(len(v) for v in top10.values())
                row["coverage"] = seen / sum(catalog_sizes.values())
            else:
                row["coverage"] = len(top10.get(name, ())) / catalog_sizes.get(name, 1)
        out[name] = row
    for row in out.values():
        row["n"] = int(row["n"])
    return out
