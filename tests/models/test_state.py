"""Sessions, signals, blend and the River preference model."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from models.blend import AdaptiveBlend
from models.bloom import BloomFilter
from models.catalog import Catalog
from models.errors import ConfigError, InvalidEventError
from models.events import Event, EventType
from models.pipeline import PipelineConfig, consumed_on, is_new_consumption
from models.session import MAX_CONSUMED, MAX_RECENT, Exclusion, LastRecommendation, SessionState
from models.signals import (
    CoVisitation,
    ItemKNN,
    PersonKNN,
    Popularity,
    Transitions,
)
from tests.models.test_topn import dense_top_n


def test_session_round_trip_and_bounds() -> None:
    s = SessionState(person="p")
    for i in range(MAX_RECENT + 5):
        s.observe(
            "shop",
            f"shop:{i}",
            np.ones(4, np.float32),
            ts=float(i),
            consumed=True,
            half_life_s=10.0,
        )
    assert len(s.recent["shop"]) == MAX_RECENT and s.recent["shop"][-1] == f"shop:{MAX_RECENT + 4}"
    back = SessionState.from_bytes(s.to_bytes())
    assert back == s and back.interest["shop"].dtype == np.float32


def test_session_round_trip_keeps_every_field() -> None:
    # ``==`` compares the encoding under test, so compare field by field, each set away from
    # its default (a field the encoding forgot would come back as the default)
    s = SessionState(person="P", consent=False, consent_ts=5.0)
    s.observe("shop", "shop:a", np.ones(3, np.float32), ts=4.0, consumed=True, half_life_s=9.0)
    s.remember_event("e1")
    s.last_rec["shop"] = LastRecommendation("r1", "shop", ["b", "c"], 4.5)
    s.aliases = ["shop:u"]
    s.consumed_earlier = BloomFilter().with_key("shop:old")
    s.events_on = {"shop": 7}
    back = SessionState.from_bytes(s.to_bytes())
    for f in dataclasses.fields(SessionState):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:  # the person: no default
            default = None
        mine, theirs = getattr(s, f.name), getattr(back, f.name)
        assert mine != default, f"set {f.name} in this test"
        if f.name == "interest":
            assert mine.keys() == theirs.keys()
            assert all(np.array_equal(mine[k], theirs[k]) for k in mine)
        else:
            assert theirs == mine, f.name


def test_a_state_stored_before_the_consumed_filter_existed_still_loads() -> None:
    d = SessionState(person="p", consumed=["shop:a"]).to_dict()
    del d["consumed_earlier"], d["events_on"]
    back = SessionState.from_dict(d)
    assert back.consumed == ["shop:a"] and back.consumed_earlier is None and back.events_on == {}


def test_a_state_stored_with_the_retired_event_count_still_loads() -> None:
    d = SessionState(person="p", events_on={"shop": 2}).to_dict()
    assert "events" not in d
    d["events"] = 2  # states stored before stop 36 carried this total beside events_on
    assert SessionState.from_dict(d) == SessionState(person="p", events_on={"shop": 2})


def test_items_consumed_before_the_last_max_consumed_are_still_excluded() -> None:
    s = SessionState(person="p")
    keys = [f"video:{i}" for i in range(MAX_CONSUMED + 30)]
    assert all(s.add_consumed(k) for k in keys)
    assert s.consumed == keys[30:] and len(s.consumed_earlier or ()) == 30
    assert not s.add_consumed("video:0")  # consumed long ago: not new
    assert s.consumed == keys[30:]
    exclusion = s.exclusion("video:now")
    assert isinstance(exclusion, Exclusion) and len(exclusion) == MAX_CONSUMED + 31
    assert all(k in exclusion for k in [*keys, "video:now"])
    assert "video:never" not in exclusion and not s.has_consumed("video:never")
    # a light user's exclusion stays a plain frozenset (quicker to ask)
    assert SessionState(person="q", consumed=["a"]).exclusion("b") == frozenset({"a", "b"})
    # nor is it learned again as a new consumption
    again = Event(
        event_id="e", ts=1.0, platform="video", user="p", item="0", type=EventType.PURCHASE
    )
    assert not is_new_consumption(s, again)
    assert SessionState.from_bytes(s.to_bytes()) == s


def test_merge_keeps_what_both_consumed_however_old() -> None:
    a, b = SessionState(person="P"), SessionState(person="shop:u")
    for i in range(MAX_CONSUMED + 5):
        a.add_consumed(f"video:{i}")
        b.add_consumed(f"shop:{i}")
    a.merge(b, half_life_s=1.0)
    assert len(a.consumed) == MAX_CONSUMED and a.consumed[-1] == f"video:{MAX_CONSUMED + 4}"
    assert all(a.has_consumed(f"{p}:{i}") for p in ("video", "shop") for i in range(505))
    assert not a.has_consumed("shop:never")


def test_interest_decays_with_event_time() -> None:
    s = SessionState(person="p")
    a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    s.observe("shop", "shop:a", a, ts=0.0, consumed=False, half_life_s=100.0)
    s.observe("shop", "shop:b", b, ts=100.0, consumed=False, half_life_s=100.0)
    assert np.allclose(s.interest["shop"], [0.5, 1.0])


def test_a_late_event_weighs_what_it_would_have_by_now_and_is_not_the_newest() -> None:
    a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    in_order, late = SessionState(person="p"), SessionState(person="p")
    in_order.observe("shop", "shop:a", a, ts=0.0, consumed=False, half_life_s=100.0)
    in_order.observe("shop", "shop:b", b, ts=300.0, consumed=False, half_life_s=100.0)
    late.observe("shop", "shop:b", b, ts=300.0, consumed=False, half_life_s=100.0)
    late.observe("shop", "shop:a", a, ts=0.0, consumed=False, half_life_s=100.0)
    assert np.allclose(late.interest["shop"], [0.125, 1.0])
    assert np.allclose(late.interest["shop"], in_order.interest["shop"])
    assert late.interest_ts["shop"] == 300.0
    assert late.recent["shop"] == ["shop:a", "shop:b"]  # b stays the newest
    late.observe("shop", "shop:b", b, ts=200.0, consumed=False, half_life_s=100.0)
    assert late.recent["shop"] == ["shop:a", "shop:b"]


def test_merge_decays_the_older_interest_to_the_newer_ones_time() -> None:
    a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    person, alias = SessionState(person="P"), SessionState(person="shop:u")
    alias.observe("shop", "shop:a", a, ts=0.0, consumed=False, half_life_s=100.0)
    person.observe("shop", "shop:b", b, ts=1_000.0, consumed=False, half_life_s=100.0)
    person.merge(alias, half_life_s=100.0)
    assert np.allclose(person.interest["shop"], [2.0**-10, 1.0])
    assert person.interest_ts["shop"] == 1_000.0
    # and the other way round: the person's own interest is the older one
    alias.merge(SessionState(person="Q", interest={"shop": b}, interest_ts={"shop": 100.0}),
                half_life_s=100.0)
    assert np.allclose(alias.interest["shop"], [0.5, 1.0]) and alias.interest_ts["shop"] == 100.0


def test_merge_combines_histories() -> None:
    a, b = SessionState(person="P"), SessionState(person="shop:u")
    b.observe("shop", "shop:x", np.ones(2, np.float32), ts=1.0, consumed=True, half_life_s=1.0)
    a.merge(b, half_life_s=1.0)
    assert a.recent["shop"] == ["shop:x"] and a.consumed == ["shop:x"] and a.aliases == ["shop:u"]


def test_popularity_ranks_per_platform_and_decays() -> None:
    pop = Popularity(half_life_s=10.0)
    for key, platform in [("shop:a", "shop"), ("shop:a", "shop"), ("video:b", "video")]:
        pop.learn_one(key, platform, ts=0.0)
    pop.learn_one("shop:c", "shop", ts=100.0)  # one recent event beats two old ones
    assert pop.top("shop", 2, ts=100.0) == ["shop:c", "shop:a"]
    assert pop.top("video", 5, ts=100.0) == ["video:b"]
    assert pop.normalised_many(["shop:c"], "shop")[0] == 1.0


def test_popularity_asked_far_before_its_origin_grows_its_counts_back() -> None:
    pop = Popularity(half_life_s=3600.0)
    pop.learn_one("shop:a", "shop", ts=3600.0 * 1200)  # the origin: 1,200 half-lives in
    assert pop.predict_one("shop:a", ts=3600.0 * 1199) == 2.0
    assert pop.predict_one("shop:a", ts=0.0) == math.inf  # (was a ZeroDivisionError)
    assert pop.predict_one("shop:none", ts=0.0) == 0.0


def test_popularity_top_list_kept_up_to_date_equals_recomputing_it() -> None:
    rng = random.Random(3)
    pop = Popularity(half_life_s=50.0)
    keys = [f"shop:{i}" for i in range(300)]
    for step in range(3000):
        # integer counts at one time make many ties; later steps grow the scale
        ts = 0.0 if step < 1500 else float(step - 1500)
        pop.learn_one(rng.choice(keys[: 20 + step // 10]), "shop", ts=ts)
        if step % 7 == 0:
            n = rng.choice([5, 40, 120])
            kept = pop.top("shop", n, ts=ts)
            ranked = sorted(pop._keys_of["shop"], key=pop._scaled.__getitem__, reverse=True)
            assert kept == ranked[:n]


def test_covisitation_links_across_platforms_and_prunes() -> None:
    cv = CoVisitation(window=2, capacity=4)
    cv.learn_one(["shop:a", "video:x"])
    cv.learn_one(["shop:a", "video:x"])
    cv.learn_one(["shop:a", "video:y"])
    cv.learn_one(["shop:b", "shop:c", "video:z"])  # shop:b is 2 steps from video:z
    scores = cv.candidates(["shop:a"], "video", n=5)
    assert scores == {"video:x": 1.0, "video:y": 0.5}
    assert cv.candidates(["shop:b"], "video", n=5) == {"video:z": 1.0}
    assert cv.candidates(["shop:a"], "shop", n=5) == {}
    for i in range(10):
        cv.learn_one(["shop:hub", f"video:{i}"])
    assert cv.rows.row_size("shop:hub") <= 8  # pruned to the 4 heaviest past 2 x 4
    assert "video:9" in cv.candidates(["shop:hub"], "video", n=10)


def _replay_histories(knn: ItemKNN, histories: list[list[str]]) -> None:
    for history in histories:
        for i in range(1, len(history) + 1):
            knn.learn_one(history[:i])


def test_item_knn_is_the_cosine_of_co_occurrence_counts() -> None:
    knn = ItemKNN(window=10, history=1)
    _replay_histories(knn, [["m:a", "m:b"], ["m:a", "m:b", "m:c"], ["m:c", "m:d"], ["m:e"]])
    # n(a)=2, n(b)=2, n(c)=2, n(d)=1; c(a,b)=2, c(a,c)=1, c(b,c)=1, c(c,d)=1
    scores = knn.candidates(["m:c"], "m", n=10)
    expected = {"m:a": 1 / 2, "m:b": 1 / 2, "m:d": 1 / np.sqrt(2)}
    best = max(expected.values())
    assert scores.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(scores[key] - value / best) < 1e-6
    assert next(iter(scores)) == "m:d"  # best first
    assert knn.candidates(["m:e"], "m", n=10) == {}  # never co-occurred with anything
    assert knn.candidates(["m:unknown"], "m", n=10) == {}
    assert list(knn.candidates(["m:c"], "m", n=1)) == ["m:d"]


def test_item_knn_weighs_recent_items_more_and_keeps_to_the_platform() -> None:
    knn = ItemKNN(window=10, history=2, decay=0.5)
    _replay_histories(knn, [["m:old", "m:x"], ["m:new", "m:y"], ["m:new", "s:z"]])
    scores = knn.candidates(["m:old", "m:new"], "m", n=10)  # newest last
    assert list(scores) == ["m:y", "m:x"]
    assert knn.candidates(["m:new"], "s", n=10) == {"s:z": 1.0}
    assert "s:z" not in scores


def test_item_knn_rows_are_bounded_and_keep_heavy_neighbours() -> None:
    knn = ItemKNN(window=1, capacity=4)
    for _ in range(5):
        knn.learn_one(["m:hub", "m:friend"])
    for i in range(50):  # a stream of one-off neighbours churns through the other slots
        knn.learn_one(["m:hub", f"m:{i}"])
    assert knn.rows.row_size("m:hub") <= 8
    assert next(iter(knn.candidates(["m:hub"], "m", n=10))) == "m:friend"


def test_neighbour_rows_top_equals_the_sums_written_out() -> None:
    """The vectorised scoring against a plain-dict recomputation, on random histories."""
    rng = np.random.default_rng(3)
    knn, cv = ItemKNN(window=6, history=4, decay=0.7), CoVisitation(window=3)
    pairs: dict[tuple[str, str], float] = {}
    visits: dict[tuple[str, str], float] = {}  # co-visitation: 1/distance within 3 steps
    newest_count: dict[str, float] = {}
    histories: dict[int, list[str]] = {}
    for _ in range(3000):
        h = histories.setdefault(int(rng.integers(40)), [])
        h.append(f"{rng.choice(['m', 's'])}:{int(rng.zipf(1.6)) % 60}")
        knn.learn_one(h)
        cv.learn_one(h)
        newest_count[h[-1]] = newest_count.get(h[-1], 0.0) + 1.0
        for other in h[-7:-1]:
            if other != h[-1]:
                for a, b in ((h[-1], other), (other, h[-1])):
                    pairs[a, b] = pairs.get((a, b), 0.0) + 1.0
        for distance, other in enumerate(reversed(h[-4:-1]), start=1):
            if other != h[-1]:
                for a, b in ((h[-1], other), (other, h[-1])):
                    visits[a, b] = visits.get((a, b), 0.0) + 1.0 / distance
    assert max(knn.rows.row_size(k) for k in newest_count) < 2 * 256  # never pruned here
    compared = 0
    for h in list(histories.values())[:20]:
        recent = list(reversed(h[-4:]))
        expected: dict[str, float] = {}
        for age, item in enumerate(recent):
            for (a, b), c in pairs.items():
                if a == item and b.startswith("m:"):
                    n_ab = max(newest_count.get(a, 0.0) * newest_count.get(b, 0.0), 1.0)
                    expected[b] = expected.get(b, 0.0) + 0.7**age * c / np.sqrt(n_ab)
        got = knn.candidates(h, "m", n=1000)
        best = max(expected.values())
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert abs(got[key] - value / best) < 1e-6  # counts are float32
        # co-visitation of the newest item alone: its row, the best scaled to 1
        row = cv.candidates(h[-1:], "s", n=1000)
        mine = {b: w for (a, b), w in visits.items() if a == h[-1] and b.startswith("s:")}
        assert row.keys() == mine.keys()
        for key, value in mine.items():
            assert abs(row[key] - value / max(mine.values())) < 1e-6
        compared += len(mine)
    assert compared > 20


def test_many_queries_at_once_equal_each_query_alone() -> None:
    rng = np.random.default_rng(4)
    knn, cv = ItemKNN(window=6, history=4), CoVisitation(window=3)
    histories: list[list[str]] = [[] for _ in range(30)]
    for _ in range(2000):
        h = histories[int(rng.integers(30))]
        h.append(f"{rng.choice(['m', 's'])}:{int(rng.zipf(1.5)) % 80}")
        knn.learn_one(h)
        cv.learn_one(h)
    asked = [*histories, [], ["m:never-seen"]]
    for signal in (knn, cv):
        together = signal.candidate_ids_many(asked, "m", 25)
        for h, found in zip(asked, together, strict=True):
            alone = signal.candidate_ids_many([h], "m", 25)[0]
            assert np.array_equal(found.ids, alone.ids)
            assert np.array_equal(found.scores, alone.scores)  # the very same floats
            assert found.strength == alone.strength
    assert sum(len(found.ids) > 0 for found in together) >= 25


def test_strength_is_the_best_items_age_weighted_mean_share() -> None:
    tr = Transitions()
    for nxt in ("m:b", "m:b", "m:c", "m:d"):  # after a: b 2 of 4, c and d 1 of 4
        tr.learn_one(["m:a", nxt])
    for i in range(20):  # after x: 20 different items, 1 of 20 each
        tr.learn_one(["m:x", f"m:y{i}"])
    sharp, diffuse = tr.candidate_ids(["m:a"], "m", 5), tr.candidate_ids(["m:x"], "m", 5)
    assert sharp.scores[0] == diffuse.scores[0] == 1.0  # scaled, both look alike
    assert sharp.strength == 0.5 and diffuse.strength == 1 / 20  # unscaled, they do not
    assert np.allclose(sharp.scores * sharp.strength, [0.5, 0.25, 0.25])  # the shares
    cv = CoVisitation(window=2)
    cv.learn_one(["m:a", "m:b"])
    cv.learn_one(["m:c", "m:d"])
    # last items c (age weight 1) and a (1/2): d is all of c's row, b all of a's row
    found = cv.candidate_ids(["m:a", "m:c"], "m", 5)
    assert found.strength == 1.0 / (1.0 + 0.5)
    assert cv.rows.keys[found.ids[0]] == "m:d"


def test_an_unknown_recent_item_still_ages_the_ones_before_it() -> None:
    # m:new has no row (nobody else engaged with it): it still stands between m:c, the
    # person's newest, and m:a, which is two steps older
    cv, knn = CoVisitation(window=3), ItemKNN(window=3, history=3, decay=0.5)
    for history in (["m:a", "m:b"], ["m:c", "m:d"]):
        cv.learn_one(history)
        for i in range(1, len(history) + 1):
            knn.learn_one(history[:i])
    recent = ["m:a", "m:new", "m:c"]
    assert cv.candidates(recent, "m", 5) == pytest.approx({"m:d": 1.0, "m:b": 1 / 3})
    assert knn.candidates(recent, "m", 5) == pytest.approx({"m:d": 1.0, "m:b": 0.25})

def test_pruned_rows_keep_counting_the_neighbours_they_kept() -> None:
    cv = CoVisitation(window=1, capacity=2)
    for _ in range(3):
        cv.learn_one(["m:hub", "m:a"])
    for i in range(4):  # pushes the row past 2 x 2: pruned to m:a and one newcomer
        cv.learn_one(["m:hub", f"m:{i}"])
    cv.learn_one(["m:hub", "m:a"])  # lands on m:a's slot after the prune
    scores = cv.candidates(["m:hub"], "m", n=10)
    assert cv.rows.row_size("m:hub") <= 4
    assert next(iter(scores)) == "m:a"
    assert all(v < 0.5 for k, v in scores.items() if k != "m:a")  # 4 of ~6 is m:a's


def test_transitions_are_directed_one_step_and_bounded() -> None:
    tr = Transitions(capacity=3)
    histories = (["m:a", "m:b"], ["m:a", "m:b"], ["m:a", "m:c"], ["m:c", "m:a"], ["m:a", "m:a"])
    for history in histories:
        tr.learn_one(history)
    # b followed a twice, c once; a never followed b (directed), a -> a is no transition
    assert tr.candidates(["m:a"], "m", 5) == {"m:b": 1.0, "m:c": 0.5}
    assert tr.candidates(["m:b"], "m", 5) == {}
    # only the newest item of the history counts
    assert tr.candidates(["m:a", "m:c"], "m", 5) == {"m:a": 1.0}
    for i in range(10):  # a row past 2 x capacity keeps its heaviest `capacity` successors
        tr.learn_one(["m:a", f"m:x{i}"])
    assert len(tr.candidates(["m:a"], "m", 50)) <= 2 * 3
    assert "m:b" in tr.candidates(["m:a"], "m", 50)


def test_consumed_on_is_the_platforms_last_consumed_oldest_first() -> None:
    s = SessionState(person="p")
    s.consumed = ["shop:a", "video:x", "shop:b", "shop:c", "video:y"]
    assert consumed_on(s, "shop", 2) == ["shop:b", "shop:c"]
    assert consumed_on(s, "shop", 10) == ["shop:a", "shop:b", "shop:c"]
    assert consumed_on(s, "music", 3) == []


def test_blend_contributions_sum_to_score() -> None:
    b = AdaptiveBlend()
    x = {"content": 0.5, "popularity": 0.2}
    for _ in range(20):  # away from the prior: served weights, raw iterate and bias all differ
        b.learn_one(x, True)
        b.learn_one({"content": 0.1, "popularity": 0.9}, False)
    contrib = b.contributions(x)
    assert contrib == {
        "content": 0.5 * b.weights["content"],
        "popularity": 0.2 * b.weights["popularity"],
    }
    assert b.raw != b.weights and b.bias != 0.0
    assert b.predict_one(x) == pytest.approx(1 / (1 + math.exp(-b.bias - sum(contrib.values()))))


def test_catalog_grows_and_filters_unavailable() -> None:
    c = Catalog(dim=3)
    for i in range(2000):  # past the initial capacity
        c.upsert(
            f"shop:{i}",
            "shop",
            np.array([1.0, i / 2000, 0.0]),
            available=i % 2 == 0,
            added_ts=float(i),
        )
    rows, _ = c.neighbours(np.array([[0.0, 1.0, 0.0]], np.float32), "shop", n=3)
    assert [c.keys[r] for r in rows[0]] == ["shop:1998", "shop:1996", "shop:1994"]
    assert len(c) == 2000 and c.keys[c.newest("shop", 1)[0]] == "shop:1998"


def test_catalog_search_is_numpys_exact_top_n_on_the_platform() -> None:
    rng = np.random.default_rng(3)
    c = Catalog(dim=16)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    for i, v in enumerate(vectors):
        c.upsert(f"{('shop', 'video')[i % 2]}:{i}", ("shop", "video")[i % 2], v,
                 available=i % 7 != 0, added_ts=0.0)
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    shop = np.array([i for i in range(300) if i % 2 == 0 and i % 7 != 0])
    for n in (1, 10, len(shop), len(shop) + 5):  # more than there are: all of them
        rows, sims = c.neighbours(queries, "shop", n)
        want = queries @ vectors[shop].T
        assert rows.shape == sims.shape == (5, min(n, len(shop)))
        for q in range(5):
            order = np.argsort(-want[q], kind="stable")[: min(n, len(shop))]
            assert rows[q].tolist() == shop[order].tolist()
            np.testing.assert_allclose(sims[q], want[q][order], atol=1e-5)
    rows, sims = c.neighbours(queries[:0], "shop", 3)
    assert rows.shape == (0, 0) and c.neighbours(queries, "news", 3)[0].shape == (5, 0)


def test_catalog_search_follows_a_live_catalog() -> None:
    """Items join, change vector, are withdrawn and come back between queries (the search
    matrix is updated in place): every answer is the exact one over the catalog as it is."""
    rng = np.random.default_rng(5)
    c = Catalog(dim=8)
    truth: dict[str, tuple[str, np.ndarray, bool, float]] = {}
    for step in range(400):
        key = f"k{rng.integers(150)}"
        platform = truth[key][0] if key in truth else ("shop", "video")[step % 2]
        vector = rng.standard_normal(8).astype(np.float32)
        available, added = bool(rng.random() < 0.7), float(rng.integers(50))
        c.upsert(key, platform, vector, available=available, added_ts=added)
        truth[key] = (platform, vector, available, added)
        if step % 10:
            continue
        query = rng.standard_normal((2, 8)).astype(np.float32)
        for p in ("shop", "video"):
            rows = [c.index[k] for k in c.keys if truth[k][0] == p]
            assert c.rows(p).tolist() == rows
            live = np.array([r for r in rows if truth[c.keys[r]][2]], dtype=np.int64)
            assert c.searchable(p).tolist() == live.tolist()
            added_ts = np.array([truth[c.keys[r]][3] for r in live])
            order = np.argsort(-added_ts, kind="stable")[:5]
            assert c.newest(p, 5).tolist() == live[order].tolist()
            found, sims = c.neighbours(query, p, 10)
            if len(live) == 0:
                assert found.shape == (2, 0)
                continue
            want = query @ np.stack([truth[c.keys[r]][1] for r in live]).T
            for q in range(2):
                best = np.argsort(-want[q], kind="stable")[:10]
                assert found[q].tolist() == live[best].tolist()
                np.testing.assert_allclose(sims[q], want[q][best], atol=1e-5)
    assert c.key_array.tolist() == c.keys


def test_pairwise_blend_moves_weight_to_the_signal_that_ordered_correctly() -> None:
    b = AdaptiveBlend(prior=(("a", 1.0), ("b", 1.0)), learning_rate=0.5)
    bias = b.bias
    for _ in range(50):
        b.learn_pair({"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0})
    assert b.weights["a"] > 1.0 > b.weights["b"] and b.bias == bias


def test_popularity_normalised_is_log_popularity_relative_to_the_platforms_top() -> None:
    pop = Popularity(half_life_s=10.0)
    for i, key in enumerate(["shop:a", "shop:a", "shop:b", "video:c"]):
        pop.learn_one(key, key.split(":")[0], ts=float(i))
    keys = ["shop:a", "shop:b", "shop:unknown"]
    many = pop.normalised_many(keys, "shop")
    share = pop.predict_one("shop:b", ts=3.0) / pop.predict_one("shop:a", ts=3.0)
    assert 0 < share < 1
    expected = [1.0, math.log1p(1000 * share) / math.log1p(1000), 0.0]
    assert np.allclose(many, expected, atol=1e-6)


def test_served_blend_weights_are_a_running_average_of_the_iterate() -> None:
    b = AdaptiveBlend(prior=(("a", 1.0), ("b", 1.0)), learning_rate=0.5, averaging=0.1)
    b.learn_pair({"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0})
    assert b.raw["a"] > 1.0 > b.raw["b"]
    assert b.weights["a"] - 1.0 == pytest.approx(0.1 * (b.raw["a"] - 1.0))
    assert b.weights["b"] - 1.0 == pytest.approx(0.1 * (b.raw["b"] - 1.0))
    plain = AdaptiveBlend(prior=(("a", 1.0), ("b", 1.0)), learning_rate=0.5, averaging=1.0)
    plain.learn_pair({"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0})
    assert plain.weights == plain.raw and plain.raw == b.raw


@pytest.mark.parametrize("averaging", [0.0, -0.1, 1.5, math.nan])
def test_a_blend_refuses_an_averaging_share_outside_zero_to_one(averaging: float) -> None:
    with pytest.raises(ConfigError, match="averaging"):
        AdaptiveBlend(averaging=averaging)


def test_time_decayed_pairs_fade_and_break_ties_by_recency() -> None:
    plain, decayed = Transitions(), Transitions(half_life_s=10.0)
    for tr in (plain, decayed):
        tr.learn_one(["m:a", "m:b"], ts=0.0)
        tr.learn_one(["m:a", "m:c"], ts=10.0)  # one half-life later: twice the weight
    assert plain.candidates(["m:a"], "m", 5) == {"m:b": 1.0, "m:c": 1.0}  # a tie, first seen
    assert decayed.candidates(["m:a"], "m", 5) == {"m:c": 1.0, "m:b": 0.5}
    assert decayed.candidate_ids(["m:a"], "m", 5).strength == pytest.approx(2 / 3)
    cv = CoVisitation(window=1, half_life_s=1.0)
    cv.learn_one(["m:a", "m:b"], ts=0.0)
    cv.learn_one(["m:a", "m:c"], ts=50.0)  # 2**50 > 1e12: the rows are rescaled, not overflowed
    assert cv._origin == 50.0
    scores = cv.candidates(["m:a"], "m", 5)
    assert list(scores) == ["m:c", "m:b"] and scores["m:b"] == pytest.approx(2.0**-50, rel=1e-9)


def test_person_knn_finds_people_alike_and_leaves_out_ones_own_votes() -> None:
    knn = PersonKNN(neighbours=2)
    histories = {
        "ann": ["s:a", "s:b", "v:x"],  # shares a and b with dee
        "bob": ["s:b", "v:y"],  # shares b, dee's newest
        "cy": ["s:a", "v:z"],  # shares a, older, and is third: not a neighbour
        "dee": ["s:a", "s:b", "v:own"],
    }
    for person, items in histories.items():
        for key in items:
            knn.learn_one(person, key)
    found = knn.candidate_ids_many([("dee", ["s:a", "s:b"])], "v", n=5)[0]
    assert [knn.keys[i] for i in found.ids] == ["v:x", "v:y"]  # not v:own, not cy's v:z
    assert found.scores[0] == 1.0 and found.scores[1] < 1.0
    assert knn.candidate_ids_many([("eve", ["s:unknown"])], "v", n=5)[0].ids.size == 0
    assert knn.candidate_ids_many([("eve", ["s:a"])], "nowhere", n=5)[0].ids.size == 0

def test_person_knn_leaves_out_every_name_a_person_files_items_under() -> None:
    # dee consented (filed as "dee"), then withheld consent (filed as "dee@s", one name per
    # platform): asked as dee, neither name is her neighbour, however alike they are
    knn = PersonKNN(neighbours=1)
    for person, owner, items in [
        ("dee", "dee", ["s:a", "s:b", "v:own"]),
        ("dee@s", "dee", ["s:a", "s:b"]),
        ("ann", "ann", ["s:a", "v:x"]),
    ]:
        for key in items:
            knn.learn_one(person, key, owner=owner)
    found = knn.candidate_ids_many([("dee", ["s:a", "s:b"])], "v", n=5)[0]
    assert [knn.keys[i] for i in found.ids] == ["v:x"]  # ann's, not dee's own v:own
    # eve never consented, so her id itself names nobody: her name on v is still hers
    knn = PersonKNN(neighbours=1)
    for person, owner, items in [
        ("eve@v", "eve", ["s:a", "v:own"]),  # closer to her query than ann
        ("ann", "ann", ["s:a", "s:b", "v:x"]),
    ]:
        for key in items:
            knn.learn_one(person, key, owner=owner)
    found = knn.candidate_ids_many([("eve", ["s:a"])], "v", n=5)[0]
    assert [knn.keys[i] for i in found.ids] == ["v:x"]



def test_a_row_decayed_to_nothing_neither_spoils_nor_hides_other_rows_items() -> None:
    cv = CoVisitation(window=3, half_life_s=3600.0)
    cv.learn_one(["m:a", "m:b"], ts=0.0)
    cv.learn_one(["m:c", "m:b"], ts=3600.0 * 1100)  # 1,100 half-lives on: a's row is all 0
    with np.errstate(invalid="raise"):
        assert cv.candidates(["m:c", "m:a"], "m", n=5) == cv.candidates(["m:c"], "m", n=5)
    assert cv.candidates(["m:c"], "m", n=5) == {"m:b": 1.0}


def test_which_tied_items_make_the_top_n_does_not_depend_on_the_batch() -> None:
    # integer counts tie often; which of the tied items make the top n must not depend on
    # which other queries share the batch
    knn = ItemKNN(window=200)
    history = ["m:q"] + [f"m:{i:03d}" for i in range(100)]  # q co-occurs once with each
    for i in range(1, len(history) + 1):
        knn.learn_one(history[:i])
    alone = knn.candidate_ids_many([["m:q"]], "m", n=5)[0]
    batched = knn.candidate_ids_many([["m:q"]] + [[]] * 40, "m", n=5)[0]
    assert alone.ids.tolist() == batched.ids.tolist()


def test_person_knn_links_a_person_and_an_item_once_however_often_they_engage() -> None:
    def found(repeats: int) -> tuple[list[str], list[float], float]:
        knn = PersonKNN()
        for person, items in {"ann": ["s:a", "v:x"], "bob": ["s:a", "s:b", "v:y"]}.items():
            for key in items:
                for _ in range(repeats if person == "ann" else 1):  # ann re-views hers
                    knn.learn_one(person, key)
        got = knn.candidate_ids_many([("dee", ["s:a", "s:b"])], "v", n=5)[0]
        return [knn.keys[i] for i in got.ids], got.scores.tolist(), got.strength

    once = found(1)
    assert once[0] == ["v:y", "v:x"] and found(5) == once
    assert 0.0 < once[2] <= 1.0  # the best item's share of the neighbours' similarity


def test_person_knn_is_bounded_and_chunking_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(5)
    knn = PersonKNN(neighbours=5, per_person=4, per_item=3)
    for _ in range(2000):
        knn.learn_one(f"p{rng.randrange(60)}", f"{rng.choice('st')}:{rng.randrange(40)}")
    assert all(len(row) <= 6 for row in knn._people_of)  # trimmed to 3 past 2 x 3
    queries = [(f"p{i}", [f"s:{rng.randrange(40)}" for _ in range(6)]) for i in range(30)]
    whole = knn.candidate_ids_many(queries, "t", n=10)
    monkeypatch.setattr(PersonKNN, "cells_per_pass", 7 * 60)  # chunks of 7 queries
    parts = knn.candidate_ids_many(queries, "t", n=10)
    for a, b in zip(whole, parts, strict=True):
        assert a.ids.tolist() == b.ids.tolist() and np.array_equal(a.scores, b.scores)


@pytest.mark.parametrize("signal", ["item-knn", "covisit", "person-knn"])
def test_the_compiled_top_n_finds_what_the_dense_matrix_does(
    signal: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signals' top n per query from the compiled pass (models.topn), against the dense
    (queries x items) matrix computed by numpy: the same items, floats and strengths."""
    import models.signals as signals

    rng = np.random.default_rng(8)
    knn, cv, people = ItemKNN(window=6, history=4), CoVisitation(window=3), PersonKNN(5)
    histories: list[list[str]] = [[] for _ in range(40)]
    for _ in range(3000):
        who = int(rng.integers(40))
        h = histories[who]
        h.append(f"{rng.choice(['m', 's'])}:{int(rng.zipf(1.3)) % 300}")
        knn.learn_one(h)
        cv.learn_one(h)
        people.learn_one(f"p{who}", h[-1])

    def ask() -> list[signals.Neighbours]:
        if signal == "person-knn":
            return people.candidate_ids_many(
                [(f"p{i}", h) for i, h in enumerate(histories)], "m", 20
            )
        return {"item-knn": knn, "covisit": cv}[signal].candidate_ids_many(histories, "m", 20)

    compiled = ask()
    monkeypatch.setattr(signals, "top_n_per_row", dense_top_n)
    dense = ask()
    assert sum(len(found.ids) > 0 for found in compiled) >= 30
    assert any(len(np.unique(f.scores)) < len(f.scores) for f in compiled)  # ties were there
    for d, c in zip(dense, compiled, strict=True):
        assert d.ids.tolist() == c.ids.tolist() and d.scores.tolist() == c.scores.tolist()
        assert d.strength == c.strength


