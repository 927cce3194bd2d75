"""Per-person session state: what the worker keeps in the RocksDB-backed ``sessions`` table.

Interest vectors are exponentially decayed sums of the embeddings of items a person engaged
with, one per platform; the state is plain data with a compact byte encoding (vectors as
base64 float32) so a changelog record stays a few KB.

Examples
--------
>>> import numpy as np
>>> s = SessionState(person="p1")
>>> s.observe("shop", "shop:boots", np.array([1.0, 0.0], dtype=np.float32), ts=10.0,
...           consumed=True, half_life_s=3600.0)
>>> s.recent["shop"], "shop:boots" in s.consumed
(['shop:boots'], True)
>>> SessionState.from_bytes(s.to_bytes()) == s
True

What a person consumed is never recommended to them again: the last :data:`MAX_CONSUMED`
items exactly, in order, and the ones before them in a Bloom filter of fixed size.

>>> for i in range(MAX_CONSUMED + 1):
...     _ = s.add_consumed(f"video:{i}")
>>> s.consumed[0], "video:0" in s.exclusion(), len(s.exclusion())
('video:1', True, 502)
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from models.bloom import BloomFilter
from models.errors import InvalidEventError

MAX_RECENT = 50
#: consumed items kept in order (older ones: only in :attr:`SessionState.consumed_earlier`)
MAX_CONSUMED = 500
#: event ids remembered per person, to drop redeliveries (at-least-once delivery)
SEEN_EVENTS = 200
#: The encoded state's fields and the JSON types they must have (:meth:`SessionState.from_dict`)
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "person": str,
    "consent": bool,
    "consent_ts": (int, float),
    "recent": dict,
    "interest": dict,
    "interest_ts": dict,
    "consumed": list,
    "seen_event_ids": list,
    "last_rec": dict,
    "aliases": list,
}


class Excluded(Protocol):
    """What a list must leave out: a frozenset, or an :class:`Exclusion` when a Bloom filter
    holds part of it. ``len`` says how many keys it excludes."""

    def __contains__(self, key: object, /) -> bool: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Exclusion:
    """Exact keys plus a Bloom filter of older ones (only heavy users have one: a frozenset
    is quicker to ask)."""

    keys: frozenset[str]
    earlier: BloomFilter

    def __contains__(self, key: object) -> bool:
        return key in self.keys or key in self.earlier

    def __len__(self) -> int:
        return len(self.keys) + len(self.earlier)


@dataclass
class LastRecommendation:
    """The list last shown to this person on a platform: feedback is attributed to it."""

    rec_id: str
    platform: str
    items: list[str]
    ts: float


@dataclass
class SessionState:
    person: str
    consent: bool = True  # may other platforms' history be used for this person
    consent_ts: float = 0.0  # event time of the identify event that set ``consent``
    recent: dict[str, list[str]] = field(default_factory=dict)  # platform → newest last
    interest: dict[str, np.ndarray] = field(default_factory=dict)  # platform → decayed sum
    interest_ts: dict[str, float] = field(default_factory=dict)  # platform → last update
    consumed: list[str] = field(default_factory=list)  # the last MAX_CONSUMED, newest last
    consumed_earlier: BloomFilter | None = None  # the ones before them
    seen_event_ids: list[str] = field(default_factory=list)  # at-least-once: drop replays
    last_rec: dict[str, LastRecommendation] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)  # person keys merged into this one
    # positive events folded in per platform: what a list may count of them depends on consent
    events_on: dict[str, int] = field(default_factory=dict)

    def observe(
        self,
        platform: str,
        key: str,
        vector: np.ndarray,
        ts: float,
        *,
        consumed: bool,
        half_life_s: float,
        weight: float = 1.0,
    ) -> None:
        """Fold one positive interaction into the state.

        A late event (older than the platform's last update: delivered out of order) weighs
        what it would have weighed by now, and does not become the person's newest item, the
        context of their next list.
        """
        recent = self.recent.setdefault(platform, [])
        last = self.interest_ts.get(platform, ts)
        if ts >= last or not recent:
            if key in recent:
                recent.remove(key)
            recent.append(key)
        elif key not in recent:
            recent.insert(len(recent) - 1, key)
        del recent[:-MAX_RECENT]
        if consumed:
            self.add_consumed(key)
        previous = self.interest.get(platform)
        if previous is None:
            self.interest[platform] = weight * vector.astype(np.float32)
        elif ts >= last:
            decay = np.float32(_decay(ts - last, half_life_s))
            self.interest[platform] = decay * previous + np.float32(weight) * vector
        else:
            late = np.float32(weight * _decay(last - ts, half_life_s))
            self.interest[platform] = previous + late * vector
        self.interest_ts[platform] = max(ts, last)
        self.events_on[platform] = self.events_on.get(platform, 0) + 1

    def copy(self) -> SessionState:
        """A copy that shares nothing this class changes in place (vectors and the Bloom
        filter are replaced, never changed, so they are shared)."""
        return replace(
            self,
            recent={p: list(keys) for p, keys in self.recent.items()},
            interest=dict(self.interest),
            interest_ts=dict(self.interest_ts),
            consumed=list(self.consumed),
            seen_event_ids=list(self.seen_event_ids),
            last_rec=dict(self.last_rec),
            aliases=list(self.aliases),
            events_on=dict(self.events_on),
        )

    def has_consumed(self, key: str) -> bool:
        """Has the person consumed ``key`` (liked or not)? Rarely a wrong "yes" for a heavy
        user (:mod:`models.bloom`), never a wrong "no"."""
        return key in self.consumed or (
            self.consumed_earlier is not None and key in self.consumed_earlier
        )

    def add_consumed(self, key: str) -> bool:
        """Note that the person consumed ``key``; False if they had already."""
        if self.has_consumed(key):
            return False
        self.consumed.append(key)
        self._spill()
        return True

    def exclusion(self, *also: str) -> Excluded:
        """Everything this person consumed, and ``also``: what their lists must leave out."""
        keys = frozenset((*self.consumed, *also))
        if self.consumed_earlier is None:
            return keys
        return Exclusion(keys, self.consumed_earlier)

    def _spill(self) -> None:
        """Move the oldest consumed items past :data:`MAX_CONSUMED` into the Bloom filter."""
        if len(self.consumed) <= MAX_CONSUMED:
            return
        earlier = self.consumed_earlier or BloomFilter()
        for key in self.consumed[:-MAX_CONSUMED]:
            earlier = earlier.with_key(key)
        self.consumed_earlier = earlier
        del self.consumed[:-MAX_CONSUMED]

    def remember_event(self, event_id: str, window: int = SEEN_EVENTS) -> bool:
        """False if this event was already applied (a redelivery after a crash)."""
        if event_id in self.seen_event_ids:
            return False
        self.seen_event_ids.append(event_id)
        del self.seen_event_ids[:-window]
        return True

    def merge(self, other: SessionState, *, half_life_s: float) -> None:
        """Absorb the state of a person key that was linked to this person; each side's
        interest is decayed to the later of their last updates before they are added."""
        for platform, items in other.recent.items():
            mine = self.recent.setdefault(platform, [])
            mine[:0] = [k for k in items if k not in mine]
            del mine[:-MAX_RECENT]
        for platform, vec in other.interest.items():
            their_ts = other.interest_ts.get(platform, 0.0)
            if platform in self.interest:
                my_ts = self.interest_ts.get(platform, 0.0)
                now = max(my_ts, their_ts)
                own = np.float32(_decay(now - my_ts, half_life_s)) * self.interest[platform]
                aged = np.float32(_decay(now - their_ts, half_life_s)) * vec
                self.interest[platform] = own + aged
                self.interest_ts[platform] = now
            else:
                self.interest[platform] = vec.copy()
                self.interest_ts[platform] = their_ts
        if other.consumed_earlier is not None:
            self.consumed_earlier = (
                other.consumed_earlier
                if self.consumed_earlier is None
                else self.consumed_earlier.union(other.consumed_earlier)
            )
        theirs = [k for k in other.consumed if not self.has_consumed(k)]
        self.consumed = theirs + self.consumed
        self._spill()
        # the alias's events may be redelivered after the link: they must still be known
        seen = set(self.seen_event_ids)
        self.seen_event_ids = (
            [e for e in other.seen_event_ids if e not in seen] + self.seen_event_ids
        )[-SEEN_EVENTS:]
        self.aliases = sorted({*self.aliases, other.person, *other.aliases} - {self.person})
        for platform, count in other.events_on.items():
            self.events_on[platform] = self.events_on.get(platform, 0) + count

    def to_dict(self) -> dict[str, Any]:
        return {
            "person": self.person,
            "consent": self.consent,
            "consent_ts": self.consent_ts,
            "recent": self.recent,
            "interest": {p: _encode_vec(v) for p, v in self.interest.items()},
            "interest_ts": self.interest_ts,
            "consumed": self.consumed,
            "consumed_earlier": (
                None if self.consumed_earlier is None else self.consumed_earlier.to_dict()
            ),
            "seen_event_ids": self.seen_event_ids,
            "last_rec": {p: vars(r) for p, r in self.last_rec.items()},
            "aliases": self.aliases,
            "events_on": self.events_on,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SessionState:
        try:
            for name, kind in _FIELD_TYPES.items():
                json_typed(name, d[name], kind)
            # and what they hold: a [1] in ``consumed`` would break every later event of them
            for name in ("consumed", "seen_event_ids", "aliases"):
                _each(name, d[name], str)
            for platform, keys in d["recent"].items():
                _each(f"recent[{platform!r}]", json_typed(f"recent[{platform!r}]", keys, list), str)
            # absent from states stored before they existed
            events_on = json_typed("events_on", d.get("events_on", {}), dict)
            _each_value("events_on", events_on, int)
            earlier = d.get("consumed_earlier")
            if earlier is not None:
                earlier = BloomFilter.from_dict(json_typed("consumed_earlier", earlier, dict))
            _each_value("interest_ts", d["interest_ts"], (int, float))
            for platform, rec in d["last_rec"].items():
                where = f"last_rec[{platform!r}]"
                json_typed(where, rec, dict)
                json_typed(f"{where}.rec_id", rec.get("rec_id"), str)
                json_typed(f"{where}.platform", rec.get("platform"), str)
                _each(f"{where}.items", json_typed(f"{where}.items", rec.get("items"), list), str)
                json_typed(f"{where}.ts", rec.get("ts"), (int, float))
            return cls(
                person=d["person"],
                consent=d["consent"],
                consent_ts=d["consent_ts"],
                recent=d["recent"],
                interest={p: _decode_vec(v) for p, v in d["interest"].items()},
                interest_ts=d["interest_ts"],
                consumed=d["consumed"],
                consumed_earlier=earlier,
                seen_event_ids=d["seen_event_ids"],
                last_rec={p: LastRecommendation(**r) for p, r in d["last_rec"].items()},
                aliases=d["aliases"],
                events_on=events_on,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InvalidEventError(f"corrupt session state: {e}") from e

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionState:
        return cls.from_dict(json.loads(raw))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionState) and self.to_dict() == other.to_dict()


def json_typed(name: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    """``value`` if it has the JSON type ``kind``, else a TypeError naming ``name``.

    JSON's ``true`` decodes to a bool, which Python counts as an int: it is not a number here.

    >>> json_typed("events", 3, int)
    3
    >>> json_typed("events", True, int)
    Traceback (most recent call last):
    TypeError: events is bool: True
    """
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError(f"{name} is {type(value).__name__}: {value!r:.40}")
    return value


def _each(name: str, values: list[Any], kind: type | tuple[type, ...]) -> None:
    for i, value in enumerate(values):
        json_typed(f"{name}[{i}]", value, kind)


def _each_value(name: str, values: dict[str, Any], kind: type | tuple[type, ...]) -> None:
    for key, value in values.items():
        json_typed(f"{name}[{key!r}]", value, kind)


def _decay(dt: float, half_life_s: float) -> float:
    """What a weight ``dt`` seconds old is worth now."""
    return float(0.5 ** (max(0.0, dt) / half_life_s))


def _encode_vec(v: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(v, dtype=np.float32).tobytes()).decode()


def _decode_vec(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.float32).copy()
