"""The pure pipeline, with a hashing encoder: fast, deterministic, no export needed."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from models import pipeline as pipeline_module
from models.blend import SIGNALS
from models.errors import BatchFailedError, ConfigError, InvalidEventError
from models.events import CatalogItem, Event, EventType
from models.identity import route
from models.pipeline import (
    NEAREST_OF,
    Consent,
    Handoff,
    Merge,
    PersonEvent,
    PersonMessage,
    Pipeline,
    PipelineConfig,
    Ranking,
    RankRequest,
    consumed_on,
    preference_user,
    rec_id_for,
)
from models.session import SessionState

from ..fakes import HashingEncoder, RecordingSequence, TowerHead, fail_learning_for

THEMES = {
    "jazz": "saxophone bebop swing",
    "garden": "tomato compost soil",
    "run": "trail marathon shoes",
}


def make_pipeline(config: PipelineConfig | None = None) -> Pipeline:
    p = Pipeline(HashingEncoder(dim=64), ranker=None, config=config or PipelineConfig())
    items = [
        CatalogItem(
            item=f"{theme}-{i}",
            platform=platform,
            title=f"{words} {theme} {i}",
            tags=[theme],
            ts=float(i),
        )
        for platform in ("shop", "video")
        for theme, words in THEMES.items()
        for i in range(6)
    ]
    p.add_items(items)
    return p


def ev(
    n: int, platform: str, user: str, item: str | None = None, type_: str = "view", **kw: Any
) -> Event:
    return Event(
        event_id=f"e{n}",
        type=EventType(type_),
        platform=platform,
        user=user,
        ts=1000.0 + n,
        item=item,
        **kw,
    )


def run(
    p: Pipeline, events: list[Event], sessions: dict[str, SessionState], ids: dict[str, str]
) -> list:
    out = []
    for e in events:
        msgs = route(e, ids)
        result = p.handle(msgs, sessions, now=0.0)
        for f in result.forwards:
            p.handle([f], sessions, now=0.0)
        out += result.recommendations
    return out


def linked_world() -> tuple[Pipeline, dict[str, SessionState], dict[str, str]]:
    """A pipeline where user ``a`` of shop and of video is linked to person ``P``."""
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    ids: dict[str, str] = {}
    link = [
        ev(1, "shop", "a", type_="identify", person="P"),
        ev(2, "video", "a", type_="identify", person="P"),
    ]
    run(p, link, sessions, ids)
    return p, sessions, ids


def test_recommends_same_platform_available_unconsumed_items() -> None:
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    recs = run(
        p, [ev(1, "shop", "u", "jazz-0", "purchase"), ev(2, "shop", "u", "jazz-1")], sessions, {}
    )
    last = recs[-1]
    keys = [s.item for s in last.items]
    assert len(keys) == 10 and "jazz-0" not in keys and "jazz-1" not in keys
    assert all(s.platform == "shop" for s in last.items)
    assert sum(k.startswith("jazz") for k in keys[:4]) == 4  # content signal


def test_unavailable_items_are_never_recommended() -> None:
    p = make_pipeline()
    p.index_item(
        CatalogItem(item="jazz-2", platform="shop", title="x", available=False),
        p.catalog.vector("shop:jazz-2"),
    )
    recs = run(p, [ev(1, "shop", "u", "jazz-0")], {}, {})
    assert "jazz-2" not in [s.item for s in recs[0].items]


def test_history_crosses_platforms_only_for_linked_persons_with_consent() -> None:
    """Same global state, same video event: only a linked person's shop history changes it."""
    p, sessions, ids = linked_world()
    shop_history = [
        ev(10 + i, "shop", u, f"jazz-{i}", "purchase") for u in ("a", "b") for i in range(3)
    ]
    run(p, shop_history, sessions, ids)
    probe = {"platform": "video", "item": "garden-0"}

    def video_recs(user: str, pipeline: Pipeline, sess: dict[str, SessionState]) -> list[str]:
        rec = run(pipeline, [ev(99, user=user, **probe)], sess, dict(ids))[0]
        return [s.item for s in rec.items]

    # Each probe runs on its own copy of the world, so global signals are identical.
    linked = video_recs("a", copy.deepcopy(p), copy.deepcopy(sessions))
    unlinked = video_recs("b", copy.deepcopy(p), copy.deepcopy(sessions))
    fresh = video_recs("c", copy.deepcopy(p), copy.deepcopy(sessions))
    assert unlinked == fresh, "an unlinked person's shop history leaked into video"
    assert linked != fresh
    assert sum(i.startswith("jazz") for i in linked) > sum(i.startswith("jazz") for i in fresh)

    withdraw = route(ev(50, "video", "a", type_="identify", person="P", consent=False), ids)
    stale = Consent("P", True, ts=0.0)  # an older choice arriving late must not win
    p.handle([*withdraw, stale], sessions, now=0.0)
    assert sessions["P"].consent is False
    assert video_recs("a", copy.deepcopy(p), copy.deepcopy(sessions)) == fresh


