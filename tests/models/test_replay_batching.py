"""Batched replay: batch_size=1 is the exact per-event replay, larger batches keep every
person's own state exact; the vectorised River scores match River's own."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from models.catalog import Catalog
from models.datasets import Dataset
from models.evaluation import (
    _Replayer,
    build_catalog,
    replay,
)
from models.events import CatalogItem, Event, EventType, item_key
from models.pipeline import Pipeline, PipelineConfig, RankRequest
from models.preference import PreferenceModel
from models.recommenders import (
    BlendRecommender,
    ConsumedCoVisitationBaseline,
    ContentBaseline,
    CoVisitationBaseline,
    EaseBaseline,
    ItemKNNBaseline,
    PersonKNNBaseline,
    PopularityBaseline,
    PreferenceBaseline,
    Recommender,
)
from models.session import SessionState

from ..fakes import HashingEncoder

ENCODER = HashingEncoder(dim=32)
WORDS = ["red", "blue", "boots", "socks", "tent", "stove", "jazz", "vinyl", "rock", "drums",
         "lamp", "desk"]


def world(n_events: int = 400, seed: int = 3) -> Dataset:
    """Two platforms, bursty persons (runs of one person, like MovieLens), low ratings, views,
    repeats and events left out of the evaluation."""
    rng = random.Random(seed)
    items = [CatalogItem(item=f"i{j}", platform=p, title=" ".join(rng.sample(WORDS, 3)))
             for p in ("shop", "music") for j in range(30)]
    events: list[Event] = []
    evaluated: list[bool] = []
    person = "p0"
    for i in range(n_events):
        if rng.random() < 0.4:
            person = f"p{rng.randrange(12)}"
        platform = "shop" if rng.random() < 0.6 else "music"
        kind = rng.choice([EventType.RATING, EventType.RATING, EventType.VIEW,
                           EventType.PURCHASE])
        value = rng.choice([1.0, 3.0, 4.0, 5.0]) if kind is EventType.RATING else None
        events.append(Event(event_id=f"e{i}", type=kind, platform=platform, user=person,
                            ts=float(i * 60), item=f"i{rng.randrange(30)}", value=value))
        evaluated.append(rng.random() < 0.9)
    return Dataset("toy", items, events, evaluated)


def catalog_for(ds: Dataset) -> Catalog:
    return build_catalog(ds, ENCODER.encode([it.text() for it in ds.items]))


def old_replay(ds: Dataset, model: Recommender, catalog: Catalog) -> tuple[list[int], int]:
    """The replay loop as it was before batching (ranks of the hits, repeats skipped), with
    today's rule for a repeat: an item no list may hold."""
    state = _Replayer(catalog, True)
    ranks: list[int] = []
    repeats = 0
    for event, evaluated in zip(ds.events, ds.evaluated, strict=True):
        person = event.user
        session = state.session(person)
        if evaluated and event.is_positive and event.item is not None:
            key = item_key(event.platform, event.item)
            request = state.request(person, event.platform, event.ts)
            if key in request.exclude:  # consumed, or the item the list is for
                repeats += 1
            else:
                ranked = model.rank([request])[0]
                ranks.append(ranked.index(key) + 1 if key in ranked else 0)
        model.learn(person, event, session)
        state.observed(person, event)
    return ranks, repeats


class OldBlend:
    """BlendRecommender as it was before batching: the pipeline, nothing else."""

    name = "blend"

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        return [r.keys for r in self.pipeline.recommend(requests)]

    def learn(self, person: str, event: Event, session: SessionState) -> None:
        self.pipeline.learn(person, event, session)


def models(catalog: Catalog) -> dict[str, Any]:
    return {
        "blend": lambda: BlendRecommender(Pipeline(ENCODER, None, PipelineConfig(), catalog)),
        "popularity": lambda: PopularityBaseline(catalog),
        "covisit": lambda: CoVisitationBaseline(catalog),
        "covisit-consumed": lambda: ConsumedCoVisitationBaseline(catalog),
        "item-knn": lambda: ItemKNNBaseline(catalog),
        "person-knn": lambda: PersonKNNBaseline(catalog),
        "ease": lambda: EaseBaseline(catalog, PipelineConfig(ease_min_count=1, ease_first_fit=5)),
        "river-mf": lambda: PreferenceBaseline(catalog, refresh=50),
        "content": lambda: ContentBaseline(catalog),
    }


