from __future__ import annotations

import numpy as np

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