def test_identify_hands_state_over_to_the_person() -> None:
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    ids: dict[str, str] = {}
    run(p, [ev(1, "shop", "a", "jazz-0", "purchase")], sessions, ids)
    assert "shop:a" in sessions
    msgs = route(ev(2, "shop", "a", type_="identify", person="P"), ids)
    assert isinstance(msgs[0], Handoff) and isinstance(msgs[1], Consent)
    out = p.handle(msgs, sessions, now=0.0)
    assert "shop:a" not in sessions
    assert len(out.forwards) == 1 and isinstance(out.forwards[0], Merge)
    p.handle(out.forwards, sessions, now=0.0)
    assert sessions["P"].consumed == ["shop:jazz-0"] and sessions["P"].aliases == ["shop:a"]


def test_a_linked_user_identifying_as_another_person_takes_nothing_of_the_first() -> None:
    p, sessions, ids = linked_world()
    run(p, [ev(3, "video", "a", "jazz-3", "purchase")], sessions, ids)
    run(p, [ev(4, "shop", "a", type_="identify", person="Q")], sessions, ids)
    # P keeps its video history and its video alias still reaches it; Q starts from nothing
    assert sessions["P"].consumed == ["video:jazz-3"] and ids["video:a"] == "P"
    assert ids["shop:a"] == "Q" and sessions["Q"].consumed == []


def test_an_alias_event_redelivered_after_the_link_is_not_learned_twice() -> None:
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    ids: dict[str, str] = {}
    bought = ev(1, "shop", "a", "jazz-0", "purchase")
    run(p, [bought, ev(2, "shop", "a", type_="identify", person="P")], sessions, ids)
    learned = p.stats["events"]
    run(p, [bought], sessions, ids)  # at-least-once: delivered again, now routed to P
    assert p.stats["events"] == learned and p.stats["duplicates"] == 1


def test_a_batch_that_fails_half_way_keeps_a_state_it_handed_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker retries a failed batch message by message: the handoff must still find the
    state to hand over."""
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    run(p, [ev(1, "shop", "a", "jazz-0", "purchase")], sessions, {})
    fail_learning_for(monkeypatch, p, "shop:b")
    batch: list[PersonMessage] = [
        Handoff("shop:a", "P"),
        PersonEvent("shop:b", ev(2, "shop", "b", "jazz-1")),
    ]
    with pytest.raises(BatchFailedError):
        p.handle(batch, sessions, now=0.0)
    assert sessions["shop:a"].consumed == ["shop:jazz-0"]
    out = p.handle(batch[:1], sessions, now=0.0)
    assert [f.state.consumed for f in out.forwards if isinstance(f, Merge)] == [["shop:jazz-0"]]
    assert "shop:a" not in sessions
    # handed off, then active again in the same batch: a fresh state, kept
    run(p, [ev(3, "shop", "c", "jazz-2", "purchase")], sessions, {})
    again: list[PersonMessage] = [
        Handoff("shop:c", "P"),
        PersonEvent("shop:c", ev(4, "shop", "c", "jazz-3")),
    ]
    out = p.handle(again, sessions, now=0.0)
    assert [f.state.consumed for f in out.forwards if isinstance(f, Merge)] == [["shop:jazz-2"]]
    assert sessions["shop:c"].recent["shop"] == ["shop:jazz-3"]


def test_a_failed_try_leaves_a_plain_dicts_states_as_they_were(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    run(p, [ev(1, "shop", "b", "jazz-0", "purchase")], sessions, {})
    before = sessions["shop:b"].to_bytes()
    learn = p.learn
    fail_learning_for(monkeypatch, p, "shop:b")
    batch: list[PersonMessage] = [PersonEvent("shop:b", ev(2, "shop", "b", "jazz-1", "purchase"))]
    with pytest.raises(BatchFailedError):
        p.handle(batch, sessions, now=0.0)
    assert sessions["shop:b"].to_bytes() == before  # not even the event id remembered
    monkeypatch.setattr(p, "learn", learn)
    p.handle(batch, sessions, now=0.0)
    assert p.stats["duplicates"] == 0 and sessions["shop:b"].consumed[-1] == "shop:jazz-1"


def test_an_alias_handed_off_after_its_event_in_one_batch_is_gone_and_its_list_moves() -> None:
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    batch: list[PersonMessage] = [
        PersonEvent("shop:u1", ev(1, "shop", "u1", "jazz-0")),
        Handoff("shop:u1", "P"),
    ]
    out = p.handle(batch, sessions, now=0.0)
    assert "shop:u1" not in sessions
    (merge,) = [f for f in out.forwards if isinstance(f, Merge)]
    assert merge.state.recent == {"shop": ["shop:jazz-0"]} and list(merge.state.last_rec) == [
        "shop"
    ]


def test_a_batch_retried_after_a_bug_learns_each_event_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker retries a failed batch message by message with the events the failure
    reports as learned: they update only their person's state, which the failed try never
    wrote. Before, everything before the failure was learned twice."""
    batch: list[PersonMessage] = [
        PersonEvent("shop:a", ev(1, "shop", "a", "jazz-0", "purchase")),
        PersonEvent("shop:b", ev(2, "shop", "b", "jazz-0", "purchase")),
        PersonEvent("shop:c", ev(3, "shop", "c", "run-0", "purchase")),
    ]
    clean = make_pipeline()
    clean_sessions: dict[str, SessionState] = {}
    clean.handle(batch, clean_sessions, now=0.0)

    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    learn = p.learn
    fail_learning_for(monkeypatch, p, "shop:c")
    with pytest.raises(BatchFailedError, match="RuntimeError: a bug") as failed:
        p.handle(batch, sessions, now=0.0)
    assert failed.value.learned == {("shop:a", "shop:e1"), ("shop:b", "shop:e2")}
    assert sessions == {}
    monkeypatch.setattr(p, "learn", learn)  # the bug was in one place only
    for msg in batch:
        p.handle([msg], sessions, now=0.0, learned=failed.value.learned)
    for key in ("shop:jazz-0", "shop:run-0"):
        assert p.popularity.predict_one(key, ts=3.0) == clean.popularity.predict_one(key, 3.0)
    assert p.stats["events"] == clean.stats["events"] == 3
    assert p.covisitation.candidates(["shop:jazz-0"], "shop", 10) == (
        clean.covisitation.candidates(["shop:jazz-0"], "shop", 10)
    )
    # the same people, but ranked one by one: their lists (last_rec) may differ
    for state in (*sessions.values(), *clean_sessions.values()):
        state.last_rec.clear()
    assert sessions == clean_sessions


