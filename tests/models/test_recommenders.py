"""The baselines a replay compares the blend with (through the replay itself)."""

from __future__ import annotations

import math

import pytest

from models.evaluation import _Replayer, replay
from models.recommenders import (
    ConsumedCoVisitationBaseline,
    ContentBaseline,
    CoVisitationBaseline,
    CrossHistoryBaseline,
    ItemKNNBaseline,
    PopularityBaseline,
    PreferenceBaseline,
)
from models.session import SessionState

from .test_evaluation import catalog_for, crafted, two_platform_world


def test_popularity_baseline_has_the_known_hit_rate() -> None:
    ds = crafted()
    run = replay(ds, PopularityBaseline(catalog_for(ds)), catalog_for(ds), progress=False)
    # p1 and p6 are misses (nothing / not B yet popular); p2-p5 rank A 1st; p7-p10 rank B 2nd
    assert [h.rank for h in run.hits] == [0, 1, 1, 1, 1, 0, 2, 2, 2, 2]
    assert run.metrics["all"]["hr@10"] == pytest.approx(0.8)
    assert run.metrics["all"]["ndcg@10"] == pytest.approx((4 + 4 / math.log2(3)) / 10)
    assert run.metrics["all"]["mrr"] == pytest.approx(0.6)
    assert run.metrics["shop"]["coverage"] == pytest.approx(2 / 22)


def test_cross_history_knows_a_newcomer_only_through_their_other_platforms() -> None:
    ds = two_platform_world()  # everyone's theme on video carries over to shop
    cat = catalog_for(ds)
    run = replay(ds, CrossHistoryBaseline(cat), cat, progress=False)
    popularity = replay(ds, PopularityBaseline(cat), cat, progress=False)
    first = run.summary()["cold_start"]["first_here"]
    assert first["n"] == 24
    assert first["hr@10"] > 2 * popularity.summary()["cold_start"]["first_here"]["hr@10"]
    # a person with no other platform gets the platform's most popular items
    base = CrossHistoryBaseline(cat)
    for e in ds.events[:48]:
        base.learn(e.user, e, SessionState(person=e.user))
    bought = {"platform": "shop", "item": "jazz-0", "user": "p1"}
    shop_event = ds.events[0].model_copy(update=bought)
    base.learn("p1", shop_event, SessionState(person="p1"))
    alone = _Replayer(cat, True).request("stranger", "shop", 1e4)
    assert base.rank([alone])[0][0] == "shop:jazz-0"


@pytest.mark.parametrize(
    "model",
    [
        CoVisitationBaseline,
        ConsumedCoVisitationBaseline,
        CrossHistoryBaseline,
        ItemKNNBaseline,
        PreferenceBaseline,
        ContentBaseline,
    ],
)
def test_baselines_rank_only_the_platform_and_never_consumed(model: type) -> None:
    ds = two_platform_world()
    cat = catalog_for(ds)
    base = model(cat)
    run = replay(ds, base, cat, progress=False)
    assert run.metrics["all"]["n"] == len(ds.events)
    state = _Replayer(cat, True)
    session = SessionState(person="p0")
    for e in ds.events:
        base.learn(e.user, e, session if e.user == "p0" else SessionState(person=e.user))
    state.sessions["p0"] = session
    request = state.request("p0", "shop", 1e4)
    ranked = base.rank([request])[0]
    assert ranked and all(k.startswith("shop:") for k in ranked)
    bought_here = {k for k in session.consumed if k.startswith("shop:")}
    assert bought_here and not set(ranked) & bought_here
