"""Typed records of everything that crosses a topic, and their validation.

These are plain pydantic models (no Kafka): app teams validate against the JSON Schemas
generated from them (``streamrec schemas``), and the worker parses raw bytes with
:func:`parse_event` so a bad message becomes an :class:`InvalidEventError` with a reason
instead of a crashed agent.

Examples
--------
>>> e = parse_event(b'{"event_id": "e1", "type": "view", "platform": "shop", "user": "u1",'
...                 b' "item": "boots", "ts": 1700000000}', platforms=("shop",), now=1700000001)
>>> e.type, e.item
(<EventType.VIEW: 'view'>, 'boots')
>>> parse_event(b'{"event_id": "e1", "type": "view"', platforms=("shop",), now=0)
Traceback (most recent call last):
...
models.errors.InvalidEventError: malformed JSON: Expecting ',' delimiter: line 1 column 34 (char 33)
"""

from __future__ import annotations

import enum
import json
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.errors import InvalidEventError

Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\s]+$")]
#: A platform names a topic (``events.<platform>``) and prefixes item keys (``platform:item``):
#: letters, digits, - and _ only, as the worker's settings require (with a ``:`` in it, item
#: ``x:y`` of ``shop`` and item ``y`` of ``shop:x`` were one key)
PlatformId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class EventType(enum.StrEnum):
    VIEW = "view"
    CLICK = "click"
    CONSUME = "consume"  # watched / listened / read to the end
    PURCHASE = "purchase"
    RATING = "rating"
    SEARCH = "search"
    IMPRESSION = "impression"  # what an app showed, with the rec_id it came from
    IDENTIFY = "identify"  # links a platform's user id to a person id


#: Events that name one item the person engaged with.
ITEM_EVENTS = frozenset(
    {EventType.VIEW, EventType.CLICK, EventType.CONSUME, EventType.PURCHASE, EventType.RATING}
)
#: Events that mean "this person has had this item": filtered out of their recommendations.
CONSUMED_EVENTS = frozenset({EventType.CONSUME, EventType.PURCHASE, EventType.RATING})


class Event(BaseModel):
    """One user event, as an app sends it to ``events.<platform>`` keyed by ``user``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id
    type: EventType
    platform: PlatformId
    user: Id = Field(description="the platform's own user id; also the message key")
    ts: float = Field(description="event time, Unix seconds", allow_inf_nan=False)
    item: Id | None = Field(default=None, description="for view/click/consume/purchase/rating")
    value: float | None = Field(default=None, description="rating value, 0-5", allow_inf_nan=False)
    query: str | None = Field(default=None, description="search text")
    items: list[Id] | None = Field(default=None, description="impression: the items shown")
    rec_id: Id | None = Field(default=None, description="the recommendation this came from")
    person: Id | None = Field(default=None, description="identify: the person id")
    consent: bool | None = Field(
        default=None, description="identify: may other platforms' history be used"
    )

    @model_validator(mode="after")
    def _fields_for_type(self) -> Event:
        t = self.type
        if t in ITEM_EVENTS and self.item is None:
            raise ValueError(f"a {t.value} event needs 'item'")
        if t is EventType.RATING and (self.value is None or not 0 <= self.value <= 5):
            raise ValueError("a rating event needs 'value' between 0 and 5")
        if t is EventType.SEARCH and not (self.query and self.query.strip()):
            raise ValueError("a search event needs a non-empty 'query'")
        if t is EventType.IMPRESSION and not (self.items and self.rec_id):
            raise ValueError("an impression event needs 'items' and 'rec_id'")
        if t is EventType.IDENTIFY and self.person is None:
            raise ValueError("an identify event needs 'person'")
        return self

    @property
    def is_positive(self) -> bool:
        """Did the person show interest in ``item``? (low ratings do not count)"""
        if self.type is EventType.RATING:
            return self.value is not None and self.value >= 3.5
        return self.type in ITEM_EVENTS


class CatalogItem(BaseModel):
    """An item on one platform, sent to the ``catalog`` topic keyed by ``platform:item``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: Id
    platform: PlatformId
    title: str = Field(min_length=1)
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)
    available: bool = True
    ts: float | None = Field(
        default=None, description="when it was added, Unix seconds", allow_inf_nan=False
    )

    @property
    def key(self) -> str:
        return item_key(self.platform, self.item)

    def text(self) -> str:
        """The text the encoder embeds."""
        parts = [self.title, self.description, " ".join(self.tags)]
        parts += [f"{k} {v}" for k, v in sorted(self.attributes.items()) if isinstance(v, str)]
        return ". ".join(p for p in parts if p)