def test_redelivered_event_is_applied_once_and_keeps_its_rec_id() -> None:
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    e = ev(1, "shop", "u", "jazz-0", "purchase")
    first = p.handle([PersonEvent("shop:u", e)], sessions, now=0.0)
    assert sessions["shop:u"].events_on == {"shop": 1}
    again = p.handle([PersonEvent("shop:u", e)], sessions, now=0.0)
    assert sessions["shop:u"].events_on == {"shop": 1}
    assert again.recommendations == [] and p.stats["duplicates"] == 1
    assert first.recommendations[0].rec_id == rec_id_for("shop", "e1", "shop:u")


def test_the_same_event_id_from_two_platforms_is_two_events() -> None:
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    ids: dict[str, str] = {}
    link = [
        ev(n, platform, "a", type_="identify", person="P")
        for n, platform in ((1, "shop"), (2, "video"))
    ]
    run(p, link, sessions, ids)
    shop = ev(3, "shop", "a", "jazz-0", "purchase").model_copy(update={"event_id": "x1"})
    video = ev(4, "video", "a", "jazz-1", "purchase").model_copy(update={"event_id": "x1"})
    recs = run(p, [shop, video, shop], sessions, ids)
    assert [r.platform for r in recs] == ["shop", "video"]  # the shop one, again, is a replay
    assert recs[0].rec_id != recs[1].rec_id and p.stats["duplicates"] == 1
    assert {"shop:jazz-0", "video:jazz-1"} <= set(sessions["P"].consumed)


def test_batch_ranks_each_event_on_the_state_as_of_that_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    batch = [
        PersonEvent("shop:u", ev(1, "shop", "u", "jazz-0")),
        PersonEvent("shop:u", ev(2, "shop", "u", "run-0", "purchase")),
    ]
    ranked: list[RankRequest] = []
    recommend = p.recommend

    def spy(requests: Sequence[RankRequest]) -> list[Ranking]:
        ranked.extend(requests)
        return recommend(requests)

    monkeypatch.setattr(p, "recommend", spy)
    recs = p.handle(batch, sessions, now=0.0).recommendations
    # the whole batch is ranked in one call, after both events were learned: the first
    # request still sees the person as they were at the first event
    first, second = (r.session for r in ranked)
    assert first.recent["shop"] == ["shop:jazz-0"] and "shop:run-0" not in first.consumed
    assert second.recent["shop"] == ["shop:jazz-0", "shop:run-0"]
    assert "shop:run-0" in second.consumed and second is sessions["shop:u"]
    assert "run-0" not in [s.item for s in recs[1].items]


