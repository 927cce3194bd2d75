"""Wire formats of the internal topics and tables (JSON; vectors as base64 float32)."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import numpy as np

from models.errors import InvalidEventError
from models.events import CatalogItem, Event
from models.pipeline import Consent, Handoff, Merge, PersonEvent, PersonMessage
from models.session import SessionState, json_typed


def encode_person_message(msg: PersonMessage) -> bytes:
    body: dict[str, Any]
    if isinstance(msg, PersonEvent):
        body = {"kind": "event", "event": msg.event.model_dump(mode="json", exclude_none=True)}
    elif isinstance(msg, Handoff):
        body = {"kind": "handoff", "to": msg.to}
    elif isinstance(msg, Merge):
        body = {"kind": "merge", "state": msg.state.to_dict()}
    else:
        body = {"kind": "consent", "consent": msg.consent, "ts": msg.ts}
    body["person"] = msg.person
    return json.dumps(body, separators=(",", ":")).encode()


def decode_person_message(raw: bytes | None) -> PersonMessage:
    """The worker's own records, yet checked like input: a person that is not a string or a
    consent that is not a boolean would otherwise fail later, outside the dead-letter path."""
    if raw is None:
        raise InvalidEventError("empty person-topic message")
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise TypeError(f"expected a JSON object, got {type(body).__name__}")
        person, kind = _typed(body, "person", str), body["kind"]
        if kind == "event":
            return PersonEvent(person=person, event=Event.model_validate(body["event"]))
        if kind == "handoff":
            return Handoff(person=person, to=_typed(body, "to", str))
        if kind == "merge":
            return Merge(person=person, state=SessionState.from_dict(body["state"]))
        if kind == "consent":
            ts = float(_typed(body, "ts", (int, float)))
            if not math.isfinite(ts):
                raise ValueError(f"ts is {ts}")
            return Consent(person=person, consent=_typed(body, "consent", bool), ts=ts)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise InvalidEventError(f"undecodable person-topic message: {e}") from e
    raise InvalidEventError(f"unknown person-topic message kind {kind!r}")


def _typed(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """``body[key]`` if it has the JSON type ``kind`` (a boolean is not a number here)."""
    return json_typed(key, body[key], kind)


def encode_catalog_entry(item: CatalogItem, vector: np.ndarray) -> bytes:
    vec = base64.b64encode(np.ascontiguousarray(vector, np.float32).tobytes()).decode()
    return json.dumps({"item": item.model_dump(mode="json"), "vector": vec}).encode()


def decode_catalog_entry(raw: bytes) -> tuple[CatalogItem, np.ndarray]:
    try:
        body = json.loads(raw)
        vector = np.frombuffer(base64.b64decode(body["vector"]), dtype=np.float32).copy()
        return CatalogItem.model_validate(body["item"]), vector
    except (ValueError, KeyError, TypeError, RecursionError) as e:  # binascii.Error: ValueError
        raise InvalidEventError(f"undecodable catalog entry: {e}") from e


class SessionStore(MutableMapping[str, SessionState]):
    """A bytes-valued table seen as a mapping of person → :class:`SessionState`.

    ``before_access(person)`` runs before every table access: the worker uses it to point the
    table at the partition of the message that belongs to that person.
    """

    def __init__(
        self,
        table: MutableMapping[str, bytes],
        before_access: Callable[[str], None] = lambda person: None,
    ) -> None:
        self._table = table
        self.before_access = before_access

    def __getitem__(self, person: str) -> SessionState:
        self.before_access(person)
        return SessionState.from_bytes(self._table[person])

    def __setitem__(self, person: str, state: SessionState) -> None:
        self.before_access(person)
        self._table[person] = state.to_bytes()

    def __delitem__(self, person: str) -> None:
        self.before_access(person)
        del self._table[person]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)