def test_blend_learns_the_same_floats_whatever_the_string_hash_seed() -> None:
    """Each process hashes strings with its own seed; a set of signal names iterated in
    pair learning once made the weights differ in the last bits from run to run (and between
    the worker processes of ``streamrec evaluate --jobs``)."""
    probe = (
        "import random\n"
        "from models.blend import SIGNALS, AdaptiveBlend\n"
        "rng, blend = random.Random(1), AdaptiveBlend()\n"
        "for _ in range(300):\n"
        "    blend.learn_pair({k: rng.random() for k in SIGNALS},\n"
        "                     {k: rng.random() for k in SIGNALS})\n"
        "print(repr(sorted(blend.weights.items())))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in range(4)
    }
    assert len(outputs) == 1


def test_a_jump_of_over_a_thousand_half_lives_decays_everything_instead_of_overflowing() -> None:
    """A 400-day gap with a 6-hour half-life (or millisecond timestamps after a 0) raised
    OverflowError in ``2.0 ** exponent``."""
    day = 86_400.0
    pop = Popularity(half_life_s=6 * 3600.0)
    pop.learn_one("s:a", "s", 0.0)
    pop.learn_one("s:b", "s", 400 * day)
    assert pop.predict_one("s:a", 400 * day) == 0.0 and pop.predict_one("s:b", 400 * day) == 1.0
    assert pop.top("s", 2, 400 * day) == ["s:b", "s:a"]
    cv = CoVisitation(window=3, half_life_s=6 * 3600.0)
    cv.learn_one(["s:a", "s:b"], 0.0)
    cv.learn_one(["s:a", "s:c"], 400 * day)
    assert cv.candidates(["s:a"], "s", 5) == {"s:c": 1.0}


@pytest.mark.parametrize(
    "pair",
    [
        "popularity_half_life_s=0",
        "fresh_half_life_s=nan",
        "covisit_half_life_s=inf",
        "rerank_top=-5",
        "rerank_top=0",  # it zeroed every published score; rerank_every=none turns it off
        "top_k=0",
        "rerank_every=0",
    ],
)
def test_settings_out_of_range_are_refused(pair: str) -> None:
    with pytest.raises(ConfigError, match="expected a finite number"):
        PipelineConfig().with_overrides([pair])
    assert PipelineConfig().with_overrides(["seed=0", "rerank_every=none", "cross_prior=0"])
    # "> 0" means any positive number, the smallest subnormal included
    assert PipelineConfig().with_overrides(["fresh_half_life_s=5e-324"]).fresh_half_life_s > 0


def test_catalog_refuses_a_vector_that_is_not_finite() -> None:
    catalog = Catalog(dim=2)
    for bad in ([np.nan, 0.0], [np.inf, 1.0]):
        with pytest.raises(InvalidEventError, match="not finite"):
            catalog.upsert("s:a", "s", np.array(bad, np.float32), available=True, added_ts=0.0)
    assert catalog.keys == []