def test_an_unknown_item_in_a_batch_is_reported_and_the_rest_handled_once() -> None:
    """Before, it raised mid-batch: the worker retried the batch message by message, learning
    what came before it twice and losing a state handed off earlier in the batch."""
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    run(p, [ev(1, "shop", "a", "jazz-0", "purchase")], sessions, {})
    unknown = PersonEvent("shop:b", ev(2, "shop", "b", "gone-0", "purchase"))
    good = PersonEvent("shop:c", ev(3, "shop", "c", "jazz-1", "purchase"))
    before = p.popularity.predict_one("shop:jazz-1", ts=0.0)
    out = p.handle([Handoff("shop:a", "P"), unknown, good], sessions, now=0.0)
    assert out.rejected == [(unknown, "unknown item 'gone-0' on platform 'shop'")]
    assert [type(f) for f in out.forwards] == [Merge] and "shop:a" not in sessions
    assert [r.user for r in out.recommendations] == ["c"] and "shop:b" not in sessions
    assert p.popularity.predict_one("shop:jazz-1", ts=0.0) > before
    assert p.stats["events"] == 2  # the first purchase and the good one, each once


def test_unknown_item_is_rejected_before_routing() -> None:
    p = make_pipeline()
    with pytest.raises(InvalidEventError, match="unknown item"):
        p.check_event(ev(1, "shop", "u", "nope"))


@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        (
            np.ones(3, dtype=np.float32),
            "interest on 'shop' has shape (3,), the catalog's vectors (64,)",
        ),
        (np.full(64, np.nan, dtype=np.float32), "interest on 'shop' is not finite"),
    ],
)
def test_a_merged_state_that_does_not_fit_the_catalog_is_reported(
    vector: np.ndarray, reason: str
) -> None:
    """Before, it was merged and stored: every later item event of that person on that
    platform then failed in the interest update and was dead-lettered."""
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    run(p, [ev(1, "shop", "P", "jazz-0", "purchase")], sessions, {})
    linked = SessionState(person="shop:a", interest={"shop": vector}, interest_ts={"shop": 1.0})
    merge = Merge("shop:P", linked)
    out = p.handle([merge, PersonEvent("shop:P", ev(2, "shop", "P", "jazz-1"))], sessions, 0.0)
    assert out.rejected == [(merge, f"merged state: {reason}")]
    assert [r.user for r in out.recommendations] == ["P"]
    assert sessions["shop:P"].interest["shop"].shape == (64,)
    assert "shop:a" not in sessions["shop:P"].aliases


def test_search_uses_the_query_as_context() -> None:
    p = make_pipeline()
    rec = run(p, [ev(1, "video", "u", type_="search", query="compost tomato soil")], {}, {})[0]
    assert rec.items[0].item.startswith("garden")
    assert sum(s.item.startswith("garden") for s in rec.items[:5]) >= 3


def test_blend_learns_from_engagement_with_recommended_items() -> None:
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    ids: dict[str, str] = {}
    before = dict(p.blends["shop"].weights)
    n = 0
    for round_ in range(15):
        user = f"u{round_}"
        n += 1
        rec = run(p, [ev(n, "shop", user, "jazz-0")], sessions, ids)[0]
        n += 1
        run(p, [ev(n, "shop", user, rec.items[0].item, "click")], sessions, ids)
    assert p.stats["blend_updates"] >= 10
    assert p.blends["shop"].weights != before
    assert np.isfinite(list(p.blends["shop"].weights.values())).all()


def test_unchanged_items_are_not_encoded_again() -> None:
    p = make_pipeline()
    encoded = p.stats["encoded_items"]
    item = CatalogItem(
        item="jazz-0", platform="shop", title="saxophone bebop swing jazz 0", tags=["jazz"], ts=0.0
    )
    before = p.catalog.vector("shop:jazz-0").copy()
    p.add_items([item.model_copy(update={"available": False})])
    assert p.stats["encoded_items"] == encoded
    assert not p.catalog.available[p.catalog.index["shop:jazz-0"]]
    assert np.array_equal(p.catalog.vector("shop:jazz-0"), before)
    p.add_items([item.model_copy(update={"title": "completely new words"})])
    assert p.stats["encoded_items"] == encoded + 1


