"""Replay evaluation: run a dataset through the stream's own scoring code, prequentially.

For every evaluated positive event of a person on a platform, the replay first asks the model
for a ranking, exactly like the stream would have ranked for that person just before the event,
records the rank of the item they actually engaged with, and only then lets the model learn
from the event. Learning first would leak the answer; the unit tests check that it would show.

The request is built the way the stream builds one (:meth:`Pipeline._request_for`):

* ``context`` is the embedding of the person's previous positive item **on the same platform**;
  when they have none there yet, of their previous positive item on any platform (only if
  cross-platform history is allowed), else none. Arts ↔ Office showed that other domains'
  items are a much weaker guide to the next item than the same domain's, so they only stand in
  for a missing same-platform context; the pipeline weighs the rest through its ``cross``
  signal.
* ``exclude`` is what the person has consumed (and that previous item), ``ts`` the event time.
* ``extra`` stays empty: the target is never injected as a candidate. If the model's candidate
  generation misses it, it is a miss.

The blend ranks every other positive event too, the non-evaluated users' included, and records
nothing for them: the stream shows each of those people a list, and their answers are feedback
its blend weights and reranker learn from (``rank_all``). On Amazon, where the evaluated split
is 1 in 25 events, that took the blend's NDCG@10 from 0.0633 to 0.0698 and its replay from
~4,400 to ~490 events/s. The baselines learn nothing from their lists and rank only targets.

A target the person already consumed (a repeat) is skipped and counted, since every model here
filters consumed items. Metrics (:mod:`models.metrics`): HR@10, NDCG@10 and MRR (over the
returned list: every candidate for the blend, the top 200 for a baseline; a target not
returned counts 0), and catalog coverage (distinct items in the top 10 / items of the
platform). Cold start: the
targets among a person's first five positives on a platform when they already had a positive on
another platform; the blend is replayed a second time with ``cross_platform=False`` to measure
what that history is worth there.

End to end (``--through-kafka``): the streams package replays the dataset through a broker and a
worker and :func:`served_run` scores the lists the worker published (model ``blend-kafka``).

Batching (``batch_size``, ``--batch-size``: default 128 for the blend in :func:`evaluate` and on
the command line; baselines are always replayed with 1, :func:`replay`'s default): consecutive
events are collected into a batch, all of its targets are ranked in **one** ``rank`` call (one
ONNX call for the blend), their ranks are recorded, and only then are the batch's events
learned, in stream order. What that changes, and what it does not:

* each person's *own* state is exact: a request is built from the person's session, previous
  items and consumed set as of just before their event, with their earlier events in the same
  batch applied (to a copy of the session, by :func:`models.pipeline.apply_to_session`, the
  session update ``Pipeline.learn`` itself uses); the blend still learns each event from the
  very list ranked for it (:meth:`BlendRecommender.before_learn`);
* the *global* models (popularity, co-visitation, item-kNN, River BiasedMF, including the
  person's own River factors, the baselines' co-visitation histories, and the blend weights)
  lag: a target is ranked on them as they were at the start of its batch, so they miss at most
  ``batch_size - 1`` earlier events. Nothing later than the target is ever learned before it is
  ranked. ``batch_size=1`` is the exact per-event replay (the unit tests check it reproduces it).
* the random draws of the blend's feedback sampling and of River's initialiser come in another
  order, so numbers differ slightly even where the lag does not matter.
* the blend's reranker (:mod:`models.rerank`) fits inline, on lists already answered: a fit
  never sees a target before it is ranked, and the replay stays reproducible.

The blend and the baselines it is compared with are :mod:`models.recommenders`.

Examples
--------
>>> import numpy as np
>>> from models.datasets import Dataset
>>> from models.events import CatalogItem, Event
>>> class Words:  # a toy encoder: one dimension per word
...     version, dim = "toy", 8
...     def encode(self, texts):
...         vocab = ["boots", "socks", "tent", "stove", "jazz", "vinyl", "rock", "drums"]
...         out = np.array([[w in t.split() for w in vocab] for t in texts], np.float32)
...         return out / np.maximum(1, np.linalg.norm(out, axis=1, keepdims=True))
>>> items = [CatalogItem(item=t, platform="shop", title=t) for t in ["boots", "socks", "tent"]]
>>> events = [Event(event_id=f"e{i}", type="purchase", platform="shop", user=u, ts=i, item=t)
...           for i, (u, t) in enumerate([("a", "boots"), ("a", "socks"), ("b", "boots"),
...                                        ("b", "socks"), ("c", "boots"), ("c", "socks")])]
>>> ds = Dataset("toy", items, events, [True] * len(events))
>>> catalog = build_catalog(ds, Words().encode([it.text() for it in items]))
>>> from models.recommenders import PopularityBaseline
>>> run = replay(ds, PopularityBaseline(catalog), catalog, progress=False)
>>> run.metrics["all"]["n"], run.metrics["all"]["hr@10"]
(6, 0.6666666666666666)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.catalog import Catalog
from models.compare import ALONE, Targets
from models.datasets import (
    DEFAULT_PATHS,
    Dataset,
    read_amazon,
    read_generic,
    read_movielens,
)
from models.errors import DatasetError, StreamrecError
from models.events import CONSUMED_EVENTS, Event, item_key
from models.metrics import (
    Hit,
    K,
    against_blend,
    by_rank_band,
    by_target_seen,
    cold_by_position,
    cold_parts,
    hit_rate,
    mean_interval,
    metrics,
    paired_lift,
    returned_share,
)
from models.pipeline import (
    Encoder,
    Pipeline,
    PipelineConfig,
    RankRequest,
    Scorer,
    SequenceScorer,
    apply_to_session,
)
from models.recommenders import BASELINES, DEFAULT_CONFIG, BlendRecommender, Recommender
from models.session import SessionState

# Events per ranking call in evaluate() / the command line (the worker takes up to 256).
# Measured on this 2-core machine with the current pipeline: 128 replays MovieLens ~19 % and
# Amazon ~20 % faster than 32 (1,272 vs 1,072 and 687 vs 574 events/s) for NDCG@10 0.0878 vs
# 0.0880 and 0.0693 vs 0.0700; on the first 50,000 MovieLens events 256 was no faster than
# 128 and worse (0.0910 vs 0.0935): the global signals lag a whole batch.
DEFAULT_BATCH = 128
COLD_START_FIRST = 5


# --- the replay ---------------------------------------------------------------------------


@dataclass
class Run:
    model: str
    hits: list[Hit]
    heldout: list[Hit]
    top10: dict[str, set[str]]
    catalog_sizes: dict[str, int]
    events: int
    seconds: float
    repeats_skipped: int = 0
    series: list[dict[str, Any]] = field(default_factory=list)  # along the stream
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    heldout_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # what only this model has
    heldout_repeats_skipped: int = 0  # held-out items the person had consumed before
    # the cold-start targets ranked again by the same model without the person's history on
    # other platforms (as if they had not consented): :func:`replay`'s ``probe``
    alone: list[Hit] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def summary(self, reordered: int = DEFAULT_CONFIG.rerank_top) -> dict[str, Any]:
        """The JSON-able figures; ``reordered``: where the rank bands' middle one ends (the
        run's ``rerank_top``, the same for every model of a run)."""
        cold = [h for h in self.hits if h.cold]
        return {
            "model": self.model,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s, 1),
            "repeats_skipped": self.repeats_skipped,
            "heldout_repeats_skipped": self.heldout_repeats_skipped,
            "prequential": self.metrics,
            "leave_last_out": self.heldout_metrics,
            # share of targets anywhere in the returned list: for the blend, candidate recall
            "returned": returned_share(self.hits),
            "cold_start": {
                "n": len(cold),
                "hr@10": hit_rate(cold),
                **{
                    part: {"n": len(hs), "hr@10": hit_rate(hs)}
                    for part, hs in cold_parts(cold).items()
                },
            },
            "by_target_seen": {
                "prequential": by_target_seen(self.hits),
                "leave_last_out": by_target_seen(self.heldout),
            },
            "by_rank_band": {
                "prequential": by_rank_band(self.hits, reordered),
                "leave_last_out": by_rank_band(self.heldout, reordered),
            },
            # how far each overall NDCG@10 could move with another draw of as many targets
            "ndcg@10_95ci": {
                section: list(mean_interval(hits))
                for section, hits in (("prequential", self.hits), ("leave_last_out", self.heldout))
                if hits
            },
            "series": self.series,
            **self.details,
        }


