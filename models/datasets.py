"""Evaluation datasets: a generic event/item format and readers for two public data sets.

Every reader returns a :class:`Dataset`: the catalog (:class:`~models.events.CatalogItem`), the
stream of :class:`~models.events.Event` in replay order, which of those events are *evaluated*
(the others are only learned from), and optional held-out targets that are ranked after the
stream (leave-last-out). ``Event.user`` is the person id: in these data sets one id names the
same person on every platform.

Generic format
--------------
Two files, each CSV (with a header) or JSON Lines (``.jsonl``; one object per line), and an
optional third:

* events: ``time`` (Unix seconds, float), ``platform``, ``person``, ``item``, ``type`` (an
  :class:`~models.events.EventType` with an item: view, click, consume, purchase, rating;
  default ``consume``), ``value`` (the rating for ``type=rating``, else empty). The stream is
  sorted by ``time`` (stable: ties keep file order). Every event is evaluated.
* items: ``item``, ``platform``, ``text`` (what the encoder embeds).
* train (optional): events in the same format that are learned from only, never evaluated
  (other people's, or earlier, history: what Amazon's train split is); merged into the stream
  by ``time``, before the evaluated events of the same time. Exports with ``--dataset`` train
  on these alone.

MovieLens latest-small (``movielens``)
    One platform ``movies``. Every rating is an event at its timestamp (one person's ratings
    within the same second in a fixed hashed order: the file lists them by movie id, an order
    the models could learn); ratings >= 4 are the positives that are evaluated (the pipeline
    itself learns from ratings >= 3.5, as in the stream). Item text = title, genres and the
    distinct user tags of the movie.

Amazon Arts ↔ Office (``amazon``)
    Platforms ``arts`` (ids < 18639) and ``office``. There are no timestamps, so users are
    interleaved round-robin by position: step ``t`` of every user's history happens at synthetic
    time ``t`` days (``t * 86400`` s), train users before evaluated users within a step. Train
    users (``train_F2.txt``) are learned from only, including both their last items (Arts
    first); the evaluated split's (default ``valid_F2.txt``) histories are evaluated
    prequentially, and their two last items (the next Arts and the next Office item) are held
    out and ranked after the stream. Any other split beside them (``*_F2.txt``: evaluating
    ``test_F2.txt``, the ``valid_F2.txt`` users) is learned from too, its histories only, after
    the train users within a step. Within a user the file's order is kept, and it is not a
    time order across the two domains: every history starts with Arts, 76 % of train users'
    (valid: 80 %) are exactly their Arts and Office items alternated (``A O A O … A A A`` once
    the shorter runs out) and 96 % have their first Office item right after their first Arts
    item. So a platform's first positives come after one to a few positives on the other
    (``streamrec evaluate``'s cold-start table by place shows how many).

Examples
--------
>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "events.csv").write_text(
...     "time,platform,person,item,type,value\\n"
...     "2,shop,p1,boots,purchase,\\n1,shop,p1,socks,rating,4.5\\n")
>>> _ = (root / "items.csv").write_text("item,platform,text\\nboots,shop,hiking boots\\n"
...                                     "socks,shop,wool socks\\n")
>>> ds = read_generic(root / "events.csv", root / "items.csv")
>>> [(e.item, e.type.value) for e in ds.events]
[('socks', 'rating'), ('boots', 'purchase')]
>>> ds.platforms
['shop']
>>> read_generic(root / "missing.csv", root / "items.csv")
Traceback (most recent call last):
...
models.errors.DatasetError: events file ... does not exist
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from models.errors import DatasetError
from models.events import ITEM_EVENTS, CatalogItem, Event, EventType, item_key

#: Defaults, relative to the project root (the data are never copied into the repository).
DEFAULT_PATHS = {
    "movielens": Path("../shared/data/movielens-latest-small"),
    "amazon": Path("../shared/data/amazon-arts-office"),
}
MOVIELENS_POSITIVE = 4.0
AMAZON_ARTS_LIMIT = 18639  # idAfter < this is an Arts item
AMAZON_STEP_S = 86400.0


@dataclass
class Dataset:
    name: str
    items: list[CatalogItem]
    events: list[Event]  # the stream, in replay order
    evaluated: list[bool]  # per event: is it a target of the prequential evaluation?
    heldout: list[Event] = field(default_factory=list)  # ranked after the stream
    notes: list[str] = field(default_factory=list)  # how the data became a stream

    @property
    def platforms(self) -> list[str]:
        return sorted({it.platform for it in self.items})

    def catalog_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for it in self.items:
            sizes[it.platform] = sizes.get(it.platform, 0) + 1
        return sizes

    def limit(self, n: int | None) -> Dataset:
        """The first ``n`` events of the stream (held-out targets kept only when n covers all)."""
        if n is None or n >= len(self.events):
            return self
        return Dataset(self.name, self.items, self.events[:n], self.evaluated[:n], [],
                       [*self.notes, f"limited to the first {n} events; no held-out ranking"])


def check_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(
            f"{what} data not found at {path} (pass --data PATH; the data live outside the "
            f"repository, by default under ../shared/data)"
        )
    return path


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{what} file {path} does not exist")
    return path


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a CSV (with header) or JSON Lines file, with 1-based line numbers (a CSV
    row's last line: a quoted text may span several)."""
    try:
        # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the header
        with path.open(newline="", encoding="utf-8-sig") as f:
            if path.suffix in (".jsonl", ".ndjson", ".json"):
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise DatasetError(f"{path}:{n}: malformed JSON: {e}") from e
                        if not isinstance(row, dict):
                            raise DatasetError(f"{path}:{n}: expected a JSON object")
                        yield n, row
            else:
                reader = csv.DictReader(f)
                if reader.fieldnames:  # "time, platform": the names, not their spaces
                    reader.fieldnames = [name.strip() for name in reader.fieldnames]
                for row in reader:
                    if None in row:  # DictReader files the fields past the header under None
                        raise DatasetError(
                            f"{path}:{reader.line_num}: {len(row) - 1 + len(row[None])} fields "
                            f"but the header has {len(row) - 1} (quote texts with commas)"
                        )
                    yield reader.line_num, row
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read {path}: {e}") from e