def test_ranking_features_are_the_scores_each_source_proposed() -> None:
    """Candidates are assembled as catalog rows; their columns must match the signals' own
    key → score answers, with 0 for what a source did not propose."""
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    items = ["jazz-0", "garden-1", "jazz-2", "run-3", "jazz-4", "garden-5"]
    events = [ev(n, "shop", f"u{n % 3}", item, "purchase") for n, item in enumerate(items * 3)]
    # u0's last item is run-3; someone goes from it to garden-1
    events += [ev(20, "shop", "u7", "run-3", "purchase")]
    events += [ev(21, "shop", "u7", "garden-1", "purchase")]
    run(p, events, sessions, {})
    session = sessions["shop:u0"]
    recent = session.recent["shop"]
    consumed = frozenset(session.consumed)
    ranking = p.recommend([RankRequest("shop:u0", "shop", session, None, consumed, 2000.0)])[0]
    had = consumed_on(session, "shop", p.consumed_covisitation.window)
    expected = {
        "covisit": p.covisitation.candidates(recent, "shop", p.config.covisit_candidates),
        "item_knn": p.item_knn.candidates(recent, "shop", p.config.item_knn_candidates),
        "transition": p.transitions.candidates(had, "shop", p.config.transition_candidates),
        "consumed_covisit": p.consumed_covisitation.candidates(
            had, "shop", p.config.covisit_candidates
        ),
    }
    assert all(expected.values())
    for name, scores in expected.items():
        column = ranking.features[:, SIGNALS.index(name)]
        for i, key in enumerate(ranking.keys):
            assert column[i] == np.float32(scores.get(key, 0.0)), (name, key)
    assert len(set(ranking.keys)) == len(ranking.keys)
    assert consumed and not set(ranking.keys) & consumed


HISTORY_OF_TWO_INTERESTS = ["jazz-0", "garden-1", "run-2", "jazz-3"]


def two_interests() -> tuple[Pipeline, RankRequest]:
    """A pipeline after one person bought HISTORY_OF_TWO_INTERESTS, and their next request."""
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    history = HISTORY_OF_TWO_INTERESTS
    run(p, [ev(n, "shop", "u", item, "purchase") for n, item in enumerate(history)], sessions, {})
    session = sessions["shop:u"]
    return p, RankRequest("shop:u", "shop", session, None, frozenset(session.consumed), 100.0)


def test_nearest_is_the_best_similarity_to_one_of_the_latest_items_here() -> None:
    """Two interests: a candidate like one of them scores its cosine with that item, higher
    than with the profile's mean (``content``); only the latest NEAREST_OF items count."""
    p, request = two_interests()
    latest = request.session.recent["shop"][-NEAREST_OF:]
    assert latest == [f"shop:{k}" for k in HISTORY_OF_TWO_INTERESTS]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline_module, "NEAREST_OF", 2)  # run-2 and jazz-3 only
        ranking = p.recommend([request])[0]
    nearest = ranking.features[:, SIGNALS.index("nearest")]
    content = ranking.features[:, SIGNALS.index("content")]
    latest_vectors = np.stack([p.catalog.vector(k) for k in ["shop:run-2", "shop:jazz-3"]])
    for i, key in enumerate(ranking.keys):
        want = float((latest_vectors @ p.catalog.vector(key)).max())
        assert nearest[i] == pytest.approx(want, abs=1e-6), key
    jazz = ranking.keys.index("shop:jazz-1")
    assert nearest[jazz] > content[jazz]
    # nobody's latest items here: 0
    stranger = RankRequest("x", "shop", SessionState(person="x"), ts=100.0)
    assert not p.recommend([stranger])[0].features[:, SIGNALS.index("nearest")].any()


def test_lexical_is_the_best_tfidf_cosine_with_one_of_the_latest_items_here() -> None:
    """The column is each candidate's best TF-IDF cosine (as scikit-learn weighs the catalog's
    texts) with one of the person's latest NEAREST_OF items on this platform."""
    p, request = two_interests()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline_module, "NEAREST_OF", 2)  # run-2 and jazz-3 only
        ranking = p.recommend([request])[0]
    lexical = ranking.features[:, SIGNALS.index("lexical")]
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2)
    x = vectorizer.fit_transform([p._texts[k] for k in p.catalog.keys]).toarray()
    latest = x[[p.catalog.index[f"shop:{k}"] for k in ("run-2", "jazz-3")]]
    for i, key in enumerate(ranking.keys):
        want = float((latest @ x[p.catalog.index[key]]).max())
        assert lexical[i] == pytest.approx(want, abs=1e-6), key
    assert lexical.max() > 0.0
    stranger = RankRequest("x", "shop", SessionState(person="x"), ts=100.0)
    assert not p.recommend([stranger])[0].features[:, SIGNALS.index("lexical")].any()


