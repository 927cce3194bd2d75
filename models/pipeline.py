"""The recommendation pipeline: pure Python, no Kafka. The event agent calls :meth:`handle`.

For every batch of messages routed to persons it (1) learns: applies each event to the
person's session, to the global signals (popularity, co-visitation, item-kNN, people alike, and
co-visitation and next-item transitions over everything consumed; item texts also feed a
lexical TF-IDF index, :mod:`models.lexical`), to the River preference
model, and feeds the blend the outcome of the list it last showed; then (2) ranks: generates
candidates for each event's platform, scores all of them across the batch in one ONNX call,
blends the signals with the platform's adaptive weights, reorders the blend's top 50 with the
reranker's trees once they are fitted (:mod:`models.rerank`), and keeps the top K.

Replay evaluation uses the same two halves prequentially: ``recommend`` then ``learn``.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter, OrderedDict
from collections.abc import MutableMapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any, Protocol, get_args, get_type_hints

import numpy as np

from models import topn
from models.blend import SIGNALS, AdaptiveBlend, PlatformBlends
from models.catalog import Catalog, availability
from models.errors import BatchFailedError, ConfigError, InvalidEventError
from models.events import (
    CONSUMED_EVENTS,
    ITEM_EVENTS,
    CatalogItem,
    Event,
    EventType,
    Recommendation,
    ScoredItem,
    item_key,
)
from models.lexical import LexicalIndex, best, warm_up
from models.preference import PreferenceModel
from models.ranker import DENSE_FEATURES
from models.rerank import Reranker
from models.session import Excluded, LastRecommendation, SessionState
from models.signals import (
    CoVisitation,
    ItemKNN,
    Neighbours,
    NeighbourSignal,
    PersonKNN,
    Popularity,
    Transitions,
)


class Encoder(Protocol):
    version: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class Scorer(Protocol):
    version: str
    hidden: int

    def item_hidden(self, items: np.ndarray) -> np.ndarray: ...

    def score(
        self,
        person: np.ndarray,
        context: np.ndarray,
        item_hidden: np.ndarray,
        dense: np.ndarray,
        request: np.ndarray,
    ) -> np.ndarray: ...


class SequenceScorer(Protocol):
    """:class:`models.sequence.SequenceModel`'s serving interface."""

    version: str
    length_same: int
    length_other: int

    def arrange(
        self, same: Sequence[int], other: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def item_vectors(self, items: np.ndarray) -> np.ndarray: ...

    def queries(
        self, histories: Sequence[np.ndarray], same: Sequence[np.ndarray]
    ) -> np.ndarray: ...


# --- messages on the person-keyed topic -----------------------------------------------------


@dataclass(frozen=True)
class PersonEvent:
    """An app event, routed to the person it belongs to."""

    person: str
    event: Event


@dataclass(frozen=True)
class Handoff:
    """``person`` was linked to ``to``: move its state there."""

    person: str
    to: str


@dataclass(frozen=True)
class Merge:
    """State of a linked alias, to be merged into ``person``."""

    person: str
    state: SessionState


@dataclass(frozen=True)
class Consent:
    """The person's latest choice; identify events reach the person from several topics in
    no particular order, so the one with the newest event time wins."""

    person: str
    consent: bool
    ts: float = 0.0


PersonMessage = PersonEvent | Handoff | Merge | Consent


@dataclass(frozen=True)
class PipelineConfig:
    top_k: int = 10
    candidates_per_source: int = 50
    interest_half_life_s: float = 3 * 24 * 3600.0
    # 7 days made popularity count a thin slice of recent traffic: the popularity baseline on
    # MovieLens 0.021 (30 days 0.031, 90 0.036, 365 0.039, no decay 0.033), and on Amazon,
    # ranked after the stream, leave-last-out 0.002 / 0.016 (365 days: 0.010 / 0.025)
    popularity_half_life_s: float = 365 * 24 * 3600.0
    # co-visitation and transitions: older pairs fade (see models.signals.NeighbourSignal)
    covisit_half_life_s: float | None = 365 * 24 * 3600.0
    fresh_half_life_s: float = 7 * 24 * 3600.0
    cross_platform: bool = True  # off: ignore other platforms even with consent (ablation)
    covisit_candidates: int = 100
    item_knn_candidates: int = 50
    transition_candidates: int = 50
    person_knn_candidates: int = 50
    lexical_candidates: int = 50
    # the sequence model's nearest items (with one loaded): on Amazon its 50 lowered the
    # blend's stream NDCG@10 to 0.0733 from 0.0744 with its signal alone (without a model 0.0736)
    sequence_candidates: int = 0
    # people alike (models.signals.PersonKNN): how many vote, and how many of each one's
    # latest items (their cost grows with the product)
    person_knn_neighbours: int = 100
    person_knn_items: int = 30
    # text neighbours of the profile and context: with the search in ONNX Runtime 100 cost
    # little, and gave MovieLens 0.0879 vs 0.0877, Amazon 0.0706 vs 0.0693 (these replays)
    neighbour_candidates: int = 100
    # The other platforms' profile counts as this many items' worth of history here: it
    # shapes a thin history and fades as the person's own grows (shrinkage).
    cross_prior: float = 1.0
    # the blend's served weights move this share of the way to the SGD iterate per update
    # (models.blend.AdaptiveBlend's ``averaging``). A 4x longer average (0.0005) changed
    # nothing measurable: MovieLens 0.0927 vs 0.0933, Amazon carved split's leave-last-out
    # +2.6 % with seed 7 and -0.4 % with seed 8, its stream -0.3 / -0.1 %
    blend_averaging: float = 0.002
    feedback_tail: int = 50  # lower-ranked candidates remembered, to learn the blend from
    # (person, platform) rankings kept for that, LRU; each holds its full feature matrix for
    # the reranker (~20 kB for 300 candidates)
    feedback_cache: int = 5_000
    # Second stage (models.rerank): trees refitted every this many answered lists; None: off
    rerank_every: int | None = 4000
    # ...and rescore the blend's top this many (the trees cost ~6x less than on all ~300;
    # on MovieLens the blend's 50th rarely reaches the top 10: NDCG@10 0.0877 vs 0.0878),
    # top_k at least: every published item has the trees' probability
    rerank_top: int = 50
    rerank_in_background: bool = False  # the worker: fit in another process, keep serving
    # ...and serve its trees this many answered lists after the fit started, waiting for it if
    # need be (a replay: reproducible, yet fitting beside the stream); None: once ready
    rerank_serve_after: int | None = None
    # EASE (models.ease, the ``ease`` baseline): its ridge penalty, the fewest people a
    # fitted item needs, the most items one fit keeps and a platform's positives before its
    # first fit. Not a blend signal: as one it moved nothing beyond the noise on Amazon
    # (valid and carved splits) or MovieLens and made the replay 30-43 % slower
    # (docs/evaluation.md, stop 38)
    ease_l2: float = 100.0
    ease_min_count: int = 3
    ease_max_items: int = 6000
    ease_first_fit: int = 1000
    seed: int = 7

    def with_overrides(self, pairs: Sequence[str]) -> PipelineConfig:
        """A copy with ``KEY=VALUE`` pairs applied (``streamrec evaluate --set``), each value
        read as its field's type; ``none`` turns off a field that may be None.

        Examples
        --------
        >>> c = PipelineConfig().with_overrides(["rerank_top=100", "rerank_every=none"])
        >>> c.rerank_top, c.rerank_every
        (100, None)
        >>> PipelineConfig().with_overrides(["rerank_topp=1"])
        Traceback (most recent call last):
        ...
        models.errors.ConfigError: unknown pipeline setting 'rerank_topp' (settings: ...)
        """
        hints = get_type_hints(PipelineConfig)
        names = [f.name for f in fields(self)]
        changes: dict[str, Any] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"{pair!r}: expected KEY=VALUE")
            if key not in names:
                raise ConfigError(
                    f"unknown pipeline setting {key!r} (settings: {', '.join(names)})"
                )
            changes[key] = _parse_setting(key, hints[key], text.strip())
        return replace(self, **changes)


