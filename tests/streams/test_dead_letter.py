"""Every kind of bad input lands in the dead-letter topic; good events around it are served."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .conftest import WORLD, Harness

pytestmark = pytest.mark.integration

SHOP_ITEM = WORLD.by_theme[("shop", "jazz")][0]


def good(user: str, n: int) -> dict[str, Any]:
    return {
        "event_id": f"{user}-{n}",
        "type": "view",
        "platform": "shop",
        "user": user,
        "item": SHOP_ITEM,
        "ts": time.time(),
    }


def assert_dead_lettered(
    dead: list[Any], cases: dict[str, tuple[bytes, str]], topic: str
) -> dict[bytes, Any]:
    """Each case's original bytes are in the dead-letter topic with its reason and source;
    returns the records by value."""
    by_value = {r.value: r for r in dead}
    for name, (raw, reason_part) in cases.items():
        assert raw in by_value, f"{name}: original bytes not in the dead-letter topic"
        headers = {k: v.decode() for k, v in by_value[raw].headers}
        assert reason_part in headers["reason"], (name, headers["reason"])
        assert headers["source.topic"] == topic
        assert int(headers["source.offset"]) >= 0
    return by_value


def test_each_kind_of_bad_input_is_dead_lettered(harness: Harness) -> None:
    now = time.time()
    base = good("mallory", 0)
    cases: dict[str, tuple[bytes, str]] = {
        "malformed JSON": (b'{"event_id": "x", "type": ', "malformed JSON"),
        "not an object": (b"[1, 2, 3]", "expected a JSON object"),
        "not UTF-8": (b"\xff\xfe\x00", "malformed JSON"),
        "missing field": (
            json.dumps({k: v for k, v in base.items() if k != "item"}).encode(),
            "needs 'item'",
        ),
        "extra field": (json.dumps({**base, "colour": "red"}).encode(), "Extra inputs"),
        "wrong type": (json.dumps({**base, "ts": "yesterday"}).encode(), "ts"),
        "unknown type": (json.dumps({**base, "type": "teleport"}).encode(), "type"),
        "unknown platform": (json.dumps({**base, "platform": "tv"}).encode(), "unknown platform"),
        "unknown item": (json.dumps({**base, "item": "no-such-item"}).encode(), "unknown item"),
        "oversized text": (
            json.dumps({**base, "type": "search", "item": None, "query": "x" * 50_000}).encode(),
            "longer than",
        ),
        "far future": (json.dumps({**base, "ts": now + 86_400 * 30}).encode(), "in the future"),
    }
    topic = harness.settings.event_topic("shop")
    harness.event("shop", "mallory", "view", item=SHOP_ITEM)  # a good one before
    for raw, _ in cases.values():
        harness.producer.send_raw(topic, b"mallory", raw)
    # key must be the user id: a message keyed otherwise cannot find the user's identity.
    wrong_key = json.dumps(good("mallory", 99)).encode()
    harness.producer.send_raw(topic, b"someone-else", wrong_key)
    after = harness.event("shop", "mallory", "click", item=SHOP_ITEM)  # and a good one after
    harness.producer.flush()

    expected = len(cases) + 1
    dead = harness.wait_for_dead(lambda got: len(got) >= expected)
    assert len(dead) == expected, [dict(r.headers).get("reason") for r in dead]
    by_value = assert_dead_lettered(dead, cases, topic)
    for raw, _ in cases.values():
        assert by_value[raw].key == b"mallory"
    assert "message key must be the user id" in dict(by_value[wrong_key].headers)["reason"].decode()
    # The worker is still serving, in order, around the bad input.
    harness.wait_for([after["event_id"]])


def test_bad_person_topic_messages_are_dead_lettered_and_the_worker_goes_on(
    harness: Harness,
) -> None:
    """The worker's own topic, written to by something else: each of these stopped the agent
    (a list as a person, a handoff to nobody, JSON nested too deeply) or failed its whole
    batch (an item the catalog does not have) before it was checked."""
    unknown_item = {**good("trudy", 0), "item": "no-such-item"}
    cases: dict[str, tuple[bytes, str]] = {
        "person not a string": (
            b'{"kind":"consent","person":[],"consent":true,"ts":1}',
            "person is list",
        ),
        "handoff to nobody": (b'{"kind":"handoff","person":"shop:trudy","to":null}', "to is"),
        "nested too deeply": (b"[" * 100_000 + b"]" * 100_000, "recursion"),
        "unknown item": (
            json.dumps({"kind": "event", "person": "shop:trudy", "event": unknown_item}).encode(),
            "unknown item",
        ),
    }
    topic = harness.settings.person_topic
    for raw, _ in cases.values():
        harness.producer.send_raw(topic, b"shop:trudy", raw)
    after = harness.event("shop", "trudy", "view", item=SHOP_ITEM)
    harness.producer.flush()
    dead = harness.wait_for_dead(lambda got: sum(r.value in dict(cases.values()) for r in got) >= 4)
    assert_dead_lettered(dead, cases, topic)
    harness.wait_for([after["event_id"]])