def test_popularity_and_river_columns_match_the_models_keyed_answers() -> None:
    """Ranking reads popularity counts and River's item rows from per-row copies; they must
    give what the models answer by key, also after popularity rescaled every count."""
    p = make_pipeline(PipelineConfig(popularity_half_life_s=1.0))
    sessions: dict[str, SessionState] = {}
    items = ["jazz-0", "garden-1", "jazz-2", "run-3", "jazz-4", "garden-5"]
    # 2 ** 40 > 1e12: with a one-second half-life popularity rescales every count at the
    # 41st event, and only two items are learned after it
    events = [ev(n, "shop", f"u{n % 3}", item, "purchase") for n, item in enumerate(items * 7)]
    run(p, events, sessions, {})
    assert p.popularity.rebases == 1
    session = sessions["shop:u0"]
    request = RankRequest("shop:u0", "shop", session, None, frozenset(session.consumed), 2000.0)
    first = p.recommend([request])[0]
    again = p.recommend([request])[0]  # River's rows now come from the ranking's copy
    for ranking in (first, again):
        popularity = ranking.features[:, SIGNALS.index("popularity")]
        river = ranking.features[:, SIGNALS.index("river")]
        assert popularity.tolist() == p.popularity.normalised_many(ranking.keys, "shop").tolist()
        want = p.preference.predict_many(preference_user("shop:u0", "shop"), ranking.keys)
        assert river.tolist() == want.tolist()
        assert popularity.max() == 1.0 and river.any()


def test_a_quiet_ranking_changes_nothing_the_pipeline_learns_from() -> None:
    """``recommend(quiet=True)`` (a what-if ranking, the replay's cold-start probe): the same
    list, but nothing kept for feedback, no River entry created, no random draw."""
    p = make_pipeline(PipelineConfig(rerank_every=None))
    sessions: dict[str, SessionState] = {}
    run(p, [ev(n, "shop", "u0", f"jazz-{n}", "purchase") for n in range(3)], sessions, {})
    session = sessions["shop:u0"]
    stranger = SessionState(person="x")  # River has never seen this person on video
    requests = [
        RankRequest("shop:u0", "video", session, None, session.exclusion(), 2000.0),
        RankRequest("x", "video", stranger, None, stranger.exclusion(), 2000.0),
    ]
    river, feedback, rng = list(p.preference._mf.i_latents), dict(p._feedback), p._rng.getstate()
    quiet = p.recommend(requests, quiet=True)
    assert list(p.preference._mf.i_latents) == river
    assert preference_user("x", "video") not in p.preference._mf.u_latents
    assert dict(p._feedback) == feedback and p._rng.getstate() == rng
    loud = p.recommend(requests)  # creates the video items in River, keeps both lists
    assert len(p.preference._mf.i_latents) > len(river) and len(p._feedback) == len(feedback) + 2
    # the order can differ only through River's unseen items (scored at their prior)
    assert [set(r.keys) for r in quiet] == [set(r.keys) for r in loud]

def test_rivers_negatives_are_drawn_from_the_whole_platform_catalog() -> None:
    """Not from a fixed sample of it (that pushed the same few hundred items down forever and
    left every other item's bias untouched), and never from another platform."""
    p = Pipeline(HashingEncoder(dim=16), ranker=None, config=PipelineConfig())
    shop = [CatalogItem(item=f"s{i}", platform="shop", title=f"thing {i}") for i in range(1500)]
    p.add_items([*shop, CatalogItem(item="v0", platform="video", title="a film")])
    bought = [f"s{i}" for i in range(10)]
    events = [ev(n, "shop", f"u{n % 7}", bought[n % 10], "purchase") for n in range(600)]
    run(p, events, {}, {})
    # learned from: a bias moved (ranking also creates rows for its candidates, at 0)
    learned = {str(k) for k, bias in p.preference._mf.i_biases.items() if bias != 0.0}
    negatives = learned - {f"shop:{i}" for i in bought}
    assert "video:v0" not in learned
    # ~1,000 draws over 1,490 items: about half of them, spread over the whole catalog
    assert len(negatives) > 500
    assert sum(int(k.split(":s")[1]) >= 750 for k in negatives) > 0.4 * len(negatives)
    assert sum(int(k.split(":s")[1]) % 2 for k in negatives) > 0.4 * len(negatives)


def test_disliked_items_feed_the_consumed_sequence_signals_only() -> None:
    """A low rating is no positive (co-visitation, item-kNN and the session's recent items
    ignore it) but it was consumed: what people consume next follows it."""
    p = make_pipeline()
    sessions: dict[str, SessionState] = {}
    events = [
        ev(1, "shop", "a", "jazz-0", "rating", value=1.0),
        ev(2, "shop", "a", "garden-3", "purchase"),
    ]
    run(p, events, sessions, {})
    assert sessions["shop:a"].recent["shop"] == ["shop:garden-3"]
    assert p.covisitation.candidates(["shop:jazz-0"], "shop", 10) == {}
    assert p.transitions.candidates(["shop:jazz-0"], "shop", 10) == {"shop:garden-3": 1.0}
    assert p.consumed_covisitation.candidates(["shop:jazz-0"], "shop", 10) == {
        "shop:garden-3": 1.0
    }
    # someone else dislikes jazz-0 too: garden-3 is proposed, scored by the sequence signals
    run(p, [ev(3, "shop", "b", "jazz-0", "rating", value=2.0)], sessions, {})
    session = sessions["shop:b"]
    ranking = p.recommend(
        [RankRequest("shop:b", "shop", session, None, frozenset(session.consumed), 2000.0)]
    )[0]
    row = ranking.keys.index("shop:garden-3")
    assert ranking.features[row, SIGNALS.index("transition")] == 1.0
    assert ranking.features[row, SIGNALS.index("consumed_covisit")] == 1.0
    assert ranking.features[row, SIGNALS.index("covisit")] == 0.0


