"""Ranking metrics over a replay's hits."""

from __future__ import annotations

import dataclasses
import math

import pytest

from models.metrics import (
    Hit,
    by_rank_band,
    by_target_seen,
    cold_by_position,
    mean_interval,
    metrics,
    paired_lift,
)


def test_metrics_known_values() -> None:
    m = metrics([Hit(0, "x", 1), Hit(1, "x", 2), Hit(2, "y", 0), Hit(3, "y", 10),
                 Hit(4, "y", 11)], {"x": {"x:1", "x:2"}, "y": {"y:1"}}, {"x": 4, "y": 10})
    assert m["x"] == {"n": 2, "hr@10": 1.0, "ndcg@10": pytest.approx((1 + 1 / math.log2(3)) / 2),
                      "mrr": 0.75, "coverage": 0.5}
    assert m["y"]["hr@10"] == pytest.approx(1 / 3)
    assert m["y"]["mrr"] == pytest.approx((1 / 10 + 1 / 11) / 3)
    assert m["all"]["n"] == 5 and m["all"]["coverage"] == pytest.approx(3 / 14)


def test_targets_are_bucketed_by_how_often_their_item_was_seen() -> None:
    hits = [Hit(0, "x", 1, seen=0), Hit(1, "x", 0, seen=2), Hit(2, "x", 2, seen=2),
            Hit(3, "x", 0, seen=50)]
    buckets = by_target_seen(hits)
    assert buckets["0"]["n"] == 1 and buckets["0"]["hr@10"] == 1.0
    assert buckets["1-2"]["n"] == 2 and buckets["1-2"]["returned"] == 0.5
    assert buckets["30+"]["hr@10"] == 0.0


def test_rank_bands_split_at_10_and_50_and_sum_to_one() -> None:
    ranks = [1, 10, 11, 50, 51, 400, 0, 0]
    bands = by_rank_band([Hit(i, "x", r) for i, r in enumerate(ranks)])
    assert bands == {"1-10": 0.25, "11-50": 0.25, "51+": 0.25, "not returned": 0.25}
    assert by_rank_band([Hit(0, "x", 3)])["1-10"] == 1.0
    # a reranker over the top 100: its band reaches 100
    wider = by_rank_band([Hit(i, "x", r) for i, r in enumerate(ranks)], reordered=100)
    assert wider == {"1-10": 0.25, "11-100": 0.375, "101+": 0.125, "not returned": 0.25}


def test_cold_start_by_place_pairs_the_same_targets_of_both_runs() -> None:
    on = [Hit(i, "b", 1 if i % 2 else 0, True, i % 3, i % 3 + 1) for i in range(30)]
    off = [Hit(i, "b", 0, True, i % 3, i % 3 + 1) for i in range(30)]
    places = cold_by_position(on, off)
    assert [(p["position"], p["n"], p["elsewhere_mean"]) for p in places] == [
        (1, 10, 1.0), (2, 10, 2.0), (3, 10, 3.0)
    ]
    assert all(p["hr@10_without"] == 0.0 and p["lift"] is None for p in places)
    # without the other platform, only the first place's targets hit: each place is paired
    # with its own targets of the other run, not with all of them
    off = [Hit(i, "b", 1 if i % 3 == 0 else 0, True, i % 3, i % 3 + 1) for i in range(30)]
    places = cold_by_position(on, off)
    assert [p["hr@10_without"] for p in places] == [1.0, 0.0, 0.0]
    assert [p["hr@10_with_history"] for p in places] == [0.5, 0.5, 0.5]


def test_paired_lift_is_zero_for_the_same_hits() -> None:
    hits = [Hit(i, "x", (i % 12) + 1) for i in range(100)]
    lift = paired_lift(hits, hits)
    assert lift["lift"] == 0.0 and lift["low"] == lift["high"] == 0.0
    assert lift["n"] == 100


def test_intervals_resample_people_when_the_targets_name_them() -> None:
    # 40 people of 25 targets each; a person's targets all hit or all miss: 40 draws, not 1,000
    hits = [Hit(i, "x", 1 if (i // 25) % 4 == 0 else 0, person=f"p{i // 25}") for i in range(1000)]
    anonymous = [dataclasses.replace(h, person="") for h in hits]
    low, high = mean_interval(hits, "hr@10")
    low_t, high_t = mean_interval(anonymous, "hr@10")
    assert low < low_t < 0.25 < high_t < high
    assert high - low > 2.5 * (high_t - low_t)  # ~sqrt(25) wider in theory
    better = [dataclasses.replace(h, rank=1 if (h.index // 25) % 2 == 0 else 0) for h in hits]
    by_person = paired_lift(better, hits, "hr@10")
    by_target = paired_lift([dataclasses.replace(h, person="") for h in better], anonymous, "hr@10")
    assert by_person["lift"] == by_target["lift"] == 1.0
    widths = [(r["high"] or 0.0) - (r["low"] or 0.0) for r in (by_person, by_target)]
    assert widths[0] > 2 * widths[1] > 0