def _advanced(
    view: SessionState, event: Event, catalog: Catalog, config: PipelineConfig
) -> SessionState:
    """A copy of ``view`` with ``event`` applied; ``view`` itself is left as it was."""
    s = view.copy()
    apply_to_session(s, event, catalog, config)
    return s


class _Replayer:
    """Sessions, the person's previous items and the request builder for one model's replay."""

    def __init__(self, catalog: Catalog, cross_platform: bool) -> None:
        self.catalog = catalog
        self.cross_platform = cross_platform
        self.sessions: dict[str, SessionState] = {}
        self.last: dict[str, dict[str, str]] = defaultdict(dict)  # person → platform → key
        self.last_any: dict[str, str] = {}
        self.positives: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.item_positives: Counter[str] = Counter()  # item key → positives so far
        # person → the platforms whose first positive came after positives elsewhere: the
        # cold start's platform B (the person's first platform is never one)
        self.arrived: dict[str, set[str]] = defaultdict(set)

    def session(self, person: str) -> SessionState:
        s = self.sessions.get(person)
        if s is None:
            s = self.sessions[person] = SessionState(person=person)
        return s

    def request(
        self, person: str, platform: str, ts: float, session: SessionState | None = None
    ) -> RankRequest:
        """The request as of now; ``session``: the person's session as of now, if it is not
        (yet) the stored one (a batch that has not learned their earlier events)."""
        if session is None:
            session = self.session(person)
        prev = self.last[person].get(platform)
        if prev is None and self.cross_platform and session.consent:
            prev = self.last_any.get(person)
        if prev is None:
            return RankRequest(person, platform, session, None, session.exclusion(), ts)
        context = self.catalog.vector(prev)
        return RankRequest(person, platform, session, context, session.exclusion(prev), ts)

    def is_cold(self, person: str, platform: str) -> bool:
        """Among the person's first positives on ``platform``, a platform they came to with
        positives elsewhere already (their first positive there had some before it)."""
        counts = self.positives[person]
        if counts[platform] == 0:  # the first one here: is there any elsewhere?
            return self.elsewhere(person, platform) > 0
        return platform in self.arrived[person] and counts[platform] < COLD_START_FIRST

    def elsewhere(self, person: str, platform: str) -> int:
        """The person's positives on other platforms than ``platform`` so far."""
        return sum(n for p, n in self.positives[person].items() if p != platform)

    def observed(self, person: str, event: Event) -> None:
        if event.is_positive and event.item is not None:
            key = item_key(event.platform, event.item)
            self.last[person][event.platform] = key
            self.last_any[person] = key
            if self.positives[person][event.platform] == 0 and self.elsewhere(
                person, event.platform
            ):
                self.arrived[person].add(event.platform)
            self.positives[person][event.platform] += 1
            self.item_positives[key] += 1