def test_coming_from_another_platform_pairs_its_latest_items_however_long_the_history_here(
) -> None:
    p, sessions, ids = linked_world()
    here = [ev(10 + i, "shop", "a", f"jazz-{i}") for i in range(6)]  # more than the window
    run(p, [ev(5, "video", "a", "garden-0"), *here], sessions, ids)
    # long before, so not paired with the last shop item: it is behind six others
    assert "video:garden-0" not in p.covisitation.candidates(["shop:jazz-5"], "video", 10)
    run(p, [ev(20, "video", "a", "run-1"), ev(21, "shop", "a", "run-2")], sessions, ids)
    # came from video: its latest item is paired with the next shop item
    assert "video:run-1" in p.covisitation.candidates(["shop:run-2"], "video", 10)
    # without consent, no pair crosses platforms
    p, sessions, ids = linked_world()
    run(p, [ev(3, "shop", "a", type_="identify", person="P", consent=False)], sessions, ids)
    run(p, [*here, ev(20, "video", "a", "run-1"), ev(21, "shop", "a", "run-2")], sessions, ids)
    assert p.covisitation.candidates(["shop:run-2"], "video", 10) == {}


def test_people_alike_see_a_persons_platforms_together_only_with_consent() -> None:
    p, sessions, ids = linked_world()
    run(p, [ev(3, "shop", "a", "jazz-0", "purchase"), ev(4, "video", "a", "jazz-1", "purchase")],
        sessions, ids)
    assert set(p.person_knn._person_ids) == {"P"}  # one person, both platforms
    withdraw = route(ev(5, "video", "a", type_="identify", person="P", consent=False), ids)
    p.handle(withdraw, sessions, now=0.0)
    run(p, [ev(6, "shop", "a", "jazz-2", "purchase"), ev(7, "video", "a", "jazz-3", "purchase")],
        sessions, ids)
    assert set(p.person_knn._person_ids) == {"P", "P@shop", "P@video"}


def test_the_item_tower_runs_once_per_item_until_its_text_or_the_head_changes() -> None:
    head = TowerHead()
    p = make_pipeline()
    p.ranker = head
    sessions: dict[str, SessionState] = {}
    ids: dict[str, str] = {}
    first = run(p, [ev(1, "shop", "ann", "jazz-0")], sessions, ids)[0]
    encoded = head.encoded
    assert 0 < encoded <= len(p.catalog)
    again = run(p, [ev(2, "shop", "bob", "jazz-0")], sessions, ids)[0]
    assert head.encoded == encoded, "cached items were encoded again"
    # what is cached is what the tower gives for the rows' vectors
    rows = np.flatnonzero(p._mirrors.item_hidden_stamp[: len(p.catalog)] >= 0)
    assert len(rows) == encoded
    cached = p._mirrors.item_hidden[rows]
    assert np.array_equal(cached, head.item_hidden(p.catalog.vectors[rows]))
    head.encoded = encoded
    # new text for one item: only that item is encoded again
    p.add_items([CatalogItem(item="jazz-1", platform="shop", title="quiet piano ballads")])
    run(p, [ev(3, "shop", "cy", "jazz-0")], sessions, ids)
    assert head.encoded == encoded + 1
    row = p.catalog.index["shop:jazz-1"]
    fresh = head.item_hidden(p.catalog.vectors[[row]])[0]
    assert np.array_equal(p._mirrors.item_hidden[row], fresh)
    # an availability update with the same text keeps the cached output
    head.encoded = encoded
    p.add_items([CatalogItem(item="jazz-1", platform="shop", title="quiet piano ballads")])
    run(p, [ev(4, "shop", "dee", "jazz-0")], sessions, ids)
    assert head.encoded == encoded
    # a new head (hot swap) starts afresh
    p.ranker = swapped = TowerHead()
    run(p, [ev(5, "shop", "eve", "jazz-0")], sessions, ids)
    assert swapped.encoded > 0
    assert first.items and again.items


