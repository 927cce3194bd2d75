"""The models a replay compares: the full pipeline (:class:`BlendRecommender`) and the
baselines.

The baselines share the :class:`Recommender` interface (``rank`` / ``learn``) and reuse the
pipeline's own signal classes: most popular (:class:`~models.signals.Popularity`), item
co-visitation (:class:`~models.signals.CoVisitation`, with the pipeline's time decay),
item-based collaborative filtering (:class:`~models.signals.ItemKNN`), EASE's closed-form
item-item weights (:class:`~models.ease.Ease`), co-visitation over every
consumed item, disliked ones included (``covisit-consumed``, the blend's ``consumed_covisit``
signal alone), River BiasedMF (:class:`~models.preference.PreferenceModel`), text similarity
(the catalog's embeddings) and the person's other platforms alone (``cross-history``: items here
co-visited with their items elsewhere, then the most popular), which measures what a newcomer's
history elsewhere says about them beyond popularity.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from models.catalog import Catalog
from models.ease import Ease
from models.events import Event
from models.pipeline import (
    EVENT_WEIGHT,
    Pipeline,
    PipelineConfig,
    RankRequest,
    Shown,
    apply_to_session,
    is_new_consumption,
)
from models.preference import PreferenceModel
from models.session import MAX_RECENT, Excluded, SessionState
from models.signals import CoVisitation, ItemKNN, PersonKNN, Popularity

DEPTH = 200  # how deep a baseline ranks (for MRR)
DEFAULT_CONFIG = PipelineConfig()


class Recommender(Protocol):
    name: str

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        """Item keys best first, one list per request (consumed items already filtered)."""
        ...

    def learn(self, person: str, event: Event, session: SessionState) -> None:
        """Apply one event; keeps ``session`` up to date like :meth:`Pipeline.learn` does."""
        ...


class BlendRecommender:
    """The full pipeline: every signal, the ranking head if any, the adaptive blend."""

    def __init__(self, pipeline: Pipeline, name: str = "blend") -> None:
        self.pipeline = pipeline
        self.name = name
        self.config = pipeline.config
        # The blend learns from the list it showed for an event (Pipeline._feedback, one per
        # person and platform). A batch may rank the same person several times before it
        # learns any of those events, so each ranking's entry is taken out as it is made and
        # put back just before its own event is learned (see :meth:`before_learn`).
        self._captured: list[Shown] = []
        remember = pipeline._remember_for_feedback

        def capture(ranking: Any) -> None:
            remember(ranking)
            key = (ranking.request.person, ranking.request.platform)
            self._captured.append(pipeline._feedback.pop(key))

        setattr(pipeline, "_remember_for_feedback", capture)  # noqa: B010 (instance hook)
        self._slots: list[tuple[tuple[str, str], Shown]] = []

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        self._captured = []
        rankings = self.pipeline.recommend(requests)
        self._slots = [
            ((r.person, r.platform), f) for r, f in zip(requests, self._captured, strict=True)
        ]
        return [r.keys for r in rankings]

    def probe(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        """Rank without changing anything (:meth:`Pipeline.recommend`'s ``quiet``): the
        replay goes on exactly as without this call."""
        return [r.keys for r in self.pipeline.recommend(requests, quiet=True)]

    def before_learn(self, slot: int | None) -> None:
        """The next event learned was ranked as request ``slot`` of the last :meth:`rank`."""
        if slot is not None:
            key, entry = self._slots[slot]
            self.pipeline._feedback[key] = entry

    def learn(self, person: str, event: Event, session: SessionState) -> None:
        self.pipeline.learn(person, event, session)

    def weights(self) -> dict[str, dict[str, float]]:
        return self.pipeline.blends.snapshot()


class _Baseline:
    """Session bookkeeping shared by the baselines: the same updates Pipeline.learn makes."""

    name = "baseline"

    def __init__(self, catalog: Catalog, config: PipelineConfig = DEFAULT_CONFIG) -> None:
        self.catalog = catalog
        self.config = config

    def learn(self, person: str, event: Event, session: SessionState) -> None:
        key = apply_to_session(session, event, self.catalog, self.config)
        if key is not None:
            self.learn_positive(person, key, event, EVENT_WEIGHT[event.type])

    def learn_positive(self, person: str, key: str, event: Event, weight: float) -> None:
        raise NotImplementedError

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        raise NotImplementedError

    @staticmethod
    def _filter(keys: Iterable[str], exclude: Excluded) -> list[str]:
        out = []
        for k in keys:
            if k not in exclude:
                out.append(k)
                if len(out) == DEPTH:
                    break
        return out


class PopularityBaseline(_Baseline):
    """Most popular items of the platform (decayed counts, as the pipeline's signal)."""

    name = "popularity"

    def __init__(self, catalog: Catalog, config: PipelineConfig = DEFAULT_CONFIG) -> None:
        super().__init__(catalog, config)
        self.popularity = Popularity(config.popularity_half_life_s)

    def learn_positive(self, person: str, key: str, event: Event, weight: float) -> None:
        self.popularity.learn_one(key, event.platform, event.ts, weight)

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        return [
            self._filter(self.popularity.top(r.platform, DEPTH + len(r.exclude), r.ts), r.exclude)
            for r in requests
        ]


class CoVisitationBaseline(_Baseline):
    """Items co-visited with the person's recent items (any platform, newest last)."""

    name = "covisit"

    def __init__(self, catalog: Catalog, config: PipelineConfig = DEFAULT_CONFIG) -> None:
        super().__init__(catalog, config)
        self.covisitation = CoVisitation(half_life_s=config.covisit_half_life_s)
        self.recent: dict[str, list[str]] = defaultdict(list)

    def learn_positive(self, person: str, key: str, event: Event, weight: float) -> None:
        self.covisitation.learn_one(_remember(self.recent[person], key), event.ts)

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        out = []
        for r in requests:
            scores = self.covisitation.candidates(
                self.recent.get(r.person, []), r.platform, DEPTH + len(r.exclude)
            )
            out.append(self._filter(scores, r.exclude))  # best first already
        return out


class CrossHistoryBaseline(CoVisitationBaseline):
    """What the person's *other* platforms alone say about this one: items here co-visited
    (in everyone's histories across platforms) with their recent items elsewhere, then the
    platform's most popular. Its cold-start columns against :class:`PopularityBaseline`'s
    show how much a newcomer's history elsewhere tells about them here beyond popularity."""

    name = "cross-history"

    def __init__(self, catalog: Catalog, config: PipelineConfig = DEFAULT_CONFIG) -> None:
        super().__init__(catalog, config)
        self.popularity = Popularity(config.popularity_half_life_s)

    def learn_positive(self, person: str, key: str, event: Event, weight: float) -> None:
        super().learn_positive(person, key, event, weight)
        self.popularity.learn_one(key, event.platform, event.ts, weight)

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        out = []
        for r in requests:
            here = f"{r.platform}:"
            elsewhere = [k for k in self.recent.get(r.person, []) if not k.startswith(here)]
            depth = DEPTH + len(r.exclude)
            scores = self.covisitation.candidates(elsewhere, r.platform, depth)
            popular = self.popularity.top(r.platform, depth, r.ts)
            out.append(self._filter(dict.fromkeys([*scores, *popular]), r.exclude))
        return out


class PreferenceBaseline(_Baseline):
    """River BiasedMF alone (:class:`~models.preference.PreferenceModel`, as in the pipeline).

    Ranks every item the model has a factor for; to make that affordable it scores from a numpy
    mirror of River's item biases and factors, whose rows are refreshed for each positive at
    once and for all items every ``refresh`` events (sampled negatives lag by at most that).
    """

    name = "river-mf"

    def __init__(
        self, catalog: Catalog, config: PipelineConfig = DEFAULT_CONFIG, refresh: int = 1000
    ) -> None:
        super().__init__(catalog, config)
        self.model = PreferenceModel(seed=config.seed)
        self.refresh = refresh
        self._row: dict[str, int] = {}
        self._keys: list[str] = []
        self._plat: dict[str, list[int]] = defaultdict(list)
        self._lat = np.zeros((1024, self.model.n_factors), np.float64)
        self._bias = np.zeros(1024, np.float64)
        self._since = 0

    def _sync(self, key: str) -> None:
        mf = self.model._mf
        row = self._row.get(key)
        if row is None:
            row = self._row[key] = len(self._keys)
            self._keys.append(key)
            self._plat[key.split(":", 1)[0]].append(row)
            if row == len(self._bias):
                self._lat = np.concatenate([self._lat, np.zeros_like(self._lat)])
                self._bias = np.concatenate([self._bias, np.zeros_like(self._bias)])
        self._lat[row] = mf.i_latents[key]
        self._bias[row] = mf.i_biases[key]

    def learn_positive(self, person: str, key: str, event: Event, weight: float) -> None:
        self.model.learn_positive(person, key, self.catalog.platform_keys(event.platform))
        self._sync(key)
        self._since += 1
        if self._since >= self.refresh:
            self._since = 0
            for k in list(self.model._mf.i_latents):
                self._sync(str(k))

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        mf = self.model._mf
        out: list[list[str]] = []
        for r in requests:
            rows = np.asarray(self._plat.get(r.platform, []), np.int64)
            if not len(rows):
                out.append([])
                continue
            user = mf.u_latents.get(r.person)
            scores = self._bias[rows].copy()
            if user is not None:
                scores += self._lat[rows] @ np.asarray(user, np.float64)
            n = min(len(rows), DEPTH + len(r.exclude))
            top = np.argpartition(-scores, n - 1)[:n]
            top = top[np.argsort(-scores[top], kind="stable")]
            out.append(self._filter((self._keys[rows[i]] for i in top), r.exclude))
        return out


class ContentBaseline(_Baseline):
    """Text-embedding similarity alone: the person's same-platform interest plus the context."""

    name = "content"

    def learn_positive(self, person: str, key: str, event: Event, weight: float) -> None:
        pass  # the session's interest vectors are the whole model

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        zero = np.zeros(self.catalog.dim, np.float32)
        queries = []
        for r in requests:
            interest = r.session.interest.get(r.platform, zero)
            ctx = r.context if r.context is not None else zero
            queries.append(_unit(_unit(interest) + ctx))
        out = []
        for r, q in zip(requests, queries, strict=True):
            rows, _ = self.catalog.neighbours(q[None, :], r.platform, DEPTH + len(r.exclude))
            out.append(self._filter((self.catalog.keys[i] for i in rows[0]), r.exclude))
        return out


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    out: np.ndarray = (v / n).astype(np.float32) if n > 1e-12 else v.astype(np.float32)
    return out


class ItemKNNBaseline(_Baseline):
    """Items most similar to the person's recent items on the platform (item-based CF)."""

    name = "item-knn"

    def __init__(self, catalog: Catalog, config: PipelineConfig = DEFAULT_CONFIG) -> None:
        super().__init__(catalog, config)
        self.item_knn = ItemKNN()
        self.recent: dict[tuple[str, str], list[str]] = defaultdict(list)

    def learn_positive(self, person: str, key: str, event: Event, weight: float) -> None:
        self.item_knn.learn_one(_remember(self.recent[person, event.platform], key))

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        out = []
        for r in requests:
            scores = self.item_knn.candidates(
                self.recent.get((r.person, r.platform), []), r.platform, DEPTH + len(r.exclude)
            )
            out.append(self._filter(scores, r.exclude))  # best first already
        return out


class PersonKNNBaseline(_Baseline):
    """What the people most like the person chose on the platform (user-based kNN over their
    recent items, any platform): the blend's ``person_knn`` signal on its own."""

    name = "person-knn"

    def __init__(self, catalog: Catalog, config: PipelineConfig = DEFAULT_CONFIG) -> None:
        super().__init__(catalog, config)
        self.person_knn = PersonKNN()
        self.recent: dict[str, list[str]] = defaultdict(list)  # any platform, newest last

    def learn_positive(self, person: str, key: str, event: Event, weight: float) -> None:
        self.person_knn.learn_one(person, key)
        _remember(self.recent[person], key)

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        keys = self.person_knn.keys
        out = []
        for r in requests:
            found = self.person_knn.candidate_ids_many(
                [(r.person, self.recent.get(r.person, []))], r.platform, DEPTH + len(r.exclude)
            )[0]
            out.append(self._filter([keys[i] for i in found.ids.tolist()], r.exclude))
        return out


class EaseBaseline(_Baseline):
    """EASE's closed-form item-item weights over the person's items on the platform, refitted
    as the stream grows (:class:`~models.ease.Ease`). Not in the blend: as a signal there it
    changed nothing measurable and slowed the replay (docs/evaluation.md, stop 38)."""

    name = "ease"

    def __init__(self, catalog: Catalog, config: PipelineConfig = DEFAULT_CONFIG) -> None:
        super().__init__(catalog, config)
        self.ease = Ease(
            config.ease_l2, config.ease_min_count, config.ease_max_items, config.ease_first_fit
        )

    def learn_positive(self, person: str, key: str, event: Event, weight: float) -> None:
        self.ease.learn_one(person, key, event.platform)

    def rank(self, requests: Sequence[RankRequest]) -> list[list[str]]:
        keys = self.ease.keys
        out = []
        for r in requests:
            found = self.ease.candidate_ids_many(
                [self.ease.items_of(r.person, r.platform)], r.platform, DEPTH + len(r.exclude)
            )[0]
            out.append(self._filter([keys[i] for i in found.ids.tolist()], r.exclude))
        return out


class ConsumedCoVisitationBaseline(CoVisitationBaseline):
    """Co-visitation over everything the person consumed, disliked items included: the
    blend's ``consumed_covisit`` signal on its own, so the blend is compared with a baseline
    that sees the same sequence (on MovieLens it beats the positives-only one)."""

    name = "covisit-consumed"

    def learn(self, person: str, event: Event, session: SessionState) -> None:
        new_consumption = is_new_consumption(session, event)
        apply_to_session(session, event, self.catalog, self.config)
        if new_consumption:
            self.covisitation.learn_one(
                _remember(self.recent[person], session.consumed[-1]), event.ts
            )


def _remember(recent: list[str], key: str) -> list[str]:
    """``key`` becomes the newest of ``recent`` (once), as in a session; returns ``recent``."""
    if key in recent:
        recent.remove(key)
    recent.append(key)
    del recent[:-MAX_RECENT]
    return recent


BASELINES: dict[str, type[_Baseline]] = {
    "popularity": PopularityBaseline,
    "covisit": CoVisitationBaseline,
    "covisit-consumed": ConsumedCoVisitationBaseline,
    "cross-history": CrossHistoryBaseline,
    "item-knn": ItemKNNBaseline,
    "person-knn": PersonKNNBaseline,
    "ease": EaseBaseline,
    "river-mf": PreferenceBaseline,
    "content": ContentBaseline,
}