def replay(
    dataset: Dataset,
    model: Recommender,
    catalog: Catalog,
    *,
    cross_platform: bool = True,
    learn_first: bool = False,
    progress: bool = True,
    points: int = 100,
    weights: Callable[[], dict[str, dict[str, float]]] | None = None,
    batch_size: int = 1,
    rank_all: bool = False,
    bar_position: int | None = None,
) -> Run:
    """Replay ``dataset`` through ``model`` prequentially: rank, record, then learn.

    ``rank_all``: rank every positive event, as the stream does, and record only the evaluated
    ones. For a model that learns from the lists it showed (the blend and its reranker) the
    other users' answers are feedback the stream would give it; a baseline learns nothing from
    its lists, so it ranks only what is scored (the same results, faster).

    ``batch_size`` consecutive events are ranked in one ``model.rank`` call, then learned in
    stream order (see the module docstring for what that changes); 1 ranks every event on the
    model as of just before it. ``learn_first=True`` does it the wrong way round (learn, then
    rank; only with ``batch_size=1``): it exists so the tests can show that the order matters.
    ``weights`` (e.g. the blend's snapshot) is sampled along the stream with the running
    metrics, ``points`` times.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if learn_first and batch_size != 1:
        raise ValueError("learn_first needs batch_size=1")
    config: PipelineConfig = getattr(model, "config", DEFAULT_CONFIG)
    before_learn: Callable[[int | None], None] | None = getattr(model, "before_learn", None)
    # A model that can rank without remembering the list (nothing learned from it) ranks each
    # cold-start target a second time without the person's other platforms: the same model,
    # the same moment, only that person's history elsewhere missing.
    probe: Callable[[Sequence[RankRequest]], list[list[str]]] | None = (
        getattr(model, "probe", None) if cross_platform else None
    )
    state = _Replayer(catalog, cross_platform)
    hits: list[Hit] = []
    top10: dict[str, set[str]] = defaultdict(set)
    repeats = 0
    n_targets = sum(
        1 for e, ev in zip(dataset.events, dataset.evaluated, strict=True) if ev and e.is_positive
    )
    every = max(1, n_targets // max(1, points))
    series: list[dict[str, Any]] = []
    window: list[Hit] = []
    # The batch: its events (index, event, stored session, slot of its request or None), the
    # requests and what to record for each, and per person the session their last event in
    # the batch was ranked on plus that event (their next one sees both).
    batch: list[tuple[int, Event, SessionState, int | None]] = []
    requests: list[RankRequest] = []
    targets: list[tuple[int, str, str, bool, int, int, int]] = []
    in_batch: dict[str, tuple[SessionState, Event]] = {}
    alone: list[Hit] = []
    probes: list[tuple[RankRequest, str, Hit]] = []  # request, target item, its Hit (rank 0)
    probe_seconds = 0.0  # a measurement, not the replay: left out of its speed

    def flush() -> None:
        nonlocal window, probe_seconds
        ranked_lists = model.rank(requests) if requests else []
        if probes and probe is not None:
            started = time.perf_counter()
            lists = probe([r for r, _, _ in probes])
            for (_, key, hit), ranked in zip(probes, lists, strict=True):
                hit.rank = ranked.index(key) + 1 if key in ranked else 0
                alone.append(hit)
            probes.clear()
            probe_seconds += time.perf_counter() - started
        for (i, key, platform, cold, earlier, elsewhere, seen), ranked in zip(
            targets, ranked_lists, strict=True
        ):
            if i < 0:  # ranked for the feedback only (rank_all), not evaluated
                continue
            top10[platform].update(ranked[:K])
            try:
                rank = ranked.index(key) + 1
            except ValueError:
                rank = 0
            hit = Hit(i, platform, rank, cold, earlier, elsewhere, seen, dataset.events[i].user)
            hits.append(hit)
            window.append(hit)
            if len(hits) % every == 0:
                point: dict[str, Any] = {
                    "event": i,
                    "targets": len(hits),
                    "hr@10": hit_rate(window),
                    "hr@10_cumulative": hit_rate(hits),
                }
                if weights is not None:
                    point["weights"] = weights()
                series.append(point)
                window = []
        for _, event, session, slot in batch:
            if before_learn is not None:
                before_learn(slot)
            model.learn(event.user, event, session)
        batch.clear()
        requests.clear()
        targets.clear()
        in_batch.clear()

    bar = _progress(len(dataset.events), f"replay {model.name}", progress, bar_position)
    start = time.perf_counter()
    for i, (event, evaluated) in enumerate(zip(dataset.events, dataset.evaluated, strict=True)):
        if len(batch) >= batch_size:
            flush()
        person = event.user
        session = state.session(person)
        earlier = in_batch.get(person)
        # the person's session as of this event: their earlier events in the batch applied
        view = session if earlier is None else _advanced(*earlier, catalog, config)
        target = (evaluated or rank_all) and event.is_positive and event.item is not None
        slot = None
        if target and learn_first:
            model.learn(person, event, session)
        if target:
            key = item_key(event.platform, event.item or "")
            request = state.request(person, event.platform, event.ts, view)
            # a repeat no model may return: consumed before, or the item the list is for
            if key in request.exclude and not learn_first:
                repeats += evaluated
            else:
                slot = len(requests)
                requests.append(request)
                cold = state.is_cold(person, event.platform)
                here = state.positives[person][event.platform]
                elsewhere = state.elsewhere(person, event.platform)
                seen = state.item_positives[key]
                targets.append(
                    (i if evaluated else -1, key, event.platform, cold, here, elsewhere, seen)
                )
                if probe is not None and evaluated and cold and view.consent and not learn_first:
                    hidden = replace(view, consent=False)  # ranking changes no session
                    probes.append(
                        (
                            state.request(person, event.platform, event.ts, hidden),
                            key,
                            Hit(i, event.platform, 0, True, here, elsewhere, seen, person),
                        )
                    )
        if not (target and learn_first):
            batch.append((i, event, session, slot))
        elif slot is not None:  # learned already: rank it on its own, learn nothing more
            flush()
        if batch_size > 1:
            in_batch[person] = (view, event)
        state.observed(person, event)
        if bar is not None and i % 256 == 255:
            bar.update(256)
    flush()
    seconds = time.perf_counter() - start - probe_seconds
    if bar is not None:
        bar.update(len(dataset.events) % 256)
        bar.close()
    # Leave-last-out: all held-out targets ranked on the final state, nothing learned between.
    heldout: list[Hit] = []
    heldout_repeats = 0
    if dataset.heldout:
        requests = [state.request(e.user, e.platform, e.ts) for e in dataset.heldout]
        # a held-out item the person consumed before is no model's to return: skipped, as in
        # the stream (its rank would be 0 for every model)
        keyed = [(e, item_key(e.platform, e.item or "")) for e in dataset.heldout]
        kept = [(e, key, r) for (e, key), r in zip(keyed, requests, strict=True)
                if key not in r.exclude]
        heldout_repeats = len(requests) - len(kept)
        ranks = _batched(model, [r for _, _, r in kept])
        for (e, key, _), ranked in zip(kept, ranks, strict=True):
            rank = ranked.index(key) + 1 if key in ranked else 0
            heldout.append(Hit(-1, e.platform, rank, seen=state.item_positives[key], person=e.user))
    sizes = dataset.catalog_sizes()
    run = Run(
        model.name, hits, heldout, dict(top10), sizes, len(dataset.events), seconds, repeats, series
    )
    run.metrics = metrics(hits, run.top10, sizes)
    run.heldout_metrics = metrics(heldout) if heldout else {}
    run.heldout_repeats_skipped = heldout_repeats
    run.alone = alone
    if alone:
        run.details["cold_start_probe_seconds"] = round(probe_seconds, 2)
    return run


def served_run(dataset: Dataset, lists: Mapping[str, list[str]], seconds: float) -> Run:
    """What people were actually shown (model ``blend-kafka``): each target ranked in the list
    the worker last published for that user and platform before the target's event.

    ``lists`` maps an event id to the item keys of the recommendation published after it, best
    first (``top_k`` of them). A target before any list there (the person's first event on the
    platform) or whose list never arrived is a miss; a target no list may hold (consumed
    before, or the item of the event the list was made for) is skipped as a repeat, as in
    :func:`replay`. Unlike :func:`replay`, the list was ranked after the previous event
    rather than for this one, so it was made with that event as context. The worker publishes
    ``top_k`` items, so this run's MRR is MRR@``top_k`` and its "returned" its HR@``top_k``.

    >>> from models.events import Event
    >>> def ev(i: int, item: str, kind: str = "purchase") -> Event:
    ...     return Event(event_id=f"e{i}", type=kind, platform="shop", user="u", ts=i, item=item)
    >>> ds = Dataset("toy", [], [ev(0, "a"), ev(1, "b"), ev(2, "c")], [True] * 3)
    >>> run = served_run(ds, {"e0": ["shop:c", "shop:b"], "e1": ["shop:x", "shop:c"]}, 1.0)
    >>> [h.rank for h in run.hits]  # e0: no list yet; e1: 2nd in e0's list; e2: 2nd in e1's
    [0, 2, 2]
    >>> ds = Dataset("toy", [], [ev(0, "a", "view"), ev(1, "a")], [True] * 2)
    >>> run = served_run(ds, {"e0": ["shop:b"]}, 1.0)  # e0's list could not hold a itself
    >>> [h.rank for h in run.hits], run.repeats_skipped
    ([0], 1)
    """
    hits: list[Hit] = []
    top10: dict[str, set[str]] = defaultdict(set)
    # (user, platform) → the list last published there and the item it was made for
    shown: dict[tuple[str, str], tuple[list[str], str | None]] = {}
    consumed: dict[str, set[str]] = defaultdict(set)
    state = _Replayer(Catalog(1), True)  # for the cold-start bookkeeping only
    repeats = 0
    for i, (event, evaluated) in enumerate(zip(dataset.events, dataset.evaluated, strict=True)):
        where = (event.user, event.platform)
        key = item_key(event.platform, event.item) if event.item is not None else None
        if evaluated and event.is_positive and key is not None:
            ranked, made_for = shown.get(where, ([], None))
            if key in consumed[event.user] or key == made_for:
                repeats += 1
            else:
                rank = ranked.index(key) + 1 if key in ranked else 0
                # coverage as in replay(): the lists targets were scored with, not every list
                top10[event.platform].update(ranked[:K])
                cold = state.is_cold(event.user, event.platform)
                earlier = state.positives[event.user][event.platform]
                elsewhere = state.elsewhere(event.user, event.platform)
                seen = state.item_positives[key]
                hits.append(
                    Hit(i, event.platform, rank, cold, earlier, elsewhere, seen, event.user)
                )
        if key is not None and event.type in CONSUMED_EVENTS:
            consumed[event.user].add(key)
        state.observed(event.user, event)
        published = lists.get(event.event_id)
        if published is not None:
            shown[where] = (published, key)
    sizes = dataset.catalog_sizes()
    run = Run("blend-kafka", hits, [], dict(top10), sizes, len(dataset.events), seconds, repeats)
    run.metrics = metrics(hits, run.top10, sizes)
    return run


def _batched(
    model: Recommender, requests: list[RankRequest], size: int = 256
) -> Iterable[list[str]]:
    for s in range(0, len(requests), size):
        yield from model.rank(requests[s : s + size])


def _progress(total: int, desc: str, enabled: bool, position: int | None = None) -> Any:
    """A progress bar, or None; ``position``: its line, for bars of several processes."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="ev", mininterval=0.5, smoothing=0.1, position=position
    )