def _field(path: Path, n: int, row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if value is None or str(value).strip() == "":
        raise DatasetError(f"{path}:{n}: missing {name!r}")
    return str(value).strip()


def read_generic(
    events_path: Path, items_path: Path, name: str = "generic", train_path: Path | None = None
) -> Dataset:
    """Read the generic format (see the module docstring)."""
    _need(Path(events_path), "events")
    _need(Path(items_path), "items")
    items: dict[str, CatalogItem] = {}
    lines: dict[str, int] = {}
    for n, row in _rows(Path(items_path)):
        try:
            it = CatalogItem(item=_field(items_path, n, row, "item"),
                             platform=_field(items_path, n, row, "platform"),
                             title=_field(items_path, n, row, "text"))
        except ValidationError as e:
            raise DatasetError(f"{items_path}:{n}: invalid item: {e.errors()[0]['msg']}") from e
        if it.key in items:
            raise DatasetError(f"{items_path}:{n}: item {it.item!r} of {it.platform!r} is "
                               f"listed twice (first on line {lines[it.key]})")
        items[it.key], lines[it.key] = it, n
    if not items:
        raise DatasetError(f"{items_path} holds no items")
    # (time, 0: learned only / 1: evaluated, line, event): the learn-only ones first on ties
    rows = [(ts, 1, n, e) for ts, n, e in _generic_events(Path(events_path), items, "e")]
    if not rows:
        raise DatasetError(f"{events_path} holds no events")
    notes = [f"generic format: {events_path}, {items_path}"]
    if train_path is not None:
        _need(Path(train_path), "train")
        rows += [(ts, 0, n, e) for ts, n, e in _generic_events(Path(train_path), items, "t")]
        notes.append(f"learned from only: {train_path}")
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return Dataset(name, list(items.values()), [r[3] for r in rows], [r[1] == 1 for r in rows],
                   notes=notes)


def _generic_events(
    path: Path, items: dict[str, CatalogItem], prefix: str
) -> list[tuple[float, int, Event]]:
    """(time, line, event) of a generic events file, in file order."""
    out: list[tuple[float, int, Event]] = []
    for n, row in _rows(path):
        try:
            column = "time"
            ts = float(_field(path, n, row, "time"))
            column = "type"
            etype = EventType(str(row.get("type") or "consume").strip())
            column = "value"
            raw_value = row.get("value")
            value = None if raw_value in (None, "") else float(raw_value)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{path}:{n}: {column!r}: {e}") from e
        if etype not in ITEM_EVENTS:
            raise DatasetError(f"{path}:{n}: type {etype.value!r} names no item")
        platform = _field(path, n, row, "platform")
        item = _field(path, n, row, "item")
        if item_key(platform, item) not in items:
            raise DatasetError(f"{path}:{n}: item {item!r} of {platform!r} not in items")
        try:
            event = Event(event_id=f"{prefix}{n}", type=etype, platform=platform,
                          user=_field(path, n, row, "person"), ts=ts, item=item, value=value)
        except ValidationError as e:
            raise DatasetError(f"{path}:{n}: invalid event: {e.errors()[0]['msg']}") from e
        out.append((ts, n, event))
    return out


def read_movielens(root: Path) -> Dataset:
    """MovieLens latest-small: ``ratings.csv``, ``movies.csv``, ``tags.csv``."""
    root = check_dir(Path(root), "MovieLens")
    tags: dict[str, dict[str, None]] = {}
    tags_path = root / "tags.csv"
    if tags_path.is_file():
        for n, row in _rows(tags_path):
            try:
                tags.setdefault(row["movieId"], {})[row["tag"].strip().lower()] = None
            except (KeyError, AttributeError) as e:
                raise DatasetError(f"{tags_path}:{n}: bad tag row: missing {e}") from e
    items: list[CatalogItem] = []
    known: set[str] = set()
    for n, row in _rows(_need(root / "movies.csv", "MovieLens movies")):
        try:
            movie = row["movieId"]
            if movie in known:
                raise DatasetError(f"{root / 'movies.csv'}:{n}: movie {movie} listed twice")
            genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
            items.append(CatalogItem(item=movie, platform="movies", title=row["title"].strip(),
                                     tags=[*genres, *tags.get(movie, {})]))
        except (KeyError, AttributeError, ValidationError) as e:
            raise DatasetError(f"{root / 'movies.csv'}:{n}: bad movie row: {e}") from e
        known.add(movie)
    rows: list[tuple[float, bytes, int, str, str, float]] = []
    for n, row in _rows(_need(root / "ratings.csv", "MovieLens ratings")):
        try:
            rows.append((float(row["timestamp"]), _tie_order(row["userId"], row["movieId"]), n,
                         row["userId"], row["movieId"], float(row["rating"])))
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{root / 'ratings.csv'}:{n}: bad rating row: {e}") from e
        ts, rating = rows[-1][0], rows[-1][5]
        if not (math.isfinite(ts) and 0.0 < rating <= 5.0):
            raise DatasetError(
                f"{root / 'ratings.csv'}:{n}: bad rating row: timestamp {ts}, rating {rating} "
                "(MovieLens rates 0.5-5 stars)"
            )
        if row["movieId"] not in known:
            raise DatasetError(f"{root / 'ratings.csv'}:{n}: unknown movie {row['movieId']}")
    rows.sort()
    events = [
        Event.model_construct(event_id=f"r{n}", type=EventType.RATING, platform="movies",
                              user=f"u{user}", ts=ts, item=movie, value=value)
        for ts, _, n, user, movie, value in rows
    ]
    evaluated = [r[5] >= MOVIELENS_POSITIVE for r in rows]
    return Dataset("movielens", items, events, evaluated, notes=[
        "MovieLens latest-small (F. M. Harper and J. A. Konstan, ACM TiiS 2015)",
        "one platform 'movies'; all ratings replayed by timestamp; ratings >= 4 evaluated",
        "item text: title, genres, user tags (tags are all users' tags, incl. later ones)",
    ])


def _tie_order(user: str, movie: str) -> bytes:
    """Orders one person's ratings that share a timestamp (16 % of MovieLens' consecutive
    pairs). ``ratings.csv`` lists them by movie id, an order the models could learn ("the
    next item has a higher id"); a hash of the pair is arbitrary but fixed."""
    return hashlib.blake2b(f"{user}:{movie}".encode(), digest_size=8).digest()


def _amazon_items(root: Path) -> list[CatalogItem]:
    items = []
    for name in ("item_listA_F.csv", "item_listO_AA_F.csv"):
        path = _need(root / name, "Amazon items")
        for n, row in _rows(path):
            try:
                idx = int(row["idAfter"])
                platform = "arts" if idx < AMAZON_ARTS_LIMIT else "office"
                items.append(CatalogItem(
                    item=str(idx), platform=platform,
                    title=(row["item_title"] or "").strip() or f"item {idx}",
                    description=(row["item_attribute"] or "").strip()))
            except (KeyError, TypeError, ValueError, ValidationError) as e:
                raise DatasetError(f"{path}:{n}: bad item row: {e}") from e
    return items


def _amazon_users(path: Path, known: set[int]) -> dict[str, tuple[list[int], list[int]]]:
    """user → (history, [last items]) from a ``*_F2.txt`` file (two lines per user, one per
    held-out item); every item must be ``known``."""
    users: dict[str, tuple[list[int], list[int]]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    for n, line in enumerate(lines, start=1):
        parts = line.rstrip("\t").split("\t")
        if not line.strip():
            continue
        try:
            uid, length = parts[0], int(parts[1])
            seq = [int(p.split("|", 1)[0]) for p in parts[2:]]
        except (IndexError, ValueError) as e:
            raise DatasetError(f"{path}:{n}: malformed line: {e}") from e
        if len(seq) != length + 1:
            raise DatasetError(f"{path}:{n}: length {length} but {len(seq)} items")
        if unknown := [i for i in seq if i not in known]:
            raise DatasetError(f"{path}:{n}: item {unknown[0]} is in neither item list")
        history, last = seq[:-1], seq[-1]
        if uid in users:
            if len(users[uid][1]) == 2:
                raise DatasetError(f"{path}:{n}: user {uid} listed a third time")
            if users[uid][0] != history:
                raise DatasetError(f"{path}:{n}: user {uid}'s two lines differ before the end")
            users[uid][1].append(last)
        else:
            users[uid] = (history, [last])
    if not users:
        raise DatasetError(f"{path} holds no users")
    return users


def read_amazon(
    root: Path,
    split: str = "valid_F2.txt",
    train: str = "train_F2.txt",
    others: Sequence[str] | None = None,
) -> Dataset:
    """Amazon Arts ↔ Office, interleaved round-robin by position (see the module docstring).
    ``others``: further splits whose histories are learned from (default: every other
    ``*_F2.txt`` beside ``train``)."""
    root = check_dir(Path(root), "Amazon Arts-Office")
    items = _amazon_items(root)
    arts = AMAZON_ARTS_LIMIT

    def platform(i: int) -> str:
        return "arts" if i < arts else "office"

    known = {int(it.item) for it in items}
    # a bare name is a file of the dataset's folder; a path (one elsewhere) is taken as given
    split_path = root / split if len(Path(split).parts) == 1 else Path(split)
    train_path = root / train
    train_users = _amazon_users(_need(train_path, "Amazon train split"), known)
    eval_users = _amazon_users(_need(split_path, f"Amazon split {split!r}"), known)
    if others is None:
        skip = {split_path.resolve(), train_path.resolve()}
        others = [p.name for p in sorted(root.glob("*_F2.txt")) if p.resolve() not in skip]
    other_users = {
        name: _amazon_users(_need(root / name, f"Amazon split {name!r}"), known)
        for name in others
    }
    # evaluating the train split itself: its users are ranked, so none of it is learned first
    evaluating_train = split_path.resolve() == train_path.resolve()
    learned = other_users if evaluating_train else {train: train_users, **other_users}
    for name, users in learned.items():
        if shared := set(users) & set(eval_users):
            raise DatasetError(f"{split} and {name} share users, e.g. {sorted(shared)[:3]}")
    # (person, sequence, evaluated?) streams, train first: within a step, train users go first,
    # then the other splits' (their histories only: their last items are theirs to hold out).
    seqs: list[tuple[str, list[int], bool]] = []
    for uid, (history, last) in train_users.items():
        if evaluating_train:
            break
        ordered = sorted(last, key=lambda i: platform(i) != "arts")
        seqs.append((f"u{uid}", history + ordered, False))
    for users in other_users.values():
        seqs.extend((f"u{uid}", history, False) for uid, (history, _) in users.items())
    heldout: list[Event] = []
    for uid, (history, last) in eval_users.items():
        seqs.append((f"u{uid}", history, True))
        for i in last:
            heldout.append(Event.model_construct(
                event_id=f"h{uid}-{i}", type=EventType.PURCHASE, platform=platform(i),
                user=f"u{uid}", ts=len(history) * AMAZON_STEP_S, item=str(i)))
    events: list[Event] = []
    evaluated: list[bool] = []
    longest = max(len(s) for _, s, _ in seqs)
    for t in range(longest):
        for person, seq, is_eval in seqs:
            if t < len(seq):
                events.append(Event.model_construct(
                    event_id=f"a{person}-{t}", type=EventType.PURCHASE, platform=platform(seq[t]),
                    user=person, ts=t * AMAZON_STEP_S, item=str(seq[t])))
                evaluated.append(is_eval)
    return Dataset("amazon", items, events, evaluated, heldout, notes=[
        "Amazon Review Data 2018 (J. Ni, J. Li, J. McAuley, EMNLP 2019), Arts/Office as "
        "preprocessed by TingJShen/URLLM",
        "learned from: "
        + (
            ", ".join(
                f"{name} ({len(users)} users, "
                + ("histories)" if name in other_users else "histories + both last items)")
                for name, users in learned.items()
            )
            or "no other split"
        )
        + f"; evaluated: {split} ({len(eval_users)} users)",
        "no timestamps: round-robin by position, step t of every user at t days; within a step "
        "train users first",
        "every event is a purchase (positive, consumed); held-out last Arts and Office items are "
        "ranked after the whole stream (leave-last-out)",
    ])
