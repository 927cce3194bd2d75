from __future__ import annotations

import json

import pytest

from models.errors import InvalidEventError
from models.events import Event, json_schemas, parse_catalog_item, parse_event

PLATFORMS = ("shop", "video")
GOOD = {"event_id": "e1", "type": "view", "platform": "shop", "user": "u", "item": "a", "ts": 100.0}


def parse(body: object) -> Event:
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return parse_event(raw, platforms=PLATFORMS, now=100.0, max_text_chars=100)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "malformed JSON"),
        (b"\xff", "malformed JSON"),
        (None, "empty message"),
        ([1], "expected a JSON object"),
        ({**GOOD, "extra": 1}, "Extra inputs"),
        ({k: v for k, v in GOOD.items() if k != "user"}, "user: Field required"),
        ({**GOOD, "ts": "100"}, "ts: Input should be a valid number"),
        ({**GOOD, "type": "rating"}, "needs 'value'"),
        ({**GOOD, "type": "rating", "value": 9}, "between 0 and 5"),
        ({**GOOD, "type": "search", "item": None}, "needs a non-empty 'query'"),
        ({**GOOD, "type": "impression"}, "needs 'items' and 'rec_id'"),
        ({**GOOD, "type": "identify"}, "needs 'person'"),
        ({**GOOD, "platform": "tv"}, "unknown platform 'tv'"),
        ({**GOOD, "query": "x" * 101}, "longer than 100"),
        ({**GOOD, "ts": 100.0 + 3600}, "in the future"),
        ({**GOOD, "ts": -1e12}, "older than"),
        ({**GOOD, "user": "has space"}, "user"),
        # Python's json writes and reads NaN: it would poison every decayed count it touches
        ({**GOOD, "ts": float("nan")}, "ts: Input should be a finite number"),
        ({**GOOD, "type": "rating", "value": float("nan")}, "value: Input should be a finite"),
        (b'{"event_id":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
)
def test_bad_events_raise_with_a_reason(body: object, reason: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        parse(body)
    assert reason in info.value.reason


def test_good_event_and_positivity() -> None:
    assert parse(GOOD).is_positive
    assert not parse({**GOOD, "type": "rating", "value": 2}).is_positive
    assert parse({**GOOD, "type": "rating", "value": 4.5}).is_positive
    assert not parse({**GOOD, "type": "search", "item": None, "query": "boots"}).is_positive


def test_catalog_item_with_a_timestamp_that_is_not_a_number_is_refused() -> None:
    item = {"item": "a", "platform": "shop", "title": "Boots", "ts": float("nan")}
    with pytest.raises(InvalidEventError, match="ts: Input should be a finite number"):
        parse_catalog_item(json.dumps(item).encode(), platforms=PLATFORMS)


def test_catalog_item_text_and_validation() -> None:
    raw = json.dumps(
        {
            "item": "a",
            "platform": "shop",
            "title": "Boots",
            "description": "warm",
            "tags": ["hiking"],
            "attributes": {"brand": "acme", "size": 42},
        }
    ).encode()
    item = parse_catalog_item(raw, platforms=PLATFORMS)
    assert item.key == "shop:a" and item.text() == "Boots. warm. hiking. brand acme"
    with pytest.raises(InvalidEventError, match="title"):
        parse_catalog_item(b'{"item": "a", "platform": "shop"}', platforms=PLATFORMS)


def test_json_schemas_are_published_for_every_record() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"event", "catalog_item", "recommendation"}
    assert "event_id" in schemas["event"]["required"]
    assert schemas["event"]["additionalProperties"] is False