# --- the catalog and its embeddings -------------------------------------------------------


def embed_items(
    dataset: Dataset, encoder: Encoder, cache: Path | None, progress: bool = True
) -> np.ndarray:
    """Embeddings of the dataset's items, cached at ``cache/<version>-<sha of the texts>.npy``."""
    texts = [it.text() for it in dataset.items]
    digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16]
    path = cache / f"{encoder.version}-{digest}.npy" if cache is not None else None
    if path is not None and path.is_file():
        vectors: np.ndarray = np.load(path)
        if vectors.shape == (len(texts), encoder.dim):
            return vectors
    bar = _progress(len(texts), f"encode {len(texts)} items", progress)
    chunks = []
    for s in range(0, len(texts), 1024):
        chunks.append(encoder.encode(texts[s : s + 1024]))
        if bar is not None:
            bar.update(len(chunks[-1]))
    if bar is not None:
        bar.close()
    vectors = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, encoder.dim))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        ignore = path.parent.parent / ".gitignore"
        if path.parent.parent.name == ".cache" and not ignore.exists():
            ignore.write_text("*\n")
        # one temporary file per process: parallel replays may encode the same items at once
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
    return vectors


def build_catalog(dataset: Dataset, vectors: np.ndarray, search_threads: int = 0) -> Catalog:
    catalog = Catalog(vectors.shape[1], search_threads=search_threads)
    for it, vec in zip(dataset.items, vectors, strict=True):
        catalog.upsert(it.key, it.platform, vec, available=it.available, added_ts=it.ts or 0.0)
    return catalog


