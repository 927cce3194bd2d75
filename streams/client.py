"""The client library for the system's users (kafka-python; no Faust needed).

* :class:`EventProducer` — app side: validates typed events and sends each to its platform's
  topic, keyed by user (the key decides the partition that holds the user's identity).
* :class:`RecommendationSubscriber` — service side: iterates recommendations as they arrive.

Examples
--------
>>> from streams.settings import Settings
>>> producer = EventProducer(Settings(platforms="shop"), connect=False)
>>> now = time.time()
>>> producer.validate({"event_id": "e1", "type": "view", "platform": "shop", "user": "u1",
...                    "item": "a", "ts": now}).item
'a'
>>> producer.validate({"event_id": "e1", "type": "view", "platform": "tv", "user": "u1",
...                    "item": "a", "ts": now})
Traceback (most recent call last):
...
models.errors.InvalidEventError: unknown platform 'tv' (known: ['shop'])
>>> producer.validate({"event_id": "e1", "type": "view", "platform": "shop", "user": "u1",
...                    "item": "a", "ts": now + 3600})
Traceback (most recent call last):
...
models.errors.InvalidEventError: timestamp ... is 3600s in the future
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from pydantic import BaseModel

from models.errors import BrokerError, InvalidEventError
from models.events import CatalogItem, Event, Recommendation
from streams.settings import Settings


class EventProducer:
    def __init__(self, settings: Settings, connect: bool = True, linger_ms: int = 5) -> None:
        self.settings = settings
        self._producer: KafkaProducer | None = None
        if connect:
            try:
                self._producer = KafkaProducer(
                    bootstrap_servers=settings.bootstrap_servers.split(","),
                    linger_ms=linger_ms,
                    **settings.kafka_client_kwargs(),
                )
            except KafkaError as e:
                raise BrokerError(f"cannot connect to {settings.bootstrap_servers}: {e}") from e

    def validate(self, event: Event | Mapping[str, Any]) -> Event:
        """Check ``event`` as the worker will: the same parser with the same settings (types,
        platform, text length, timestamp age); only whether the item is in the catalog is left
        to the worker."""
        return self.settings.parse_event(_json_bytes(event), now=time.time())

    def send(self, event: Event | Mapping[str, Any]) -> None:
        self.send_checked(self.validate(event))

    def send_checked(self, event: Event) -> None:
        """Send an event already checked (by :meth:`validate` or ``Settings.parse_event``)
        without checking it again: a file checked whole is then sent whole, even if the clock
        moves an old timestamp past ``max_past_age_s`` while it is being sent."""
        self.send_raw(
            self.settings.event_topic(event.platform),
            event.user.encode(),
            event.model_dump_json(exclude_none=True).encode(),
        )

    def validate_item(self, item: CatalogItem | Mapping[str, Any]) -> CatalogItem:
        """Check ``item`` as the worker will (see :meth:`validate`)."""
        return self.settings.parse_catalog_item(_json_bytes(item))

    def send_item(self, item: CatalogItem | Mapping[str, Any]) -> None:
        self.send_checked_item(self.validate_item(item))

    def send_checked_item(self, item: CatalogItem) -> None:
        """Send an item already checked (see :meth:`send_checked`)."""
        self.send_raw(
            self.settings.catalog_topic, item.key.encode(), item.model_dump_json().encode()
        )

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """No validation: for load tests and for proving bad input is dead-lettered."""
        if self._producer is None:
            raise BrokerError("this producer was created with connect=False")
        self._producer.send(topic, key=key, value=value)

    def flush(self) -> None:
        if self._producer is not None:
            self._producer.flush()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush()
            self._producer.close()


def _json_bytes(record: BaseModel | Mapping[str, Any]) -> bytes:
    if isinstance(record, BaseModel):
        return record.model_dump_json(exclude_none=True).encode()
    try:
        return json.dumps(record, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise InvalidEventError(f"not JSON-serialisable: {e}") from e


Record = TypeVar("Record")


def read_jsonl(
    lines: Iterable[str], parse: Callable[[bytes], Record]
) -> tuple[list[Record], list[str]]:
    """Parse JSON lines (blank ones skipped) with ``parse`` (bytes → record, or
    :class:`InvalidEventError`): the valid records, in order, and a ``"line N: reason"`` for
    each of the others, so a file can be checked before anything of it is sent.

    >>> settings = Settings(platforms="shop")
    >>> ok, bad = read_jsonl(['{"event_id": "e1", "type": "view", "platform": "shop", '
    ...                       '"user": "u", "item": "a", "ts": 1700000000}', "", "{oops"],
    ...                      lambda raw: settings.parse_event(raw, now=1700000001))
    >>> [e.event_id for e in ok], bad
    (['e1'], ['line 3: malformed JSON: Expecting property name enclosed in double quotes: ...'])
    """
    valid: list[Record] = []
    errors: list[str] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            valid.append(parse(line.encode()))
        except InvalidEventError as e:
            errors.append(f"line {n}: {e.reason}")
    return valid, errors


class RecommendationSubscriber:
    """Iterate recommendations (or any topic's raw records) as they arrive."""

    def __init__(
        self,
        settings: Settings,
        topic: str | None = None,
        from_beginning: bool = True,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        try:
            self._consumer = KafkaConsumer(
                topic or settings.recommendations_topic,
                bootstrap_servers=settings.bootstrap_servers.split(","),
                auto_offset_reset="earliest" if from_beginning else "latest",
                group_id=group_id,
                enable_auto_commit=group_id is not None,
                fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
                **settings.kafka_client_kwargs(),
            )
        except KafkaError as e:
            raise BrokerError(f"cannot connect to {settings.bootstrap_servers}: {e}") from e

    def records(self, timeout_s: float = 1.0) -> Iterator[Any]:
        """Raw consumer records; stops after ``timeout_s`` with nothing new."""
        while True:
            batch = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not batch:
                return
            for records in batch.values():
                yield from records

    def recommendations(self, timeout_s: float = 1.0) -> Iterator[Recommendation]:
        for record in self.records(timeout_s):
            yield Recommendation.model_validate(json.loads(record.value))

    def close(self) -> None:
        self._consumer.close()