@pytest.mark.parametrize(
    "name",
    [
        "blend",
        "popularity",
        "covisit",
        "covisit-consumed",
        "item-knn",
        "person-knn",
        "ease",
        "river-mf",
        "content",
    ],
)
def test_batch_size_one_is_the_old_per_event_replay(name: str) -> None:
    ds = world()
    cat = catalog_for(ds)
    make = models(cat)[name]
    old_model, new_model = make(), make()
    if name == "blend":
        old_model = OldBlend(Pipeline(ENCODER, None, PipelineConfig(), cat))
    ranks, repeats = old_replay(ds, old_model, cat)
    run = replay(ds, new_model, cat, progress=False, batch_size=1)
    assert [h.rank for h in run.hits] == ranks
    assert run.repeats_skipped == repeats
    assert len(ranks) > 100 and any(ranks)
    if name == "blend":
        assert new_model.weights() == old_model.pipeline.blends.snapshot()
        assert new_model.pipeline.stats == old_model.pipeline.stats


class Recorder:
    """The blend, recording what each request said about the person and each rank call."""

    name = "recorder"

    def __init__(self, inner: BlendRecommender) -> None:
        self.inner = inner
        self.config = inner.config
        self.seen: list[tuple[Any, ...]] = []
        self.calls: list[int] = []

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        self.calls.append(len(requests))
        for r in requests:
            s = r.session
            self.seen.append((
                r.person, r.platform, r.ts, r.exclude, None if r.context is None else
                r.context.tobytes(), {p: list(v) for p, v in s.recent.items()},
                {p: v.tobytes() for p, v in s.interest.items()}, list(s.consumed)))
        return self.inner.rank(requests)

    def before_learn(self, slot: int | None) -> None:
        self.inner.before_learn(slot)

    def learn(self, person: str, event: Event, session: SessionState) -> None:
        self.inner.learn(person, event, session)


def test_batches_keep_every_persons_own_state_exact() -> None:
    ds = world()
    cat = catalog_for(ds)
    runs = {}
    recorders = {}
    for size in (1, 64):
        rec = Recorder(BlendRecommender(Pipeline(ENCODER, None, PipelineConfig(), cat)))
        runs[size] = replay(ds, rec, cat, progress=False, batch_size=size)
        recorders[size] = rec
    one, many = recorders[1], recorders[64]
    # persons come back within a batch (that is the point of the world) ...
    assert max(many.calls) > 20 and len(many.calls) < len(one.calls) / 10
    # ... and still every request saw exactly the person's state of the per-event replay
    assert many.seen == one.seen
    assert [h.index for h in runs[64].hits] == [h.index for h in runs[1].hits]
    assert [h.cold for h in runs[64].hits] == [h.cold for h in runs[1].hits]
    assert runs[64].repeats_skipped == runs[1].repeats_skipped
    # the blend learned from every target's own list, as in the per-event replay
    assert (many.inner.pipeline.stats["blend_updates"]
            == pytest.approx(one.inner.pipeline.stats["blend_updates"], rel=0.1))
    assert many.inner.pipeline.stats["blend_updates"] > 50


def test_a_batch_ranks_before_it_learns_and_learns_in_stream_order() -> None:
    ds = world(60)
    cat = catalog_for(ds)
    order: list[tuple[str, str]] = []

    class Spy(PopularityBaseline):
        def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
            order.extend(("rank", r.person) for r in requests)
            return super().rank(requests)

        def learn(self, person: str, event: Event, session: SessionState) -> None:
            order.append(("learn", event.event_id))
            super().learn(person, event, session)

    run = replay(ds, Spy(cat), cat, progress=False, batch_size=25)
    kinds = [k for k, _ in order]
    # 60 events in batches of 25: rank*, learn*25, rank*, learn*25, rank*, learn*10
    blocks = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
    assert blocks == ["rank", "learn"] * 3
    assert [e for k, e in order if k == "learn"] == [e.event_id for e in ds.events]
    assert len(run.hits) == kinds.count("rank")


def test_batched_replay_never_learns_a_target_before_ranking_it() -> None:
    """With a batch as long as the stream, popularity knows nothing when it ranks."""
    ds = world(100)
    cat = catalog_for(ds)
    run = replay(ds, PopularityBaseline(cat), cat, progress=False, batch_size=1000)
    assert all(h.rank == 0 for h in run.hits)


def test_batch_size_is_checked() -> None:
    ds = world(10)
    cat = catalog_for(ds)
    with pytest.raises(ValueError):
        replay(ds, PopularityBaseline(cat), cat, progress=False, batch_size=0)
    with pytest.raises(ValueError):
        replay(ds, PopularityBaseline(cat), cat, progress=False, batch_size=2, learn_first=True)