# --- the whole evaluation -----------------------------------------------------------------


@dataclass(frozen=True)
class ReplaySource:
    """Where a replay's inputs come from, so that a worker process can load them itself
    (ONNX Runtime sessions cannot be sent to one): the command line's arguments."""

    dataset: str
    data: Path | None
    split: str = "valid_F2.txt"
    limit: int | None = None
    artifacts: Path = Path("artifacts")
    cache: Path | None = Path(".cache/embeddings")
    use_ranker: bool = True
    # where the sequence model is taken from (default: ``artifacts``); none there: none used
    sequence_artifacts: Path | None = None
    use_sequence: bool = True

    def load_sequence(self, threads: int = 0) -> SequenceScorer | None:
        """The sequence model, if one is published where this replay takes it from."""
        from models.artifacts import current_version
        from models.encoder import ENCODER_NAME
        from models.sequence import SequenceModel

        root = self.sequence_artifacts or self.artifacts
        if not self.use_sequence or not SequenceModel.available(root):
            return None
        model = SequenceModel.from_artifacts(root, threads=threads)
        return model.check_encoder(current_version(self.artifacts, ENCODER_NAME))

    def load(
        self, progress: bool = False, threads: int = 0
    ) -> tuple[Dataset, Encoder, Scorer | None, np.ndarray]:
        """The dataset, the encoder, the ranking head (None without one) and the items'
        vectors (from the cache, else encoded and cached). ``threads``: the head's intra-op
        threads (0: one per core)."""
        from models.encoder import TextEncoder

        dataset = load_dataset(self.dataset, self.data, self.split).limit(self.limit)
        encoder = TextEncoder.from_artifacts(self.artifacts)  # its error says to export it
        ranker: Scorer | None = None
        if self.use_ranker and (self.artifacts / "ranker" / "CURRENT").is_file():
            from models.ranker import RankingHead

            head = RankingHead.from_artifacts(self.artifacts, threads=threads)
            ranker = head.check_encoder(encoder.version)
        vectors = embed_items(dataset, encoder, self.cache, progress)
        return dataset, encoder, ranker, vectors


#: The two replays of the full pipeline, with and without cross-platform history.
BLENDS = ("blend", "blend-no-cross")
ALL_MODELS = (*BASELINES, *BLENDS)


def evaluate(
    dataset: Dataset,
    encoder: Encoder,
    ranker: Scorer | None = None,
    *,
    vectors: np.ndarray | None = None,
    config: PipelineConfig = DEFAULT_CONFIG,
    models: Sequence[str] = ALL_MODELS,
    progress: bool = True,
    batch_size: int = DEFAULT_BATCH,
    extra_runs: Mapping[str, Run] | None = None,
    jobs: int = 1,
    source: ReplaySource | None = None,
    sequence: SequenceScorer | None = None,
) -> dict[str, Any]:
    """Every model over the same stream; returns the JSON-able results. ``extra_runs``: runs
    made elsewhere over the same stream (the replay through Kafka), reported alongside.

    ``jobs`` > 1 (with the ``source`` the inputs came from): that many models replayed at once,
    each in a process of its own that loads the inputs itself (the replays are independent,
    and one uses about one core). Each replay gives the same results as on its own, at a lower
    events/s: measure speed with ``jobs=1``.
    """
    if vectors is None:
        vectors = embed_items(dataset, encoder, None, progress)
    jobs = min(jobs, len(models)) if source is not None else 1
    runs: dict[str, Run] = {}
    if jobs > 1 and source is not None:
        runs = _replay_in_processes(source, models, config, progress, batch_size, jobs)
    else:
        catalog = build_catalog(dataset, vectors)
        for name in models:
            args = (dataset, encoder, ranker, catalog, config, progress, batch_size)
            runs[name] = replay_model(name, *args, sequence=sequence)
    runs.update(extra_runs or {})
    return summarise(dataset, runs, encoder, ranker, batch_size, jobs, sequence, config)


