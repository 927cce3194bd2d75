"""A worker per test module on the session's broker, with its own uniquely named topics."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from models.events import Recommendation
from models.simulator import World
from streams.broker import EmbeddedBroker
from streams.client import EventProducer, RecommendationSubscriber
from streams.settings import Settings
from streams.stack import LocalStack

WORLD = World(seed=3, items_per_theme=6)


def unique_settings(artifacts: Path) -> Settings:
    tag = f"t{uuid.uuid4().hex[:8]}"
    return Settings(
        app_id=f"streamrec-{tag}",
        platforms=("shop", "video", "music", "news"),
        event_topic_prefix=f"{tag}.events.",
        catalog_topic=f"{tag}.catalog",
        person_topic=f"{tag}.person-events",
        recommendations_topic=f"{tag}.recommendations",
        dead_letter_topic=f"{tag}.dead-letter",
        artifacts_dir=artifacts,
    )


class Harness:
    """Produce like an app, subscribe like a downstream service."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.settings = stack.settings
        self.producer = EventProducer(self.settings, linger_ms=0)
        self.recs = RecommendationSubscriber(self.settings)
        self.dead = RecommendationSubscriber(self.settings, topic=self.settings.dead_letter_topic)
        self.received: dict[str, Recommendation] = {}
        self.dead_records: list[Any] = []
        self._n = 0

    def load_catalog(self, items: Sequence[dict[str, Any]] | None = None) -> None:
        """Send ``items`` (default: the whole world's) to the catalog topic and wait until
        the worker has indexed them."""
        items = WORLD.items if items is None else items
        for item in items:
            self.producer.send_item(item)
        self.producer.flush()
        assert self.stack.worker is not None
        self.stack.worker.wait_for_catalog(len(items))

    def event(self, platform: str, user: str, type_: str = "view", **fields: Any) -> dict[str, Any]:
        self._n += 1
        body = {
            "event_id": f"{user}-{self._n}-{uuid.uuid4().hex[:6]}",
            "type": type_,
            "platform": platform,
            "user": user,
            "ts": time.time(),
            **fields,
        }
        self.producer.send(body)
        self.producer.flush()
        return body

    def wait_for(self, event_ids: list[str], timeout_s: float = 30.0) -> dict[str, Recommendation]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not set(event_ids) <= self.received.keys():
            for rec in self.recs.recommendations(timeout_s=0.3):
                self.received[rec.event_id] = rec
        missing = set(event_ids) - self.received.keys()
        assert not missing, f"no recommendation for {sorted(missing)} within {timeout_s}s"
        return {e: self.received[e] for e in event_ids}

    def wait_for_dead(
        self, predicate: Callable[[list[Any]], bool], timeout_s: float = 30.0
    ) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not predicate(self.dead_records):
            self.dead_records.extend(self.dead.records(timeout_s=0.3))
        return self.dead_records

    def close(self) -> None:
        self.producer.close()
        self.recs.close()
        self.dead.close()


@pytest.fixture(scope="module")
def harness(
    broker: EmbeddedBroker, serving_artifacts: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    settings = unique_settings(serving_artifacts)
    with LocalStack(settings, workdir=tmp_path_factory.mktemp("stack"), broker=broker) as stack:
        h = Harness(stack)
        h.load_catalog()
        yield h
        h.close()
    _delete_topics(broker.bootstrap, settings)


def _delete_topics(bootstrap: str, settings: Settings) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        ours = [
            t
            for t in admin.list_topics()
            if t in settings.all_topics or t.startswith(settings.app_id)
        ]
        with contextlib.suppress(Exception):  # cleanup is best effort: the broker is ephemeral
            admin.delete_topics(ours)
    finally:
        admin.close()