def test_predict_many_matches_predict_one_and_leaves_the_same_model() -> None:
    rng = random.Random(1)
    items = [f"shop:{i}" for i in range(40)]
    a, b = PreferenceModel(seed=5), PreferenceModel(seed=5)
    for m in (a, b):
        r = random.Random(2)
        for _ in range(300):
            m.learn_positive(f"p{r.randrange(6)}", items[r.randrange(30)], items)
    # known and unknown persons and items (River creates those on the fly), duplicates
    for person in ["p1", "p3", "new-1", "p1", "new-2"]:
        asked = [rng.choice([*items, "shop:x", "shop:y", "shop:z"]) for _ in range(25)]
        many = a.predict_many(person, asked)
        one = np.clip(np.array([b.predict_one({"person": person, "item": i}) for i in asked],
                               np.float32), 0, 1)
        assert many.dtype == np.float32 and many.shape == (len(asked),)
        np.testing.assert_allclose(many, one, atol=1e-6)
    assert a.predict_many("p1", []).shape == (0,)
    # the entries River created, in the same order and with the same random draws
    for attr in ("u_latents", "i_latents", "u_biases", "i_biases"):
        da, db = getattr(a._mf, attr), getattr(b._mf, attr)
        assert list(da) == list(db)
        for k in da:
            np.testing.assert_array_equal(da[k], db[k])
    # and so they keep learning the same way
    for m in (a, b):
        m.learn_positive("new-1", "shop:x", items)
    np.testing.assert_allclose(a.predict_many("new-1", items),
                               b.predict_many("new-1", items), atol=1e-6)


def twin_models() -> tuple[list[str], PreferenceModel, PreferenceModel]:
    """20 items and two River models that learned the same: items 0-9 from persons p0-p3."""
    items = [f"shop:{i}" for i in range(20)]
    a, b = PreferenceModel(seed=5), PreferenceModel(seed=5)
    for m in (a, b):
        for n in range(60):
            m.learn_positive(f"p{n % 4}", items[n % 10], items[:10])
    return items, a, b

def test_predict_many_with_cached_rows_fills_them_and_answers_the_same() -> None:
    items, a, b = twin_models()
    asked = [*items[5:15], "shop:new", items[7]]  # known, seen only as negatives, unseen
    rows = np.full(len(asked), -1, np.int64)  # a caller's cache, empty at first
    first = a.predict_many("p1", asked, rows)
    assert (rows >= 0).all() and rows[1] != rows[0] and rows[-1] == rows[2]
    again = a.predict_many("p1", asked, rows.copy())  # every row known: no lookups
    want = b.predict_many("p1", asked)
    assert first.tolist() == want.tolist() == again.tolist()
    assert list(a._mf.i_latents) == list(b._mf.i_latents)  # created in the same order


def test_predict_many_without_creating_changes_nothing_and_scores_the_unseen_at_the_prior() -> None:
    items, a, b = twin_models()
    asked = [items[3], "shop:new", items[7]]  # known, unseen, known
    quiet = a.predict_many("p1", asked, create=False)
    assert list(a._mf.i_latents) == list(b._mf.i_latents)  # nothing created...
    np.testing.assert_array_equal(a._mf.i_latents[items[3]], b._mf.i_latents[items[3]])
    loud = b.predict_many("p1", asked)  # ...so b draws the same as a would have
    assert quiet[0] == loud[0] and quiet[2] == loud[2]  # the known items: the same floats
    prior = a._mf.global_mean.get() + a._mf.u_biases["p1"]
    assert quiet[1] == np.float32(np.clip(prior, 0, 1))  # the unseen one: its prior mean
    assert a.predict_many("nobody", asked, create=False).tolist() == [
        np.float32(np.clip(a._mf.global_mean.get() + a._mf.i_biases[items[3]], 0, 1)),
        np.float32(np.clip(a._mf.global_mean.get(), 0, 1)),
        np.float32(np.clip(a._mf.global_mean.get() + a._mf.i_biases[items[7]], 0, 1)),
    ]
    assert "nobody" not in a._mf.u_biases and "nobody" not in a._mf.u_latents

def test_evaluate_notes_the_batch_size() -> None:
    from models.evaluation import evaluate

    ds = world(80)
    result = evaluate(ds, ENCODER, models=["popularity"], progress=False, batch_size=16)
    assert result["batch_size"] == 16
    assert any("batch size 16" in n for n in result["notes"])

