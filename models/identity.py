"""Identity resolution: which person does a platform's user belong to.

Unlinked users are their own person, ``<platform>:<user>``. An ``identify`` event links a
platform user to a person id; the state built up under the old key is handed off to the person
so their history joins across platforms. Pure: the identity map is any mutable mapping (the
worker passes a RocksDB-backed Faust table).

Examples
--------
>>> from models.events import Event
>>> ids: dict[str, str] = {}
>>> view = Event(event_id="e1", type="view", platform="shop", user="u1", ts=1.0, item="a")
>>> route(view, ids)
[PersonEvent(person='shop:u1', event=...)]
>>> link = Event(event_id="e2", type="identify", platform="shop", user="u1", ts=2.0, person="p9")
>>> [type(m).__name__ for m in route(link, ids)], ids
(['Handoff', 'Consent'], {'shop:u1': 'p9'})
>>> route(view, ids)[0].person
'p9'

A user already linked who identifies as someone else is re-linked; p9 keeps what is p9's:

>>> switch = Event(event_id="e3", type="identify", platform="shop", user="u1", ts=3.0, person="q4")
>>> [type(m).__name__ for m in route(switch, ids)], ids
(['Consent'], {'shop:u1': 'q4'})
"""

from __future__ import annotations

from collections.abc import MutableMapping

from models.events import Event, EventType
from models.pipeline import Consent, Handoff, PersonEvent, PersonMessage


def anonymous_person(platform: str, user: str) -> str:
    return f"{platform}:{user}"


def route(event: Event, identities: MutableMapping[str, str]) -> list[PersonMessage]:
    """The messages this event becomes on the person-keyed topic."""
    alias = anonymous_person(event.platform, event.user)
    current = identities.get(alias, alias)
    if event.type is not EventType.IDENTIFY:
        return [PersonEvent(person=current, event=event)]
    assert event.person is not None  # validated by Event
    messages: list[PersonMessage] = []
    if event.person != current:
        identities[alias] = event.person
        if current == alias:
            messages.append(Handoff(person=current, to=event.person))
        # else the user was linked to another person (an account switched on a shared device):
        # only the link moves. That person's state holds their other platforms' history too,
        # and handing it over would give it to someone else and strand their other aliases.
    consent = True if event.consent is None else event.consent
    messages.append(Consent(person=event.person, consent=consent, ts=event.ts))
    return messages