def _parse_setting(key: str, kind: object, text: str) -> object:
    """``text`` as a value of a :class:`PipelineConfig` field annotated ``kind``."""
    options = get_args(kind) or (kind,)  # ``int | None``: (int, NoneType)
    types = [t for t in options if t is not type(None)]
    if text.lower() == "none":
        if len(types) == len(options):
            raise ConfigError(f"{key} cannot be none")
        return None
    (base,) = types
    try:
        if base is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        value = base(text)
    except ValueError as e:
        raise ConfigError(f"{key}={text!r}: expected {getattr(base, '__name__', base)}") from e
    if base in (int, float):
        may_be_zero = key in _MAY_BE_ZERO
        if not (math.isfinite(value) and (value >= 0 if may_be_zero else value > 0)):
            bound = ">= 0" if may_be_zero else "> 0"
            raise ConfigError(f"{key}={text!r}: expected a finite number {bound}")
    return value


#: Numeric settings that may be 0 (a candidate source turned off, no prior, the first seed);
#: every other one (half-lives, sizes, top_k) must be positive.
_MAY_BE_ZERO = frozenset(
    {
        "candidates_per_source",
        "covisit_candidates",
        "item_knn_candidates",
        "transition_candidates",
        "person_knn_candidates",
        "lexical_candidates",
        "sequence_candidates",
        "neighbour_candidates",
        "cross_prior",
        "feedback_tail",
        "rerank_serve_after",
        "seed",
    }
)


#: ``nearest``: a candidate's best text similarity to one of the person's this many latest
#: items here (a profile's mean blurs a person with several interests)
NEAREST_OF = 10

#: How strongly each event type says "I like this".
EVENT_WEIGHT = {
    EventType.VIEW: 0.5,
    EventType.CLICK: 1.0,
    EventType.CONSUME: 2.0,
    EventType.PURCHASE: 2.0,
    EventType.RATING: 1.5,
}


@dataclass
class RankRequest:
    person: str
    platform: str
    session: SessionState
    context: np.ndarray | None = None  # embedding of what the person is doing right now
    exclude: Excluded = frozenset()
    ts: float = 0.0  # event time: item freshness is measured from it
    extra: tuple[str, ...] = ()  # always scored (training a head on known positives)


@dataclass(frozen=True)
class Shown:
    """A list as the blend ranked it, kept until the person's next engagement answers it: all
    candidates (the reranker learns from them) and the positions the blend learns from."""

    keys: list[str]  # the blend's order
    features: np.ndarray  # [len(keys), len(SIGNALS)], the blend's order
    kept: list[int]  # the top K, the K shown (if reranked) and a sample of the rest, ascending
    request_features: np.ndarray  # the reranker's inputs of the whole list (_request_features)


@dataclass
class Ranking:
    request: RankRequest
    keys: list[str]  # all candidates, best first
    features: np.ndarray  # [len(keys), len(SIGNALS)]
    scores: np.ndarray  # the reranker's probability once it is fitted, else the blend's sum
    contributions: np.ndarray  # features * weights: the blend's terms
    history_platforms: list[str]
    person_vector: np.ndarray  # what the ranking head saw, for training it offline
    context_vector: np.ndarray
    request_features: np.ndarray  # the reranker's inputs of the whole list (_request_features)
    # the candidates and features in the blend's order, where the reranker changed it
    by_blend: tuple[list[str], np.ndarray] | None = None

    def top(self, k: int) -> list[str]:
        return self.keys[:k]

    def head_inputs(self, i: int) -> np.ndarray:
        """The dense features the ranking head saw for candidate ``i`` (column 0 of
        ``features`` is the head's own score; the blend-only signals come after them)."""
        return self.features[i, 1 : 1 + len(DENSE_FEATURES)]


@dataclass(frozen=True)
class _Scored:
    """Candidates of one source: catalog rows (distinct) and their scores, best first (the
    best is 1), and the best one's unscaled score (:attr:`models.signals.Neighbours.strength`)."""

    rows: np.ndarray
    scores: np.ndarray
    strength: float = 0.0

    def at(self, rows: np.ndarray, scratch: np.ndarray) -> np.ndarray:
        """The score of each of ``rows`` (0 where this source did not propose it), float32.
        ``scratch``: float32 zeros, one per catalog row, left as zeros (a scatter and a gather
        instead of sorting this source's rows for every request)."""
        if not len(self.rows):
            return np.zeros(len(rows), np.float32)
        scratch[self.rows] = self.scores
        out = scratch[rows]
        scratch[self.rows] = 0.0
        return out

    def shares(self, scaled: np.ndarray) -> np.ndarray:
        """The unscaled scores of candidates whose scaled ones :meth:`at` gave as ``scaled``,
        square-rooted: shares of a row's mass are mostly a few percent, and the root spreads
        them over the range the blend weighs."""
        out: np.ndarray = np.sqrt(scaled * np.float32(self.strength))
        return out


_NOTHING = _Scored(np.zeros(0, np.int64), np.zeros(0, np.float64))


class _CatalogRows:
    """A signal's own item ids → catalog rows. Both only ever grow and an item keeps its id
    and row, so the map is extended, never rebuilt. (-1: not in the catalog.)"""

    def __init__(self, catalog: Catalog, keys: list[str]) -> None:
        self._catalog = catalog
        self._keys = keys  # the signal's list, read as it grows
        self._rows = np.zeros(0, np.int64)

    def __call__(self, found: Neighbours) -> _Scored:
        ids, scores, strength = found
        if len(self._rows) < len(self._keys):
            index = self._catalog.index
            new = [index.get(k, -1) for k in self._keys[len(self._rows) :]]
            self._rows = np.concatenate([self._rows, np.array(new, np.int64)])
        rows = self._rows[ids]
        known = rows >= 0
        if not known.all():
            rows, scores = rows[known], scores[known]
        return _Scored(rows, scores, strength)