def test_the_sequence_model_reads_the_latest_items_here_and_with_consent_elsewhere() -> None:
    p, sessions, ids = linked_world()
    p.sequence = model = RecordingSequence(length_same=3, length_other=2)
    video = [f"garden-{i}" for i in range(3)]
    shop = [f"jazz-{i}" for i in range(4)]
    run(p, [ev(10 + i, "video", "a", k, "click") for i, k in enumerate(video)], sessions, ids)
    model.calls.clear()
    run(p, [ev(20 + i, "shop", "a", k, "click") for i, k in enumerate(shop)], sessions, ids)
    histories, flags = model.calls[-1]
    # the shop event ranks shop items with the three latest here, the two latest on video
    # before them (all four shop clicks are in the session when the last one is ranked)
    want = [f"video:garden-{i}" for i in (1, 2)] + [f"shop:jazz-{i}" for i in (1, 2, 3)]
    assert np.array_equal(histories[0], np.stack([p.catalog.vector(k) for k in want]))
    assert flags[0].tolist() == [0, 0, 1, 1, 1]
    # without consent: this platform only
    sessions["P"].consent = False
    model.calls.clear()
    run(p, [ev(30, "shop", "a", "jazz-5", "click")], sessions, ids)
    histories, flags = model.calls[-1]
    assert flags[0].tolist() == [1, 1, 1] and len(histories[0]) == 3


def test_the_sequence_search_follows_a_live_catalog() -> None:
    """Items join, change vector, are withdrawn and come back between searches (its matrices
    are written in place): every answer is the exact top over the item tower's vectors."""
    from models.catalog import Catalog

    rng = np.random.default_rng(11)
    catalog = Catalog(dim=8)
    items = pipeline_module._SequenceItems()
    model = RecordingSequence()
    truth: dict[str, tuple[str, np.ndarray, bool]] = {}
    for step in range(300):
        key = f"k{rng.integers(120)}"
        platform = truth[key][0] if key in truth else ("shop", "video")[step % 2]
        vector = rng.standard_normal(8).astype(np.float32)
        available = bool(rng.random() < 0.7)
        catalog.upsert(key, platform, vector, available=available, added_ts=0.0)
        truth[key] = (platform, vector, available)
        if step % 10:
            continue
        items.refresh(model, catalog)
        queries = rng.standard_normal((2, 8)).astype(np.float32)
        for p in ("shop", "video"):
            live = np.array(
                [catalog.index[k] for k in catalog.keys if truth[k][0] == p and truth[k][2]],
                dtype=np.int64,
            )
            found = items.neighbours(catalog, queries, p, 5)
            if len(live) == 0:
                assert found.shape == (2, 0)
                continue
            tower = model.item_vectors(np.stack([truth[catalog.keys[r]][1] for r in live]))
            want = queries @ tower.T
            for q in range(2):
                best = np.argsort(-want[q], kind="stable")[:5]
                assert found[q].tolist() == live[best].tolist()


def test_the_sequence_signal_scores_the_item_tower_output_and_proposes_its_nearest() -> None:
    # one candidate from each of the other sources that have any here
    few = PipelineConfig(
        sequence_candidates=4, neighbour_candidates=1, lexical_candidates=1, candidates_per_source=1
    )
    p = make_pipeline(few)
    p.sequence = model = RecordingSequence()
    session = SessionState(person="x")
    for n, key in enumerate(["shop:run-0", "shop:run-1"]):
        session.observe(
            "shop", key, p.catalog.vector(key), float(n), consumed=False, half_life_s=1e9
        )
    ranking = p.recommend([RankRequest("x", "shop", session, ts=10.0)])[0]
    query = np.roll(p.catalog.vector("shop:run-0") + p.catalog.vector("shop:run-1"), 1)
    column = ranking.features[:, SIGNALS.index("sequence")]
    for key, got in zip(ranking.keys, column, strict=True):
        want = float(model.item_vectors(p.catalog.vector(key)[None])[0] @ query)
        assert got == pytest.approx(want, abs=1e-5), key
    shop_rows = p.catalog.rows("shop")
    nearest = shop_rows[np.argsort(-(p.catalog.vectors[shop_rows] @ np.roll(query, -1)))[:4]]
    assert {p.catalog.keys[r] for r in nearest} <= set(ranking.keys)
    assert len(ranking.keys) <= 4 + 2
    assert p.model_versions["sequence"] == "sequence-test"
    # without a model the column is zero
    p.sequence = None
    ranking = p.recommend([RankRequest("x", "shop", session, ts=10.0)])[0]
    assert not ranking.features[:, SIGNALS.index("sequence")].any()


def test_the_blend_averaging_setting_reaches_every_platforms_blend() -> None:
    p = make_pipeline(PipelineConfig().with_overrides(["blend_averaging=0.5"]))
    assert p.blends["shop"].averaging == 0.5 and p.blends["video"].averaging == 0.5
    assert make_pipeline().blends["shop"].averaging == PipelineConfig().blend_averaging
    with pytest.raises(ConfigError, match="averaging"):  # at start, before any event
        Pipeline(HashingEncoder(dim=8), ranker=None, config=PipelineConfig(blend_averaging=1.5))