def replay_model(
    name: str,
    dataset: Dataset,
    encoder: Encoder,
    ranker: Scorer | None,
    catalog: Catalog,
    config: PipelineConfig = DEFAULT_CONFIG,
    progress: bool = True,
    batch_size: int = DEFAULT_BATCH,
    bar_position: int | None = None,
    sequence: SequenceScorer | None = None,
) -> Run:
    """One model of :func:`evaluate` (a baseline or a blend) over the dataset."""
    if name in BLENDS:
        cross = name == "blend"
        pipeline = Pipeline(
            encoder, ranker, replace(config, cross_platform=cross), catalog, sequence=sequence
        )
        pipeline.index_texts(dataset.items)
        blend = BlendRecommender(pipeline, name)
        run = replay(
            dataset,
            blend,
            catalog,
            cross_platform=cross,
            progress=progress,
            weights=blend.weights,
            batch_size=batch_size,
            rank_all=True,
            bar_position=bar_position,
        )
        run.series.append({"event": len(dataset.events), "weights": blend.weights()})
        if pipeline.reranker is not None:
            run.details["reranker"] = {
                "answered_lists": pipeline.reranker.answered,
                "fitted_at": pipeline.reranker.fitted_at,
                "fit_seconds": round(pipeline.reranker.fit_seconds, 2),
                "background": pipeline.reranker.background,
                "serve_after": pipeline.reranker.serve_after,
                "waited_seconds": round(pipeline.reranker.waited_seconds, 2),
            }
        return run
    base = BASELINES[name](catalog, config)
    # Baselines stay exact (batch 1): they are fast without batching, and batching would make
    # the co-visitation baseline's own per-person history lag (on MovieLens's bursts that cut
    # its NDCG@10 from 0.065 to 0.007).
    return replay(dataset, base, catalog, progress=progress, bar_position=bar_position)


def _replay_in_processes(
    source: ReplaySource,
    models: Sequence[str],
    config: PipelineConfig,
    progress: bool,
    batch_size: int,
    jobs: int,
) -> dict[str, Run]:
    """:func:`replay_model` for each of ``models``, ``jobs`` at a time in worker processes
    (spawned: a forked copy of a process running ONNX Runtime's threads can hang); the
    blends, the longest, first."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    order = sorted(models, key=lambda m: m not in BLENDS)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = {
            name: pool.submit(_replay_job, source, name, config, progress, batch_size, line)
            for line, name in enumerate(order)
        }
        done = {name: future.result() for name, future in futures.items()}
    return {name: done[name] for name in models}


def _replay_job(
    source: ReplaySource,
    name: str,
    config: PipelineConfig,
    progress: bool,
    batch_size: int,
    bar_position: int,
) -> Run:
    """A worker process's :func:`replay_model`, on one core: its BLAS, the reranker's
    OpenMP fits, the ranking head and the text search take one thread each (threads waiting
    for work on a busy core slowed the replays beside them)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    dataset, encoder, ranker, vectors = source.load(threads=1)
    # the text search too: its threads spin between calls, a core's worth beside another job
    catalog = build_catalog(dataset, vectors, search_threads=1)
    sequence = source.load_sequence(threads=1) if name in BLENDS else None
    args = (dataset, encoder, ranker, catalog, config, progress, batch_size, bar_position)
    return replay_model(name, *args, sequence=sequence)