class _RowMirrors:
    """Arrays with one entry per catalog row (grown with it by :meth:`fit`): what ranking
    would otherwise look up by key for each of a batch's thousands of candidates, kept by
    row so one numpy gather reads it, plus the ranking's scratch space."""

    def __init__(self) -> None:
        self.scores = np.zeros(0, np.float32)  # _Scored.at's scratch, left as zeros
        self.first = np.zeros(0, np.int64)  # scratch: a candidate's first place in a list
        self.popularity = np.zeros(0, np.float64)  # Popularity.scaled of the row's key
        self.popularity_rebases = 0  # Popularity.rebases the copy above is from
        self.preference = np.zeros(0, np.int64)  # the row's PreferenceModel row, -1: unknown
        # the ranking head's item tower output for the row's vector, valid where its stamp is
        # the row's Catalog.written, and only for the head it came from
        self.item_hidden = np.zeros((0, 0), np.float32)
        self.item_hidden_stamp = np.zeros(0, np.int64)
        self.item_hidden_of: object = None

    def fit(self, rows: int) -> None:
        """Make room for ``rows`` catalog rows (doubling, new entries at their empty value)."""
        if len(self.scores) >= rows:
            return
        old = len(self.scores)
        size = 2 * rows
        for name, empty in (
            ("scores", 0),
            ("first", 0),
            ("popularity", 0),
            ("preference", -1),
            ("item_hidden", 0),
            ("item_hidden_stamp", -1),
        ):
            before = getattr(self, name)
            grown = np.full((size, *before.shape[1:]), empty, before.dtype)
            grown[:old] = before
            setattr(self, name, grown)

    def item_hidden_for(self, head: Scorer, rows: np.ndarray, catalog: Catalog) -> np.ndarray:
        """``head``'s item tower output for catalog ``rows``, computed only for rows it has
        not seen with their current vector (a new head starts afresh)."""
        if self.item_hidden_of is not head or self.item_hidden.shape[1] != head.hidden:
            self.item_hidden = np.zeros((len(self.scores), head.hidden), np.float32)
            self.item_hidden_stamp[:] = -1
            self.item_hidden_of = head
        written = catalog.written
        stale = np.unique(rows[self.item_hidden_stamp[rows] != written[rows]])
        if len(stale):
            self.item_hidden[stale] = head.item_hidden(catalog.vectors[stale])
            self.item_hidden_stamp[stale] = written[stale]
        return self.item_hidden[rows]


class _SequenceItems:
    """The sequence model's item vectors by catalog row (its item tower's output, computed
    once per row and vector, afresh for a new model) and, per platform, a search matrix of
    them in the catalog's platform order with its availability column (see
    :func:`models.catalog.masked_search`), grown and written in place as the catalog changes,
    like the catalog's own."""

    def __init__(self) -> None:
        self.vectors = np.zeros((0, 0), np.float32)
        self.stamp = np.zeros(0, np.int64)
        self.of: object = None
        # platform → its matrix, the rows written into it, the catalog's platform version
        # its availability column is of
        self._search: dict[str, tuple[np.ndarray, int, int]] = {}

    def refresh(self, model: SequenceScorer, catalog: Catalog) -> None:
        n = len(catalog)
        if self.of is not model or len(self.vectors) < n:
            size = max(2 * n, 1024)
            fresh = self.of is not model
            vectors = np.zeros((size, catalog.dim), np.float32)
            stamp = np.full(size, -1, np.int64)
            if not fresh:
                vectors[: len(self.vectors)] = self.vectors
                stamp[: len(self.stamp)] = self.stamp
            else:
                self._search.clear()
            self.vectors, self.stamp, self.of = vectors, stamp, model
        stale = np.flatnonzero(self.stamp[:n] != catalog.written)
        if len(stale):
            self.vectors[stale] = model.item_vectors(catalog.vectors[stale])
            self.stamp[stale] = catalog.written[stale]
        if len(stale) and self._search:  # rows already in a platform's matrix: written there
            owners = np.array([catalog.platforms[r] for r in stale.tolist()], dtype=object)
            for platform, (matrix, filled, _) in self._search.items():
                mine = stale[owners == platform]
                at = catalog.positions(mine)
                matrix[at[at < filled], :-1] = self.vectors[mine[at < filled]]

    def neighbours(
        self, catalog: Catalog, queries: np.ndarray, platform: str, n: int
    ) -> np.ndarray:
        rows = catalog.rows(platform)
        searchable = catalog.available_count(platform)
        if searchable == 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.int64)
        matrix, filled, version = self._search.get(
            platform, (np.zeros((0, catalog.dim + 1), np.float32), 0, -1)
        )
        if filled < len(rows):  # items joined: their vectors appended
            if len(matrix) < len(rows):
                grown = np.zeros((2 * len(rows), catalog.dim + 1), np.float32)
                grown[:filled] = matrix[:filled]
                matrix = grown
            matrix[filled : len(rows), :-1] = self.vectors[rows[filled:]]
            filled, version = len(rows), -1
        if version != catalog.platform_version(platform):
            matrix[:filled, -1] = availability(catalog.available[rows])
            version = catalog.platform_version(platform)
        self._search[platform] = (matrix, filled, version)
        top, _ = catalog.masked_search(queries, matrix[:filled], min(n, searchable))
        found: np.ndarray = rows[top]
        return found


@dataclass
class _Prepared:
    u_same: np.ndarray  # the person's interest on the request's platform (unit)
    u_cross: np.ndarray  # on the other platforms they allow, summed (unit)
    person: np.ndarray  # what the ranking head sees
    query: np.ndarray  # the text-neighbour retrieval query
    context: np.ndarray  # what the person is doing now (zeros: nothing)
    history: list[str]  # platforms whose history was used
    recent: list[str]  # their recent items here, newest last
    recent_elsewhere: list[str]  # the last few on each other platform they allow
    consumed: list[str]  # the last items they consumed here, liked or not, newest last
    # Filled for the whole batch at once by Pipeline._neighbour_candidates:
    covisit: _Scored = _NOTHING  # co-visited with their recent items on this platform
    cross_covisit: _Scored = _NOTHING  # co-visited with their recent items elsewhere
    item_knn: _Scored = _NOTHING  # liked by the people who liked their recent items here
    transition: _Scored = _NOTHING  # what others consumed right after their last one here
    consumed_covisit: _Scored = _NOTHING  # consumed close to their recent consumed items here
    person_knn: _Scored = _NOTHING  # chosen here by the people most like them
    # catalog rows of their latest NEAREST_OF items here (the ``nearest`` signal)
    recent_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


_NO_ROWS = np.zeros(0, np.int64)


@dataclass
class _Searched:
    """What :meth:`Pipeline._searched` found for a batch, by request index."""

    sequence_queries: np.ndarray | None  # the sequence model's query per request (None: none)
    text: dict[int, np.ndarray] = field(default_factory=dict)  # text-neighbour catalog rows
    sequence: dict[int, np.ndarray] = field(default_factory=dict)  # the queries' nearest rows


@dataclass
class Output:
    recommendations: list[Recommendation] = field(default_factory=list)
    forwards: list[PersonMessage] = field(default_factory=list)
    # messages the pipeline cannot use (an event for an item its catalog does not have, e.g.
    # one not synced yet after a restart; a merged state whose vectors do not fit the catalog),
    # with the reason: reported, not raised, so that the rest of the batch is handled once,
    # and nothing of it is learned twice by a retry
    rejected: list[tuple[PersonMessage, str]] = field(default_factory=list)


