from __future__ import annotations

import json

import numpy as np
import pytest

from models.errors import InvalidEventError
from models.events import CatalogItem, Event, EventType
from models.pipeline import Consent, Handoff, Merge, PersonEvent, PersonMessage
from models.session import SessionState
from streams.codecs import (
    SessionStore,
    decode_catalog_entry,
    decode_person_message,
    encode_catalog_entry,
    encode_person_message,
)
from streams.settings import Settings


def test_person_messages_round_trip() -> None:
    state = SessionState(person="shop:u")
    state.observe("shop", "shop:a", np.ones(3, np.float32), ts=1.0, consumed=True, half_life_s=1.0)
    event = Event(
        event_id="e", type=EventType.SEARCH, platform="shop", user="u", ts=1.0, query="boots"
    )
    messages: list[PersonMessage] = [
        PersonEvent("p", event),
        Handoff("shop:u", "p"),
        Merge("p", state),
        Consent("p", False, 5.0),
    ]
    for msg in messages:
        assert decode_person_message(encode_person_message(msg)) == msg


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"kind":"consent","person":[],"consent":true,"ts":1}', "person is list"),
        (b'{"kind":"consent","person":"p","consent":"false","ts":1}', "consent is str"),
        (b'{"kind":"consent","person":"p","consent":false,"ts":NaN}', "ts is nan"),
        (b'{"kind":"consent","person":"p","consent":false,"ts":true}', "ts is bool"),
        (b'{"kind":"handoff","person":"p","to":null}', "to is NoneType"),
        (b'["kind"]', "expected a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "recursion"),
        (b'{"kind":"hello","person":"p"}', "unknown person-topic message kind"),
    ],
)
def test_undecodable_person_messages_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    """Each of these used to decode, or to raise outside the dead-letter path, and then stop
    the agent on a later line (a list as a dict key, ``None.encode()``)."""
    with pytest.raises(InvalidEventError, match=reason):
        decode_person_message(raw)


def test_a_merge_of_a_state_with_fields_of_the_wrong_type_is_refused() -> None:
    state = SessionState(person="p").to_dict()
    for field, wrong in (
        ("interest", []),
        ("consent", "yes"),
        ("events_on", {"shop": 1.5}),
        ("person", 3),
        ("events_on", {"shop": True}),
        ("events_on", [1]),
        ("consent_ts", False),
        ("consumed", [1]),
        ("seen_event_ids", [None]),
        ("aliases", [["a"]]),
        ("recent", {"shop": [None]}),
        ("recent", {"shop": "abc"}),
        ("interest_ts", {"shop": True}),
        ("last_rec", {"shop": {"rec_id": "r", "platform": "shop", "items": [3], "ts": 1.0}}),
        ("last_rec", {"shop": "r"}),
    ):
        body = {"kind": "merge", "person": "p", "state": {**state, field: wrong}}
        reason = rf"corrupt session state: {field}(\[.*\])?(\.\w+)? is"
        with pytest.raises(InvalidEventError, match=reason):
            decode_person_message(json.dumps(body).encode())


def test_catalog_entry_round_trip() -> None:
    item = CatalogItem(item="a", platform="shop", title="Boots")
    back, vec = decode_catalog_entry(encode_catalog_entry(item, np.arange(4, dtype=np.float32)))
    assert back == item and vec.tolist() == [0, 1, 2, 3]


def test_session_store_encodes_and_calls_back() -> None:
    seen: list[str] = []
    table: dict[str, bytes] = {}
    store = SessionStore(table, seen.append)
    store["p"] = SessionState(person="p")
    assert isinstance(table["p"], bytes) and store["p"].person == "p" and seen == ["p", "p"]


def test_settings_platforms_are_configuration() -> None:
    s = Settings.model_validate({"platforms": "shop,podcasts"})
    assert s.event_topics == ("events.shop", "events.podcasts")
    assert "events.podcasts" in s.all_topics


@pytest.mark.parametrize(
    "raw", [b"{", b'{"item": {}, "vector": "AAAA"}', b'{"vector": "!!"}', b"[]"]
)
def test_an_undecodable_catalog_entry_raises_invalid_event_error(raw: bytes) -> None:
    with pytest.raises(InvalidEventError, match="undecodable catalog entry"):
        decode_catalog_entry(raw)