def _against_baselines(
    blend: Run, runs: dict[str, Run], baselines: list[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per section, per baseline, where the blend's candidates or ranking fall short of what
    that baseline ranks in its top 10 (:func:`models.metrics.against_blend`)."""
    out = {}
    for section in ("prequential", "leave_last_out"):
        mine = blend.hits if section == "prequential" else blend.heldout
        per_baseline = {}
        for name in baselines:
            theirs = runs[name].hits if section == "prequential" else runs[name].heldout
            if (found := against_blend(mine, theirs)) is not None:
                per_baseline[name] = found
        if per_baseline:
            out[section] = per_baseline
    return out


def summarise(
    dataset: Dataset,
    runs: dict[str, Run],
    encoder: Encoder,
    ranker: Scorer | None,
    batch_size: int = 1,
    jobs: int = 1,
    sequence: SequenceScorer | None = None,
    config: PipelineConfig = DEFAULT_CONFIG,
) -> dict[str, Any]:
    notes = [*dataset.notes, _batch_note(batch_size)]
    changed = {
        f.name: getattr(config, f.name)
        for f in fields(config)
        if getattr(config, f.name) != getattr(DEFAULT_CONFIG, f.name)
    }
    if changed:
        notes.append(
            "pipeline settings changed from the defaults (--set): "
            + ", ".join(f"{k}={v}" for k, v in changed.items())
        )
    if jobs > 1:
        notes.append(
            f"models replayed {jobs} at a time, each in its own process: the same results, "
            "but each one's events/s is lower than alone (speed: --jobs 1)"
        )
    result: dict[str, Any] = {
        "dataset": dataset.name,
        "batch_size": batch_size,
        "jobs": jobs,
        "notes": notes,
        "platforms": dataset.platforms,
        "catalog_sizes": dataset.catalog_sizes(),
        "events": len(dataset.events),
        "evaluated_events": sum(dataset.evaluated),
        "heldout": len(dataset.heldout),
        "encoder": encoder.version,
        "ranker": ranker.version if ranker is not None else None,
        "sequence": sequence.version if sequence is not None else None,
        "pipeline_settings_changed": changed,
        # every model's rank bands, the Kafka run's too, split where the blend's reranker stops
        "models": {name: run.summary(config.rerank_top) for name, run in runs.items()},
        # each target's rank, for `streamrec compare` (write_report saves it beside the JSON)
        "targets": {
            name: {
                "prequential": Targets.of(run.hits),
                "leave_last_out": Targets.of(run.heldout),
                **({ALONE: Targets.of(run.alone)} if run.alone else {}),
            }
            for name, run in runs.items()
        },
    }
    baselines = [n for n in runs if n in BASELINES]
    checks: dict[str, Any] = {}
    if "blend" in runs and baselines:
        best = max(baselines, key=lambda n: runs[n].metrics.get("all", {}).get("ndcg@10", 0.0))
        b = runs["blend"].metrics.get("all", {}).get("ndcg@10", 0.0)
        o = runs[best].metrics.get("all", {}).get("ndcg@10", 0.0)
        ci = paired_lift(runs["blend"].hits, runs[best].hits, "ndcg@10")
        checks["blend_vs_best_baseline"] = {
            "best_baseline": best,
            "blend_ndcg@10": b,
            "baseline_ndcg@10": o,
            "lift": b / o - 1.0 if o > 0 else None,
            "lift_95ci": [ci["low"], ci["high"]],
            "target": 0.20,
        }
    if "blend" in runs and baselines:
        checks["blend_against_baselines"] = _against_baselines(runs["blend"], runs, baselines)
    if "blend" in runs and "blend-no-cross" in runs:
        cold_on = [h for h in runs["blend"].hits if h.cold]
        cold_off = [h for h in runs["blend-no-cross"].hits if h.cold]
        checks["cold_start"] = {
            **_cold_start_lift(cold_on, cold_off),
            "target": 0.25,
            "by_position": cold_by_position(cold_on, cold_off),
        }
        if "cross-history" in runs and "popularity" in runs:
            # the ceiling of what other platforms say about a newcomer, against popularity
            first = {
                name: result["models"][name]["cold_start"]["first_here"]
                for name in ("cross-history", "popularity")
            }
            checks["cold_start"]["first_here_other_platforms_alone"] = {
                "n": first["popularity"]["n"],
                "hr@10_cross_history": first["cross-history"]["hr@10"],
                "hr@10_popularity": first["popularity"]["hr@10"],
            }
    if "blend" in runs and runs["blend"].alone:
        # the same targets, the same blend at the same moment, each person's own history on
        # their other platforms hidden (as if they had not consented)
        probed = {h.index for h in runs["blend"].alone}
        cold_on = [h for h in runs["blend"].hits if h.index in probed]
        checks["cold_start_same_model"] = {
            **_cold_start_lift(cold_on, runs["blend"].alone),
            "by_position": cold_by_position(cold_on, runs["blend"].alone),
        }
    if "blend" in runs and runs["blend"].heldout_metrics:
        checks["leave_last_out_ndcg@10"] = {
            p: m["ndcg@10"] for p, m in runs["blend"].heldout_metrics.items()
        } | {"target": 0.10}
        heldout = runs["blend"].heldout
        checks["leave_last_out_ndcg@10_95ci"] = {
            p: list(mean_interval([h for h in heldout if p == "all" or h.platform == p]))
            for p in runs["blend"].heldout_metrics
        }
    if "blend" in runs:
        checks["events_per_s"] = {"blend": runs["blend"].events_per_s, "target": 5000}
    result["checks"] = checks
    return result


def _cold_start_lift(on: list[Hit], off: list[Hit]) -> dict[str, Any]:
    """HR@10 of the cold-start targets ranked with (``on``) and without (``off``) other
    platforms' history, the lift with its paired interval, and the same for the person's
    first positive on the platform and their 2nd-5th."""
    hr_on, hr_off = hit_rate(on), hit_rate(off)
    ci = paired_lift(on, off, "hr@10")
    split: dict[str, dict[str, Any]] = {}
    parts_off = cold_parts(off)
    for part, with_h in cold_parts(on).items():
        hr_with, hr_without = hit_rate(with_h), hit_rate(parts_off[part])
        split[part] = {
            "n": len(with_h),
            "hr@10_with_history": hr_with,
            "hr@10_without": hr_without,
            "lift": hr_with / hr_without - 1.0 if hr_without > 0 else None,
        }
    return {
        "n": len(on),
        "hr@10_with_history": hr_on,
        "hr@10_without": hr_off,
        "lift": (hr_on / hr_off - 1.0) if hr_off > 0 else None,
        "lift_95ci": [ci["low"], ci["high"]],
        **split,
    }


def _batch_note(batch_size: int) -> str:
    if batch_size == 1:
        return "replay: batch size 1 (every event ranked on the models as of just before it)"
    return (
        f"replay: blend batch size {batch_size} (baselines 1): each batch's targets "
        f"ranked in one call, then "
        f"learned in order; the person's session (recent and consumed items, interest) is "
        f"exact, what is learned from everyone (popularity, co-visitation, item-kNN, "
        f"transitions, people alike, River with the person's own factors, blend weights, "
        f"reranker) lags by at most {batch_size - 1} events"
    )


# --- the command line ---------------------------------------------------------------------


def load_dataset(kind: str, data: Path | None, split: str) -> Dataset:
    if kind == "movielens":
        return read_movielens(data or DEFAULT_PATHS["movielens"])
    if kind == "amazon":
        return read_amazon(data or DEFAULT_PATHS["amazon"], split)
    if data is None:
        raise DatasetError(
            "--dataset generic needs --data DIR holding events.{csv,jsonl} and items.{csv,jsonl}"
        )
    events = next(
        (data / f"events.{x}" for x in ("csv", "jsonl") if (data / f"events.{x}").is_file()),
        data / "events.csv",
    )
    items = next(
        (data / f"items.{x}" for x in ("csv", "jsonl") if (data / f"items.{x}").is_file()),
        data / "items.csv",
    )
    train = next(
        (data / f"train.{x}" for x in ("csv", "jsonl") if (data / f"train.{x}").is_file()), None
    )
    return read_generic(events, items, name=data.name or "generic", train_path=train)


#: Replays a dataset through Kafka end to end (``streams.replay.kafka_replay``); models/ knows
#: nothing of Kafka, so the command line of the streams package passes it in.
KafkaReplay = Callable[[Dataset, Path, bool], Run]

#: Comparisons that only say something with people on several platforms.
CROSS_PLATFORM_MODELS = ("cross-history", "blend-no-cross")


def default_models(dataset: Dataset) -> list[str]:
    """Every model; on a one-platform dataset, without :data:`CROSS_PLATFORM_MODELS` (there the
    blend without cross-platform history is the blend, and ``cross-history`` is popularity)."""
    models = list(ALL_MODELS)
    if len(dataset.platforms) > 1:
        return models
    return [m for m in models if m not in CROSS_PLATFORM_MODELS]


def main(argv: list[str] | None = None, kafka_replay: KafkaReplay | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="streamrec evaluate",
        description="Prequential replay of a dataset through the pipeline, with baselines.",
    )
    parser.add_argument(
        "--dataset", choices=("movielens", "amazon", "generic"), default="movielens"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default ../shared/data/<dataset>)"
    )
    parser.add_argument(
        "--split",
        default="valid_F2.txt",
        help="amazon: the evaluated split, a file name in --data or a path to a file elsewhere",
    )
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N events")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--cache", type=Path, default=Path(".cache/embeddings"))
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated subset to run (default: all; on a one-platform dataset, all but "
        "the cross-platform comparisons)",
    )
    parser.add_argument("--no-ranker", action="store_true", help="ignore artifacts/ranker")
    parser.add_argument(
        "--sequence-artifacts",
        type=Path,
        default=None,
        help="take the sequence model from this artifacts folder (default: --artifacts), e.g. "
        "one trained on the dataset's train split with `streamrec export sequence --dataset`",
    )
    parser.add_argument("--no-sequence", action="store_true", help="replay without it")
    parser.add_argument(
        "--through-kafka",
        action="store_true",
        help="also replay through the embedded broker and a worker, scoring the lists people "
        "were shown (model blend-kafka; slow: use --limit)",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a pipeline setting for this replay (models.pipeline.PipelineConfig, e.g. "
        "--set rerank_top=100 --set rerank_every=none; repeatable); the report lists them",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=_cores(),
        help="models replayed at once, each in its own process (default: one per core; "
        "the same results, each replay's events/s lower: measure speed with --jobs 1)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        help="events ranked per model call; global signals lag by at most this "
        "many events (1: exact per-event replay)",
    )
    args = parser.parse_args(argv)
    # what the arguments alone say is wrong, before minutes of loading and replaying
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.models is not None:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        if not models:
            parser.error("--models names no model")
        if unknown := set(models) - set(ALL_MODELS):
            parser.error(f"unknown models {sorted(unknown)} (models: {', '.join(ALL_MODELS)})")
    for flag, path in (("--out", args.out), ("--cache", args.cache)):
        if path.exists() and not path.is_dir():
            parser.error(f"{flag} {path} is a file, not a folder")
    if args.sequence_artifacts is not None and not args.sequence_artifacts.is_dir():
        parser.error(f"--sequence-artifacts {args.sequence_artifacts} is not a folder")
    _single_threaded_blas()
    from models.report import write_report

    source = ReplaySource(
        args.dataset,
        args.data,
        args.split,
        args.limit,
        args.artifacts,
        args.cache,
        use_ranker=not args.no_ranker,
        sequence_artifacts=args.sequence_artifacts,
        use_sequence=not args.no_sequence,
    )
    try:
        config = DEFAULT_CONFIG.with_overrides(args.set)
        if config.cross_platform != DEFAULT_CONFIG.cross_platform:
            parser.error("cross_platform is the model's: run blend-no-cross (--models)")
        # the head on one thread, as in the worker processes of --jobs: its floats then do
        # not depend on how many ran at once
        dataset, encoder, ranker, vectors = source.load(progress=not args.no_progress, threads=1)
        sequence = source.load_sequence(threads=1)
        if args.models is None:
            models = default_models(dataset)
            if skipped := [m for m in CROSS_PLATFORM_MODELS if m not in models]:
                dataset.notes.append(
                    f"one platform: {', '.join(skipped)} not run (they would repeat popularity "
                    "and the blend; name them in --models to run them)"
                )
        extra: dict[str, Run] = {}
        if args.through_kafka:
            if kafka_replay is None:
                parser.error("--through-kafka needs the streams package: run `streamrec evaluate`")
            extra["blend-kafka"] = kafka_replay(dataset, args.artifacts, not args.no_progress)
        result = evaluate(
            dataset,
            encoder,
            ranker,
            vectors=vectors,
            config=config,
            models=models,
            progress=not args.no_progress,
            batch_size=args.batch_size,
            extra_runs=extra,
            jobs=args.jobs,
            source=source,
            sequence=sequence,
        )
        out = write_report(result, args.out / dataset.name)
    except StreamrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.get("checks", {}), indent=2))
    print(f"report: {out}")
    return 0


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _single_threaded_blas() -> None:
    """One BLAS thread: ranking does one small matrix product per event, and OpenBLAS threads
    spinning against onnxruntime's on 2 cores made the replay 4x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1, user_api="blas")