class Pipeline:
    def __init__(
        self,
        encoder: Encoder,
        ranker: Scorer | None,
        config: PipelineConfig = PipelineConfig(),
        catalog: Catalog | None = None,
        sequence: SequenceScorer | None = None,
    ) -> None:
        self.encoder = encoder
        self.ranker = ranker
        self.sequence = sequence  # optional: without one its signal is 0 and adds no items
        self._sequence_items = _SequenceItems()
        self.config = config
        # not `catalog or ...`: an empty catalog is falsy (len 0) and must still be used
        self.catalog = catalog if catalog is not None else Catalog(encoder.dim)
        self.popularity = Popularity(config.popularity_half_life_s)
        self.covisitation = CoVisitation(half_life_s=config.covisit_half_life_s)
        self.item_knn = ItemKNN()
        # Over the sequence of everything consumed, liked or not: what people go through next
        # follows what they just had, whatever they thought of it.
        self.transitions = Transitions(half_life_s=config.covisit_half_life_s)
        self.consumed_covisitation = CoVisitation(half_life_s=config.covisit_half_life_s)
        self.person_knn = PersonKNN(
            config.person_knn_neighbours, per_person=config.person_knn_items
        )
        self._covisit_rows = _CatalogRows(self.catalog, self.covisitation.rows.keys)
        self._item_knn_rows = _CatalogRows(self.catalog, self.item_knn.rows.keys)
        self._transition_rows = _CatalogRows(self.catalog, self.transitions.rows.keys)
        self._consumed_covisit_rows = _CatalogRows(
            self.catalog, self.consumed_covisitation.rows.keys
        )
        self._person_knn_rows = _CatalogRows(self.catalog, self.person_knn.keys)
        self.lexical = LexicalIndex()
        warm_up()  # the compiled loops, loaded now rather than on the first event
        topn.warm_up()
        self.preference = PreferenceModel(seed=config.seed)
        make_blend = partial(AdaptiveBlend, averaging=config.blend_averaging)
        make_blend()  # a bad setting is refused now, not at a platform's first event
        self.blends = PlatformBlends(make_blend)
        self.reranker = (
            Reranker(
                config.rerank_every,
                seed=config.seed,
                background=config.rerank_in_background,
                serve_after=config.rerank_serve_after,
            )
            if config.rerank_every
            else None
        )
        self._feedback: OrderedDict[tuple[str, str], Shown] = OrderedDict()
        self._rng = random.Random(config.seed)
        self._mirrors = _RowMirrors()
        self._texts: dict[str, str] = {}  # item key → the text its vector was encoded from
        self.stats = {
            "events": 0,
            "duplicates": 0,
            "recommendations": 0,
            "blend_updates": 0,
            "encoded_items": 0,
            "catalog_entries_skipped": 0,  # undecodable catalog table entries (logged)
        }

    @property
    def model_versions(self) -> dict[str, str]:
        versions = {"encoder": self.encoder.version}
        if self.ranker is not None:
            versions["ranker"] = self.ranker.version
        if self.sequence is not None:
            versions["sequence"] = self.sequence.version
        return versions

    # --- catalog ----------------------------------------------------------------------------

    def add_items(self, items: Sequence[CatalogItem]) -> np.ndarray:
        """Encode a batch of items in one ONNX call and index them; returns the vectors.

        An item whose text has not changed (an availability update, a redelivery) keeps its
        vector and is not encoded again.
        """
        texts = [it.text() for it in items]
        new = [
            i
            for i, (it, t) in enumerate(zip(items, texts, strict=True))
            if self._texts.get(it.key) != t
        ]
        vectors = np.zeros((len(items), self.catalog.dim), dtype=np.float32)
        if new:
            vectors[new] = self.encoder.encode([texts[i] for i in new])
        fresh = set(new)
        for i, it in enumerate(items):
            if i not in fresh:
                vectors[i] = self.catalog.vector(it.key)
            self.index_item(it, vectors[i])
        self.stats["encoded_items"] += len(new)
        return vectors

    def index_item(self, item: CatalogItem, vector: np.ndarray) -> None:
        self.catalog.upsert(
            item.key, item.platform, vector, available=item.available, added_ts=item.ts or 0.0
        )
        self.index_texts([item])

    def index_texts(self, items: Sequence[CatalogItem]) -> None:
        """Index the texts of items already in the catalog (a catalog built elsewhere, from
        vectors computed once: the replay evaluation) for the ``lexical`` signal."""
        for item in items:
            text = item.text()
            self.lexical.upsert(self.catalog.index[item.key], text)
            self._texts[item.key] = text

    def check_event(self, event: Event) -> None:
        """Reject what the pipeline cannot use, before it is routed (→ dead-letter topic)."""
        if event.item is not None:
            key = item_key(event.platform, event.item)
            if key not in self.catalog:
                raise InvalidEventError(
                    f"unknown item {event.item!r} on platform {event.platform!r}"
                )

    def check_state(self, state: SessionState) -> None:
        """Reject a linked person's state that would break every later event of the person it
        is merged into: interest vectors of another length than the catalog's, or not finite.
        """
        for platform, vector in state.interest.items():
            if vector.shape != (self.catalog.dim,):
                raise InvalidEventError(
                    f"merged state: interest on {platform!r} has shape {vector.shape}, "
                    f"the catalog's vectors ({self.catalog.dim},)"
                )
            if not np.isfinite(vector).all():
                raise InvalidEventError(f"merged state: interest on {platform!r} is not finite")

    # --- the stream ------------------------------------------------------------------------

    def handle(
        self,
        batch: Sequence[PersonMessage],
        sessions: MutableMapping[str, SessionState],
        now: float,
        learned: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> Output:
        """Apply a batch of person messages; the recommendations, forwards and rejects.

        ``sessions`` is written only once the whole batch is handled (its states are worked on
        as copies: a failed try leaves them as they were, whatever mapping holds them). A
        failure that is not the input's (a bug) raises :class:`BatchFailedError` with the
        events whose learning had reached the global models by then: a retry passes them as
        ``learned``, and they update only the person's own state (which the failed try never
        wrote).
        """
        done: set[tuple[str, str]] = set(learned)
        try:
            return self._handle(batch, sessions, now, done)
        except Exception as e:
            raise BatchFailedError(
                f"batch of {len(batch)} failed: {type(e).__name__}: {e}", frozenset(done)
            ) from e

    def _handle(
        self,
        batch: Sequence[PersonMessage],
        sessions: MutableMapping[str, SessionState],
        now: float,
        learned: set[tuple[str, str]],
    ) -> Output:
        out = Output()
        # each request with the state its list is remembered in (the one handed off with
        # the person, if a later message of the batch hands them off)
        requests: list[tuple[PersonEvent, RankRequest, SessionState]] = []
        searches = [
            m for m in batch if isinstance(m, PersonEvent) and m.event.type is EventType.SEARCH
        ]
        query_vectors = self.encoder.encode([m.event.query or "" for m in searches])
        query_vector = {id(m): v for m, v in zip(searches, query_vectors, strict=True)}
        later = Counter(m.person for m in batch)
        # Each person's state is read once and written once per batch: a changelog record
        # per write makes this the worker's main cost.
        touched: dict[str, SessionState] = {}
        # ...and a handed-off state is deleted with those writes, once the whole batch is
        # handled: a batch that fails half-way leaves it in place for its retry
        handed_off: set[str] = set()

        def load(person: str) -> SessionState:
            if person not in touched:
                stored = None if person in handed_off else sessions.get(person)
                touched[person] = stored.copy() if stored else SessionState(person=person)
            return touched[person]

        for msg in batch:
            later[msg.person] -= 1
            if isinstance(msg, Handoff):
                state = touched.pop(msg.person, None)
                if state is None and msg.person not in handed_off:
                    state = sessions.get(msg.person)
                    state = state.copy() if state else None
                handed_off.add(msg.person)
                if state is not None:
                    out.forwards.append(Merge(person=msg.to, state=state))
                continue
            try:
                if isinstance(msg, PersonEvent):
                    self.check_event(msg.event)
                elif isinstance(msg, Merge):
                    self.check_state(msg.state)
            except InvalidEventError as e:
                out.rejected.append((msg, e.reason))
                continue
            session = load(msg.person)
            if isinstance(msg, Merge):
                session.merge(msg.state, half_life_s=self.config.interest_half_life_s)
            elif isinstance(msg, Consent):
                if msg.ts >= session.consent_ts:
                    session.consent, session.consent_ts = msg.consent, msg.ts
            else:
                # ids are the apps' own: two platforms of one person may both send an "e1"
                event_key = f"{msg.event.platform}:{msg.event.event_id}"
                if not session.remember_event(event_key):
                    self.stats["duplicates"] += 1
                    continue
                if (msg.person, event_key) in learned:
                    apply_to_session(session, msg.event, self.catalog, self.config)
                else:
                    self.learn(msg.person, msg.event, session)
                    learned.add((msg.person, event_key))
                # Rank on the state as of this event, even if the batch holds later ones.
                snapshot = session.copy() if later[msg.person] else session
                request = self._request_for(msg, snapshot, query_vector.get(id(msg)))
                if request is not None:
                    requests.append((msg, request, session))
        rankings = self.recommend([r for _, r, _ in requests])
        for (msg, _, session), ranking in zip(requests, rankings, strict=True):
            rec = self._recommendation(msg, ranking, now)
            session.last_rec[rec.platform] = LastRecommendation(
                rec.rec_id, rec.platform, [s.item for s in rec.items], msg.event.ts
            )
            out.recommendations.append(rec)
        for person in handed_off - touched.keys():
            if person in sessions:
                del sessions[person]
        for person, state in touched.items():
            sessions[person] = state
        self.stats["recommendations"] += len(out.recommendations)
        return out

    def _request_for(
        self, msg: PersonEvent, session: SessionState, query: np.ndarray | None
    ) -> RankRequest | None:
        e = msg.event
        if e.type in (EventType.IMPRESSION, EventType.IDENTIFY):
            return None
        if e.item is None:
            return RankRequest(msg.person, e.platform, session, query, session.exclusion(), e.ts)
        key = item_key(e.platform, e.item)
        context = self.catalog.vector(key)
        return RankRequest(msg.person, e.platform, session, context, session.exclusion(key), e.ts)

    # --- learning --------------------------------------------------------------------------

    def learn(self, person: str, event: Event, session: SessionState) -> None:
        """Apply one event to the session and to the global models."""
        self.stats["events"] += 1
        is_item_event = event.type in ITEM_EVENTS and event.item is not None
        if is_item_event and item_key(event.platform, event.item or "") not in self.catalog:
            raise InvalidEventError(f"unknown item {event.item!r} on platform {event.platform!r}")
        new_consumption = is_new_consumption(session, event)
        here_before = session.interest_ts.get(event.platform)
        key = apply_to_session(session, event, self.catalog, self.config)
        if new_consumption:
            consumed = consumed_on(session, event.platform, self.consumed_covisitation.window + 1)
            self.consumed_covisitation.learn_one(consumed, event.ts)
            self.transitions.learn_one(consumed, event.ts)
        if key is None:
            return
        self._learn_blend(person, event.platform, key)
        weight = EVENT_WEIGHT[event.type]
        self.preference.learn_positive(
            preference_user(person, event.platform), key, self.catalog.platform_keys(event.platform)
        )
        self.popularity.learn_one(key, event.platform, event.ts, weight)
        self._mirror_popularity(key)
        for timeline in self._timelines(session, event.platform, key, here_before):
            self.covisitation.learn_one(timeline, event.ts)
        self.item_knn.learn_one(session.recent.get(event.platform, []))
        self.person_knn.learn_one(
            self._knn_person(person, session, event.platform), key, owner=person
        )

    def _mirror_popularity(self, key: str) -> None:
        """Copy ``key``'s new popularity count into the ranking's per-row array (all of them
        when the counts were rescaled)."""
        mirrors, popularity = self._mirrors, self.popularity
        mirrors.fit(len(self.catalog))
        if popularity.rebases != mirrors.popularity_rebases:
            mirrors.popularity_rebases = popularity.rebases
            counts = [popularity.scaled(k) for k in self.catalog.keys]
            mirrors.popularity[: len(counts)] = counts
        else:
            mirrors.popularity[self.catalog.index[key]] = popularity.scaled(key)

    def _knn_person(self, person: str, session: SessionState, platform: str) -> str:
        """Whom :class:`PersonKNN` files the person's items under: one person across the
        platforms they allow, else one per platform (their history elsewhere neither finds
        their neighbours here nor makes them anyone's neighbour across platforms)."""
        if session.consent and self.config.cross_platform:
            return person
        return f"{person}@{platform}"

    def _timelines(
        self, session: SessionState, platform: str, newest: str, here_before: float | None
    ) -> list[list[str]]:
        """The histories, newest last, that co-visitation pairs ``newest`` with: this
        platform's recent items after the last few of each other platform the person allows;
        but the platforms they used after their last event here (``here_before``) in a
        history of their own, right before ``newest``. Only each platform's last update is
        known, not each item's: a person who came from another platform has those items as
        their latest, which behind ``window`` items here would never be paired."""
        mine = [k for k in session.recent.get(platform, []) if k != newest]
        if not (session.consent and self.config.cross_platform):
            return [[*mine, newest]]
        earlier: list[str] = []
        since: list[str] = []
        for p in sorted(session.recent, key=lambda p: session.interest_ts.get(p, 0.0)):
            if p == platform:
                continue
            came_from = here_before is not None and session.interest_ts.get(p, 0.0) > here_before
            (since if came_from else earlier).extend(session.recent[p][-3:])
        first = [*earlier, *mine, newest]
        return [first, [*since, newest]] if since else [first]

    def _learn_blend(self, person: str, platform: str, positive: str) -> None:
        """The person engaged with ``positive``: learn from the last ranking they were given."""
        shown = self._feedback.pop((person, platform), None)
        if shown is None or positive not in shown.keys:
            return
        at = shown.keys.index(positive)
        if self.reranker is not None:
            self.reranker.learn_one(shown.features, at, shown.request_features)
        if at not in shown.kept:
            return
        pos = shown.kept.index(at)
        keys = [shown.keys[i] for i in shown.kept]
        features = shown.features[shown.kept]
        blend = self.blends[platform]
        # Pairs: the engaged item against the ones ranked just above it (the mistakes), plus
        # a few below it so a correct order is reinforced too.
        below = list(range(pos + 1, len(keys)))
        negatives = list(range(max(0, pos - 8), pos)) + self._rng.sample(below, min(3, len(below)))
        preferred = dict(zip(SIGNALS, features[pos].tolist(), strict=True))
        for i in negatives:
            blend.learn_pair(preferred, dict(zip(SIGNALS, features[i].tolist(), strict=True)))
        self.stats["blend_updates"] += 1

    # --- ranking ---------------------------------------------------------------------------

    def recommend(self, requests: Sequence[RankRequest], *, quiet: bool = False) -> list[Ranking]:
        """Rank candidates for every request: each request's candidates from every source and
        their signals, one ranking-head call for the whole batch, the blend's order, then the
        reranker's on the blend's top.

        ``quiet``: change nothing (a what-if ranking): the lists are not kept for feedback,
        and River scores a person or item it has not seen yet at its prior instead of creating
        it, so no random draw is taken."""
        if not requests:
            return []
        prepared = [self._prepare(r) for r in requests]
        searched = self._searched(requests, prepared)
        self._mirrors.fit(len(self.catalog))
        sequence_queries = searched.sequence_queries
        all_rows: list[np.ndarray] = []
        all_dense: list[np.ndarray] = []
        all_blend_only: list[np.ndarray] = []
        for i, (req, prep) in enumerate(zip(requests, prepared, strict=True)):
            rows, keys, lexical = self._candidates(
                req, prep, searched.text[i], searched.sequence.get(i, _NO_ROWS)
            )
            query = None if sequence_queries is None else sequence_queries[i]
            dense, blend_only = self._signals(req, prep, rows, keys, lexical, query, quiet)
            all_rows.append(rows)
            all_dense.append(dense)
            all_blend_only.append(blend_only)
        sizes = [len(r) for r in all_rows]
        rows_cat = np.concatenate(all_rows)
        dense_cat = np.concatenate(all_dense)
        if self.ranker is not None and len(rows_cat):
            head = self.ranker.score(
                np.stack([p.person for p in prepared]),
                np.stack([p.context for p in prepared]),
                self._mirrors.item_hidden_for(self.ranker, rows_cat, self.catalog),
                dense_cat,
                np.repeat(np.arange(len(sizes)), sizes),
            )
        else:
            head = np.zeros(len(rows_cat), dtype=np.float32)
        # Column order is SIGNALS: the head, its dense inputs, then the blend-only signals.
        features = np.concatenate(
            [head[:, None], dense_cat, np.concatenate(all_blend_only)], axis=1
        )
        rankings = self._blend_rankings(requests, prepared, rows_cat, features, sizes)
        if self.reranker is not None and self.reranker.ready:
            top = max(self.config.rerank_top, self.config.top_k)
            reranked = self.reranker.score_many(
                [r.features[:top] for r in rankings], [r.request_features for r in rankings]
            )
            for ranking, p in zip(rankings, reranked, strict=True):
                _rerank(ranking, p)
        for ranking in [] if quiet else rankings:
            self._remember_for_feedback(ranking)
        return rankings

    def _searched(self, requests: Sequence[RankRequest], prepared: list[_Prepared]) -> _Searched:
        """What is searched for a whole platform's requests at once: the neighbour signals'
        candidates (into ``prepared``), the text neighbours of each request's query, and the
        sequence model's queries and (if it proposes candidates) their nearest items."""
        cfg = self.config
        queries = np.stack([p.query for p in prepared])
        by_platform: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_platform.setdefault(r.platform, []).append(i)
        found = _Searched(self._sequence_queries(requests))
        for platform, idx in by_platform.items():
            self._neighbour_candidates(
                [requests[i] for i in idx], [prepared[i] for i in idx], platform
            )
            rows, _ = self.catalog.neighbours(queries[idx], platform, cfg.neighbour_candidates)
            for i, r in zip(idx, rows, strict=True):
                found.text[i] = r
            if found.sequence_queries is not None and cfg.sequence_candidates > 0:
                nearest = self._sequence_items.neighbours(
                    self.catalog, found.sequence_queries[idx], platform, cfg.sequence_candidates
                )
                for i, r in zip(idx, nearest, strict=True):
                    found.sequence[i] = r
        return found

    def _candidates(
        self, req: RankRequest, prep: _Prepared, text_rows: np.ndarray, sequence_rows: np.ndarray
    ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """One request's candidates (catalog rows, distinct, available, not excluded; ties in
        the blend keep this order), their keys and their lexical signal."""
        cfg = self.config
        mirrors = self._mirrors
        popular = self.popularity.top(req.platform, cfg.candidates_per_source, 0.0)
        before = np.concatenate(
            [
                text_rows,
                sequence_rows,
                prep.covisit.rows,
                prep.cross_covisit.rows,
                prep.item_knn.rows,
                prep.transition.rows,
                prep.consumed_covisit.rows,
                prep.person_knn.rows,
            ]
        )
        platform_rows = self.catalog.rows(req.platform)
        shortlist = self.lexical.shortlist(
            prep.recent_rows,
            platform_rows,
            cfg.lexical_candidates,
            # a platform's rows only ever grow: their count names them
            among_key=(req.platform, len(platform_rows)),
        )
        after = np.concatenate(
            [
                self._rows_of(popular),
                self.catalog.newest(req.platform, cfg.candidates_per_source // 5),
                self._rows_of(req.extra),
            ]
        )
        proposed = np.concatenate([before, shortlist, after])
        # The lexical signal of every candidate and the lexical candidates' own choice
        # from the shortlist come from one product (two cost ~30 % more per request).
        lexical = self.lexical.nearest(proposed, prep.recent_rows)
        at = np.arange(len(proposed))
        chosen = best(
            at[len(before) : len(before) + len(shortlist)],
            lexical[len(before) : len(before) + len(shortlist)],
            cfg.lexical_candidates,
        )
        at = np.concatenate([at[: len(before)], chosen, at[len(proposed) - len(after) :]])
        proposed, lexical = proposed[at], lexical[at]
        # Distinct, in the order proposed (ties in the blend keep that order): each row's
        # first place, by an unbuffered minimum (no sort)
        places = np.arange(len(proposed))
        mirrors.first[proposed] = len(proposed)
        np.minimum.at(mirrors.first, proposed, places)
        keep = mirrors.first[proposed] == places
        keep[keep] = self.catalog.available[proposed[keep]]
        rows, lexical = proposed[keep], lexical[keep]
        catalog_keys = self.catalog.key_array
        keys = catalog_keys[rows].tolist()
        if req.exclude:
            drop = np.fromiter(map(req.exclude.__contains__, keys), bool, len(keys))
            if drop.any():
                rows, lexical = rows[~drop], lexical[~drop]
                keys = catalog_keys[rows].tolist()
        return rows, keys, lexical

    def _signals(
        self,
        req: RankRequest,
        prep: _Prepared,
        rows: np.ndarray,
        keys: list[str],
        lexical: np.ndarray,
        sequence_query: np.ndarray | None,
        quiet: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One request's candidates' signals: those the ranking head also reads
        (:data:`DENSE_FEATURES` order) and those only the blend reads (the rest of
        :data:`SIGNALS` after them)."""
        cfg = self.config
        mirrors = self._mirrors
        scratch = mirrors.scores
        # gathered per request: read while still in cache by the products below
        vecs = self.catalog.vectors[rows]
        dense = np.zeros((len(keys), len(DENSE_FEATURES)), dtype=np.float32)
        dense[:, 0] = vecs @ prep.u_same
        dense[:, 1] = vecs @ prep.u_cross
        dense[:, 2] = vecs @ prep.context
        dense[:, 3] = prep.covisit.at(rows, scratch)
        dense[:, 4] = self.popularity.normalise(mirrors.popularity[rows], req.platform)
        age = np.maximum(0.0, req.ts - self.catalog.added_ts[rows])
        dense[:, 5] = 0.5 ** (age / cfg.fresh_half_life_s)
        preference_rows = mirrors.preference[rows]
        dense[:, 6] = self.preference.predict_many(
            preference_user(req.person, req.platform), keys, preference_rows, create=not quiet
        )
        mirrors.preference[rows] = preference_rows
        blend_only = np.zeros((len(keys), len(SIGNALS) - 1 - len(DENSE_FEATURES)), np.float32)
        blend_only[:, 0] = prep.cross_covisit.at(rows, scratch)
        blend_only[:, 1] = prep.item_knn.at(rows, scratch)
        blend_only[:, 2] = prep.transition.at(rows, scratch)
        blend_only[:, 3] = prep.consumed_covisit.at(rows, scratch)
        blend_only[:, 4] = prep.covisit.shares(dense[:, 3])
        blend_only[:, 5] = prep.transition.shares(blend_only[:, 2])
        blend_only[:, 6] = prep.consumed_covisit.shares(blend_only[:, 3])
        blend_only[:, 7] = prep.person_knn.at(rows, scratch)
        if len(prep.recent_rows):  # nearest: the best cosine with one of them
            blend_only[:, 8] = (vecs @ self.catalog.vectors[prep.recent_rows].T).max(axis=1)
        blend_only[:, 9] = lexical
        if sequence_query is not None:
            blend_only[:, 10] = self._sequence_items.vectors[rows] @ sequence_query
        return dense, blend_only

    def _blend_rankings(
        self,
        requests: Sequence[RankRequest],
        prepared: list[_Prepared],
        rows: np.ndarray,
        features: np.ndarray,
        sizes: list[int],
    ) -> list[Ranking]:
        """Each request's candidates (``sizes[i]`` consecutive ``rows`` and ``features``) in
        the order of its platform's blend."""
        weights_of = {
            p: np.array([self.blends[p].weights[k] for k in SIGNALS], np.float32)
            for p in {r.platform for r in requests}
        }
        catalog_keys = self.catalog.key_array
        rankings = []
        start = 0
        for req, prep, size in zip(requests, prepared, sizes, strict=True):
            s, e = start, start + size
            start = e
            f = features[s:e]
            contrib = f * weights_of[req.platform]
            scores = contrib.sum(axis=1)
            order = np.argsort(-scores, kind="stable")
            ranked_keys = catalog_keys[rows[s:e][order]].tolist()
            rankings.append(
                Ranking(
                    req,
                    ranked_keys,
                    f[order],
                    scores[order],
                    contrib[order],
                    prep.history,
                    prep.person,
                    prep.context,
                    request_features=_request_features(req, prep),
                )
            )
        return rankings

    def _sequence_queries(self, requests: Sequence[RankRequest]) -> np.ndarray | None:
        """The sequence model's query per request (None without a model), from the person's
        latest items here and, with consent, elsewhere (the other platforms in the order they
        were last used, so the newest items come last)."""
        model = self.sequence
        if model is None:
            return None
        self._sequence_items.refresh(model, self.catalog)
        histories, flags = [], []
        for req in requests:
            s = req.session
            other: list[str] = []
            if model.length_other and s.consent and self.config.cross_platform:
                platforms = sorted(
                    (p for p in s.recent if p != req.platform),
                    key=lambda p: s.interest_ts.get(p, 0.0),
                )
                other = [k for p in platforms for k in s.recent[p][-model.length_other :]]
            rows, same = model.arrange(
                self._rows_of(s.recent.get(req.platform, [])[-model.length_same :]).tolist(),
                self._rows_of(other).tolist(),
            )
            histories.append(self.catalog.vectors[rows])
            flags.append(same)
        return model.queries(histories, flags)

    def _prepare(self, req: RankRequest) -> _Prepared:
        """Person vectors, the retrieval query, the histories the neighbour signals look up
        (:meth:`_neighbour_candidates`), platforms used.

        Other platforms' history is weighted, not mixed in: on Arts <-> Office a profile mixing
        both domains ranked worse than the target domain's alone. It enters the profile the
        head and the retrieval query see as ``cross_prior`` items' worth (decisive for a new
        person here, fading as their own history grows), and the ranking through signals of
        its own, ``cross`` and ``cross_covisit``, whose weights the blend learns per platform;
        ``content`` and ``covisit`` describe this platform's history only.
        """
        s = req.session
        dim = self.catalog.dim
        zero = np.zeros(dim, dtype=np.float32)
        has_own = req.platform in s.interest
        u_same = _unit(s.interest[req.platform]) if has_own else zero
        history = [req.platform] if has_own else []
        use_cross = s.consent and self.config.cross_platform
        others = [p for p in s.interest if p != req.platform] if use_cross else []
        u_cross = _unit(sum((s.interest[p] for p in others), zero)) if others else zero
        history += sorted(others)
        weights = self.blends[req.platform].weights
        context = req.context if req.context is not None else zero
        # Shrinkage: the profile here is the raw interest sum (its length grows with the
        # history) plus the other platforms' profile counted as ``cross_prior`` items.
        person = _unit(s.interest.get(req.platform, zero) + self.config.cross_prior * u_cross)
        query = _unit(max(weights["content"], 0.0) * person + context)
        recent = s.recent.get(req.platform, [])
        return _Prepared(
            u_same,
            u_cross,
            person,
            query,
            context,
            history,
            recent=recent,
            recent_elsewhere=[k for p in others for k in s.recent.get(p, [])[-3:]],
            consumed=consumed_on(s, req.platform, self.consumed_covisitation.window),
            recent_rows=self._rows_of(recent[-NEAREST_OF:]),
        )

    def _neighbour_candidates(
        self, requests: Sequence[RankRequest], prepared: list[_Prepared], platform: str
    ) -> None:
        """The neighbour signals' candidates for requests of one platform: one vectorised
        pass per signal for all of them."""
        cfg = self.config

        def many(
            signal: NeighbourSignal,
            rows: _CatalogRows,
            histories: list[list[str]],
            n: int,
        ) -> list[_Scored]:
            return [rows(found) for found in signal.candidate_ids_many(histories, platform, n)]

        n = cfg.covisit_candidates
        covisit = many(self.covisitation, self._covisit_rows, [p.recent for p in prepared], n)
        cross = many(
            self.covisitation, self._covisit_rows, [p.recent_elsewhere for p in prepared], n
        )
        knn = many(
            self.item_knn,
            self._item_knn_rows,
            [p.recent for p in prepared],
            cfg.item_knn_candidates,
        )
        consumed = [p.consumed for p in prepared]
        transition = many(
            self.transitions, self._transition_rows, consumed, cfg.transition_candidates
        )
        consumed_covisit = many(
            self.consumed_covisitation, self._consumed_covisit_rows, consumed, n
        )
        people = self.person_knn.candidate_ids_many(
            [
                (r.person, [*p.recent_elsewhere, *p.recent])  # every name of theirs left out
                for r, p in zip(requests, prepared, strict=True)
            ],
            platform,
            cfg.person_knn_candidates,
        )
        for i, p in enumerate(prepared):
            p.covisit, p.cross_covisit, p.item_knn = covisit[i], cross[i], knn[i]
            p.transition, p.consumed_covisit = transition[i], consumed_covisit[i]
            p.person_knn = self._person_knn_rows(people[i])

    def _rows_of(self, keys: Sequence[str]) -> np.ndarray:
        index = self.catalog.index
        return np.array([index[k] for k in keys if k in index], np.int64)

    def _remember_for_feedback(self, ranking: Ranking) -> None:
        """Keep the list until the person's next engagement on the platform answers it: the
        blend learns from the items it ranked first, the ones the person was shown (the
        reranker's top, where it reordered the blend's) and a sample of the rest."""
        keys, features = ranking.by_blend or (ranking.keys, ranking.features)
        k = self.config.top_k
        first = set(range(min(k, len(keys))))
        if ranking.by_blend is not None:
            at = {key: i for i, key in enumerate(keys)}
            first.update(at[key] for key in ranking.keys[:k])
        tail = [i for i in range(len(keys)) if i not in first]
        sample = self._rng.sample(tail, min(self.config.feedback_tail, len(tail)))
        keep = sorted(first.union(sample))
        key = (ranking.request.person, ranking.request.platform)
        self._feedback[key] = Shown(keys, features, keep, ranking.request_features)
        self._feedback.move_to_end(key)
        while len(self._feedback) > self.config.feedback_cache:
            self._feedback.popitem(last=False)

    def _recommendation(self, msg: PersonEvent, ranking: Ranking, now: float) -> Recommendation:
        e = msg.event
        k = self.config.top_k
        items = [
            ScoredItem(
                item=key.split(":", 1)[1],
                platform=ranking.request.platform,
                score=round(float(ranking.scores[i]), 6),
                contributions={
                    s: round(float(c), 6)
                    for s, c in zip(SIGNALS, ranking.contributions[i], strict=True)
                },
            )
            for i, key in enumerate(ranking.keys[:k])
        ]
        return Recommendation(
            rec_id=rec_id_for(e.platform, e.event_id, msg.person),
            person=msg.person,
            user=e.user,
            platform=e.platform,
            event_id=e.event_id,
            items=items,
            history_platforms=ranking.history_platforms,
            model_versions=self.model_versions,
            event_ts=e.ts,
            published_ts=now,
        )


def _request_features(req: RankRequest, prep: _Prepared) -> np.ndarray:
    """What the reranker knows of a list beyond its candidates' signals: how much history the
    person has here and elsewhere (on the platforms whose history this list may use), and how
    strongly each neighbour signal points anywhere."""
    events_on = req.session.events_on
    return np.array(
        [
            np.log1p(len(prep.recent)),
            np.log1p(len(prep.recent_elsewhere)),
            np.log1p(sum(events_on.get(p, 0) for p in prep.history)),
            prep.covisit.strength,
            prep.item_knn.strength,
            prep.transition.strength,
            prep.consumed_covisit.strength,
            prep.person_knn.strength,
        ],
        np.float32,
    )


def _rerank(ranking: Ranking, probability: np.ndarray) -> None:
    """Reorder the head of ``ranking`` (in the blend's order) by the reranker's ``probability``
    of its first ``len(probability)`` candidates; ties keep the blend's order, which stays in
    ``ranking.by_blend`` for feedback. The rest follows in the blend's order, scored 0."""
    head = len(probability)
    head_order = np.argsort(-probability, kind="stable")
    order = np.concatenate([head_order, np.arange(head, len(ranking.keys))])
    ranking.by_blend = (ranking.keys, ranking.features)
    keys = ranking.keys
    ranking.keys = [keys[j] for j in head_order.tolist()] + keys[head:]  # the tail stays put
    ranking.features = ranking.features[order]
    ranking.scores = np.concatenate([probability, np.zeros(len(order) - head, np.float32)])[order]
    ranking.contributions = ranking.contributions[order]


def apply_to_session(
    session: SessionState, event: Event, catalog: Catalog, config: PipelineConfig
) -> str | None:
    """What one event does to the person's own state; the engaged item's key, if positive.

    The part of :meth:`Pipeline.learn` that touches no global model, so a replay can apply
    it to a copy of a session.
    """
    if event.type not in ITEM_EVENTS or event.item is None:
        return None
    key = item_key(event.platform, event.item)
    consumed = event.type in CONSUMED_EVENTS
    if not event.is_positive:  # a low rating: had it, did not like it
        if consumed:
            session.add_consumed(key)
        return None
    session.observe(
        event.platform,
        key,
        catalog.vector(key),
        event.ts,
        consumed=consumed,
        half_life_s=config.interest_half_life_s,
        weight=EVENT_WEIGHT[event.type],
    )
    return key


def is_new_consumption(session: SessionState, event: Event) -> bool:
    """Will :func:`apply_to_session` add ``event``'s item to what the person consumed (liked or
    not)? Asked before applying it."""
    return (
        event.type in CONSUMED_EVENTS
        and event.item is not None
        and not session.has_consumed(item_key(event.platform, event.item))
    )


def consumed_on(session: SessionState, platform: str, n: int) -> list[str]:
    """The person's last ``n`` consumed items of ``platform``, disliked ones included, oldest
    first (``session.consumed`` holds each item once, where it was first consumed)."""
    prefix = f"{platform}:"
    out: list[str] = []
    for key in reversed(session.consumed):
        if key.startswith(prefix):
            out.append(key)
            if len(out) == n:
                break
    return out[::-1]


def preference_user(person: str, platform: str) -> str:
    """River learns per person *and platform*: its factors never carry one platform's history
    to another, so consent is enforced by the cross-platform signals alone."""
    return f"{person}@{platform}"


def rec_id_for(platform: str, event_id: str, person: str) -> str:
    """Deterministic, so a redelivered event republishes the same rec_id (deduplicable); an
    event's id is its platform's, so the platform is part of it."""
    key = f"{person}\x00{platform}\x00{event_id}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    out: np.ndarray = (v / n).astype(np.float32) if n > 1e-12 else np.zeros_like(v, np.float32)
    return out