class ScoredItem(BaseModel):
    item: str
    platform: str
    score: float = Field(
        description="what the list is ordered by: the reranker's probability once it has been"
        " fitted, until then the blend's score (the sum of the contributions)"
    )
    contributions: dict[str, float] = Field(description="each signal's term in the blend's score")


class Recommendation(BaseModel):
    """What the worker publishes to ``recommendations`` keyed by ``person``."""

    rec_id: str
    person: str
    user: str
    platform: str
    event_id: str = Field(description="the event that triggered this list")
    items: list[ScoredItem]
    history_platforms: list[str] = Field(description="platforms whose history shaped the list")
    model_versions: dict[str, str]
    event_ts: float
    published_ts: float


def item_key(platform: str, item: str) -> str:
    """Items are unique per platform; this is their id across platforms."""
    return f"{platform}:{item}"


def parse_event(
    raw: bytes | None,
    *,
    platforms: tuple[str, ...],
    now: float,
    max_text_chars: int = 2000,
    max_future_skew_s: float = 300.0,
    max_past_age_s: float = 10 * 365 * 24 * 3600.0,
) -> Event:
    """Bytes from an events topic → a valid :class:`Event`, or :class:`InvalidEventError`."""
    data = _load_json(raw)
    oversized = _oversized_text(data, max_text_chars)
    if oversized:
        raise InvalidEventError(f"field {oversized!r} is longer than {max_text_chars} characters")
    event = _validate(Event, raw, "event", platforms)
    if event.ts > now + max_future_skew_s:
        raise InvalidEventError(f"timestamp {event.ts} is {event.ts - now:.0f}s in the future")
    if event.ts < now - max_past_age_s:
        raise InvalidEventError(f"timestamp {event.ts} is older than {max_past_age_s:.0f}s")
    return event


def parse_catalog_item(
    raw: bytes | None, *, platforms: tuple[str, ...], max_text_chars: int = 2000
) -> CatalogItem:
    _load_json(raw)
    item = _validate(CatalogItem, raw, "catalog item", platforms)
    if len(item.text()) > 4 * max_text_chars:
        raise InvalidEventError(f"item text is longer than {4 * max_text_chars} characters")
    return item


_Record = TypeVar("_Record", Event, CatalogItem)


def _validate(
    model: type[_Record], raw: bytes | None, what: str, platforms: tuple[str, ...]
) -> _Record:
    try:
        # Strict JSON validation: "ts": "123" is a wrong type, not a number to coerce.
        record = model.model_validate_json(raw, strict=True)  # type: ignore[arg-type]
    except ValidationError as e:
        raise InvalidEventError(f"invalid {what}: {_summarise(e)}") from e
    if record.platform not in platforms:
        raise InvalidEventError(f"unknown platform {record.platform!r} (known: {list(platforms)})")
    return record


def _load_json(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise InvalidEventError("empty message (no value)")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidEventError(f"malformed JSON: {e}") from e
    except RecursionError as e:  # json's parser recurses per level of nesting
        raise InvalidEventError("malformed JSON: nested too deeply") from e
    if not isinstance(data, dict):
        raise InvalidEventError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _oversized_text(data: dict[str, Any], limit: int) -> str | None:
    for key, value in data.items():
        if isinstance(value, str) and len(value) > limit:
            return key
    return None


def _summarise(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every record, for app teams to validate against."""
    return {
        "event": Event.model_json_schema(),
        "catalog_item": CatalogItem.model_json_schema(),
        "recommendation": Recommendation.model_json_schema(),
    }
